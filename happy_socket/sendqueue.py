"""engine.io's per-socket send queue, with a cap on the bytes waiting for a slow reader.

A socket that stops reading (or reads slower than it is sent to) makes engine.io's writer wait
on the transport, and everything emitted to it meanwhile waits in this queue. Past
``limit`` bytes the queue *overflows*: it drops what it holds, refuses what comes after, ends
the writer (a ``None`` item, engine.io's own end-of-queue mark) and reports itself, so the
socket is closed. The client reconnects and catches up over HTTP, as after any disconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .lean import LeanQueue

DEFAULT_LIMIT = 8 * 1024 * 1024


def packet_bytes(item: Any) -> int:
    """The size of an engine.io packet's payload (what the queue holds for it)."""
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, str | bytes) else 0


class SendQueue(LeanQueue[Any]):
    """A :class:`LeanQueue` that holds at most ``limit`` payload bytes."""

    __slots__ = ("bytes", "limit", "on_overflow", "overflowed")

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        on_overflow: Callable[[SendQueue], None] | None = None,
    ) -> None:
        super().__init__()
        self.limit = limit
        self.on_overflow = on_overflow
        self.bytes = 0
        self.overflowed = False

    def put_nowait(self, item: Any) -> None:
        """Queue ``item``, or overflow when it would take the queue past ``limit``."""
        if self.overflowed:
            return  # the socket is being closed: nothing more is kept for it
        if item is None:
            super().put_nowait(item)
            return
        size = packet_bytes(item)
        if self.bytes + size > self.limit and not self.empty():
            self._overflow()
            return
        self.bytes += size
        super().put_nowait(item)

    def get_nowait(self) -> Any:
        """Remove and return the first item."""
        item = super().get_nowait()
        self.bytes -= packet_bytes(item)
        return item

    def _overflow(self) -> None:
        self.overflowed = True
        while not self.empty():  # free what the slow reader would never read in time
            super().get_nowait()
            self.task_done()
        self.bytes = 0
        super().put_nowait(None)  # the writer ends when it next looks
        if self.on_overflow is not None:
            self.on_overflow(self)
