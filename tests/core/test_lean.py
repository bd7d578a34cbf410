"""LeanQueue and LeanEvent behave like asyncio's (the part engine.io and uvicorn use), smaller."""

from __future__ import annotations

import asyncio
import random
import tracemalloc

import pytest

from happy_socket.lean import LeanEvent, LeanQueue


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


def allocated(factory: type) -> int:
    """Bytes 1,000 fresh instances of ``factory`` hold."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = [factory() for _ in range(1000)]
        size = tracemalloc.get_traced_memory()[0] - before
        del keep
        return size
    finally:
        tracemalloc.stop()


def test_idle_lean_primitives_are_a_fraction_of_asyncio_ones() -> None:
    assert allocated(LeanQueue) * 10 < allocated(asyncio.Queue)
    assert allocated(LeanEvent) * 4 < allocated(asyncio.Event)


async def test_event_set_wakes_every_waiter_and_clear_resets() -> None:
    event = LeanEvent()
    assert not event.is_set()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert event.is_set() and await event.wait() is True  # set: returns at once
    event.clear()
    assert not event.is_set()
    late = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await asyncio.wait_for(late, 1) is True


async def test_event_cancelled_waiter_is_forgotten() -> None:
    event = LeanEvent()
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    event.set()  # no waiter left to wake, nothing raises
    assert await event.wait() is True
