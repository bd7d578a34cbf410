"""engine.io's per-socket send queue, with a cap on the bytes waiting for a slow reader.

A socket that stops reading (or reads slower than it is sent to) makes engine.io's writer wait
on the transport, and everything emitted to it meanwhile waits in this queue. Past
``limit`` bytes the queue *overflows*: it drops what it holds, refuses what comes after, ends
the writer (a ``None`` item, engine.io's own end-of-queue mark) and reports itself, so the
socket is closed. The client reconnects and catches up over HTTP, as after any disconnect.

The queues of one account's sockets, and those of the whole process, also share a
:class:`ByteBudget` each (:class:`QueueBudgets`): when a queue would take a budget past its
limit, the largest queue of that budget overflows first (usually the one reader that stopped),
so many slow sockets cannot add up to more than the budget either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .lean import LeanQueue

DEFAULT_LIMIT = 8 * 1024 * 1024
DEFAULT_PER_USER = 64 * 1024 * 1024
DEFAULT_TOTAL = 1024 * 1024 * 1024


def packet_bytes(item: Any) -> int:
    """The size of an engine.io packet's payload (what the queue holds for it)."""
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, str | bytes) else 0


class SendQueue(LeanQueue[Any]):
    """A :class:`LeanQueue` that holds at most ``limit`` payload bytes."""

    __slots__ = ("budgets", "bytes", "limit", "on_overflow", "overflowed")

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
        self.budgets: tuple[ByteBudget, ...] = ()  # shared with other queues (QueueBudgets)

    def share(self, budgets: tuple[ByteBudget, ...]) -> None:
        """Count this queue's bytes in ``budgets`` too (they are shared with other queues)."""
        self.unshare()
        self.budgets = budgets
        for budget in budgets:
            budget.members.add(self)
            budget.used += self.bytes

    def unshare(self) -> None:
        """Stop counting this queue in its shared budgets."""
        for budget in self.budgets:
            budget.members.discard(self)
            budget.used -= self.bytes
        self.budgets = ()

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
        if self.budgets and not self._admit(size):
            self._overflow()
            return
        for budget in self.budgets:
            budget.used += size
        self.bytes += size
        super().put_nowait(item)

    def _admit(self, size: int) -> bool:
        """Make room for ``size`` bytes in every shared budget by overflowing its largest
        other queues; False when this queue is the largest one in the way."""
        for budget in self.budgets:
            while budget.used + size > budget.limit:
                largest = max(budget.members, key=_queued, default=None)
                if largest is None or largest is self or largest.bytes == 0:
                    return False
                largest._overflow()
        return True

    def get_nowait(self) -> Any:
        """Remove and return the first item."""
        item = super().get_nowait()
        size = packet_bytes(item)
        self.bytes -= size
        for budget in self.budgets:
            budget.used -= size
        return item

    def _overflow(self) -> None:
        self.unshare()
        self.overflowed = True
        while not self.empty():  # free what the slow reader would never read in time
            super().get_nowait()
            self.task_done()
        self.bytes = 0
        super().put_nowait(None)  # the writer ends when it next looks
        if self.on_overflow is not None:
            self.on_overflow(self)


def _queued(queue: SendQueue) -> int:
    return queue.bytes


class ByteBudget:
    """Bytes queued for a group of sockets (one account's, or the whole process's), capped."""

    __slots__ = ("limit", "members", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.members: set[SendQueue] = set()


class QueueBudgets:
    """The shared budgets of the send queues: one per account, one for the process."""

    def __init__(self, per_user: int = DEFAULT_PER_USER, total: int = DEFAULT_TOTAL) -> None:
        self.per_user = per_user
        self.total = ByteBudget(total)
        self._users: dict[str, ByteBudget] = {}

    def join(self, queue: SendQueue, user: str) -> None:
        """Count ``queue`` (a socket of ``user``) in the user's and the process's budgets."""
        budget = self._users.get(user)
        if budget is None:
            budget = self._users[user] = ByteBudget(self.per_user)
        queue.share((budget, self.total))

    def leave(self, queue: SendQueue, user: str) -> None:
        """Stop counting ``queue``; forget the user's budget with its last queue."""
        queue.unshare()
        budget = self._users.get(user)
        if budget is not None and not budget.members:
            del self._users[user]

    def used_by(self, user: str) -> int:
        """Bytes queued for ``user``'s sockets."""
        budget = self._users.get(user)
        return budget.used if budget is not None else 0
