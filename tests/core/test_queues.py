"""LeanQueue behaves like asyncio.Queue (the part engine.io and uvicorn use) in less memory."""

from __future__ import annotations

import asyncio
import random
import tracemalloc

import pytest

from happy_socket.queues import LeanQueue


async def test_fifo_and_empty() -> None:
    q: LeanQueue[int] = LeanQueue()
    assert q.empty() and q.qsize() == 0 and not q.full()
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    for i in range(5):
        await q.put(i)
    assert q.qsize() == 5 and not q.empty()
    assert [q.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert q.empty()


async def test_matches_asyncio_queue_over_random_operations() -> None:
    rng = random.Random(7)
    lean: LeanQueue[int] = LeanQueue()
    ref: asyncio.Queue[int] = asyncio.Queue()
    for step in range(20_000):
        if rng.random() < 0.55 or ref.empty():
            lean.put_nowait(step)
            ref.put_nowait(step)
        else:
            assert lean.get_nowait() == ref.get_nowait()
        assert lean.qsize() == ref.qsize()
    while not ref.empty():
        assert lean.get_nowait() == ref.get_nowait()
    assert lean.empty()


async def test_getters_wait_and_are_served_in_order() -> None:
    q: LeanQueue[str] = LeanQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    q.put_nowait("a")
    q.put_nowait("b")
    assert await first == "a"
    assert await second == "b"


async def test_a_cancelled_waiter_loses_no_item() -> None:
    q: LeanQueue[str] = LeanQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("x")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs: `second` must get the item
    assert await asyncio.wait_for(second, 1) == "x"
    assert first.cancelled()
    assert q.empty()


async def test_cancelled_waiter_is_forgotten() -> None:
    q: LeanQueue[int] = LeanQueue()
    waiter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    q.put_nowait(1)
    assert await asyncio.wait_for(q.get(), 1) == 1


async def test_join_waits_for_task_done() -> None:
    q: LeanQueue[int] = LeanQueue()
    await q.join()  # nothing put: returns at once
    q.put_nowait(1)
    q.put_nowait(2)
    joined = asyncio.ensure_future(q.join())
    q.get_nowait()
    q.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    q.get_nowait()
    q.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        q.task_done()


def test_bounded_is_refused() -> None:
    with pytest.raises(ValueError):
        LeanQueue(10)


def test_an_idle_queue_is_a_fraction_of_asyncio_queue() -> None:
    def allocated(factory: type) -> int:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            keep = [factory() for _ in range(1000)]
            size = tracemalloc.get_traced_memory()[0] - before
            del keep
            return size
        finally:
            tracemalloc.stop()

    lean, stock = allocated(LeanQueue), allocated(asyncio.Queue)
    assert lean * 10 < stock, (lean, stock)
