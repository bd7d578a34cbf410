"""Small-footprint asyncio primitives for what every connection keeps for its whole life.

Every websocket holds two queues and an event as long as it is open: uvicorn's receive queue
and ``writable`` event, engine.io's send queue. ``asyncio.Queue`` allocates four deques (items,
getters, putters and the ``join`` event's waiters), about 3 KB even when idle, and
``asyncio.Event`` one (~800 bytes); at 10,000 idle connections that is 70 MB.
:class:`LeanQueue` keeps items in a list that is emptied in place and creates getter and
``join`` state only when someone waits (about 100 bytes idle); :class:`LeanEvent` creates its
waiter list on the first wait.

They implement the part of the asyncio API that engine.io and uvicorn use. ``LeanQueue``:
``put``, ``put_nowait``, ``get``, ``get_nowait``, ``task_done``, ``join``, ``qsize``,
``empty``, ``full``; unbounded (``maxsize`` must be 0); raises ``asyncio.QueueEmpty``; and
``watch(callback)``, called on every put (a consumer without a task of its own).
``LeanEvent``: ``set``, ``clear``, ``is_set``, ``wait``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")

_COMPACT_AT = 64  # drop consumed slots once this many sit before the head


class LeanQueue(Generic[T]):
    """Unbounded FIFO queue for one event loop, API-compatible with ``asyncio.Queue``."""

    __slots__ = ("_finished", "_getters", "_head", "_items", "_on_put", "_unfinished")

    maxsize = 0

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize:
            raise ValueError("LeanQueue is unbounded (maxsize must be 0)")
        self._items: list[T | None] = []
        self._head = 0
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None
        self._on_put: Callable[[], None] | None = None

    def qsize(self) -> int:
        """Number of items in the queue."""
        return len(self._items) - self._head

    def empty(self) -> bool:
        """True when the queue holds no item."""
        return len(self._items) == self._head

    def full(self) -> bool:
        """Always False: the queue is unbounded."""
        return False

    def put_nowait(self, item: T) -> None:
        """Append ``item`` and wake one waiting getter (and the :meth:`watch` callback)."""
        self._items.append(item)
        self._unfinished += 1
        if self._getters:
            self._wake_next()
        if self._on_put is not None:
            self._on_put()

    def watch(self, on_put: Callable[[], None] | None) -> None:
        """Call ``on_put()`` after each item put from now on (None: stop): a consumer that
        needs no task while the queue is empty (:class:`happy_socket.transport.Writer`)."""
        self._on_put = on_put

    async def put(self, item: T) -> None:
        """Append ``item`` (never waits: the queue is unbounded)."""
        self.put_nowait(item)

    def get_nowait(self) -> T:
        """Remove and return the first item; raise ``asyncio.QueueEmpty`` when empty."""
        items, head = self._items, self._head
        if head == len(items):
            raise asyncio.QueueEmpty
        item = cast(T, items[head])
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= _COMPACT_AT and head * 2 >= len(items):
            del items[:head]
            head = 0
        else:
            items[head - 1] = None  # drop the reference now
        self._head = head
        return item

    async def get(self) -> T:
        """Remove and return the first item, waiting until there is one."""
        while self.empty():
            if self._getters is None:
                self._getters = []
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                elif not self.empty():  # woken and cancelled at once: pass the wake-up on
                    self._wake_next()
                raise
        return self.get_nowait()

    def _wake_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    def task_done(self) -> None:
        """Mark one item as processed (for :meth:`join`)."""
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        """Wait until every item put has been marked done."""
        if self._unfinished == 0:
            return
        if self._finished is None or self._finished.is_set():
            self._finished = asyncio.Event()
        await self._finished.wait()

    def __repr__(self) -> str:
        return f"<LeanQueue size={self.qsize()} unfinished={self._unfinished}>"


class LeanEvent:
    """``asyncio.Event`` without a deque until someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        """True once :meth:`set` was called and :meth:`clear` was not since."""
        return self._value

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        if not self._value:
            self._value = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        """Reset the flag."""
        self._value = False

    async def wait(self) -> bool:
        """Return True at once if the flag is set, else once :meth:`set` is called."""
        if self._value:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)

    def __repr__(self) -> str:
        return f"<LeanEvent {'set' if self._value else 'unset'}>"
