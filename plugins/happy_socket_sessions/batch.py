"""``POST /v3/sessions/:id/messages``: a batch of messages stored in one unit, emitted in order.

The unit locks the session row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer),
looks up the batch's localIds already stored (by earlier batches or by the socket ``message``
event: one localId namespace per session), inserts the new ones with the next consecutive
seqs, moves the session's counter (and ``updatedAt``) once, and allocates one user update
seq per new message. A racing request with the same new localId waits for the lock, then finds
the winner's row: it answers that row and stores nothing.

Per user, at most ``post_concurrency`` batches (plugin option, default 4) run at once in a
process; a request waits up to ``post_wait`` seconds (default 5) for a turn, then gets
``TooBusy`` (429, ``Retry-After: 1``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from happy_socket import App, InterestedInSession, TooBusy, Tx, new_id

from .messages import NOW, OWN
from .tables import message_json, session_messages, sessions

MAX_MESSAGES = 100  # per request
POST_CONCURRENCY = 4  # batches of one user in flight in one process
POST_WAIT_S = 5.0  # how long a batch waits for a turn before TooBusy
RETRY_AFTER_S = 1
ATTEMPTS = 3  # a unit that met a localId it had not seen runs again

_m = session_messages
_LOCK = sa.select(sessions.c.seq).where(*OWN).with_for_update()
_ADVANCE = (
    sessions.update()
    .where(*OWN)
    .values(seq=sessions.c.seq + sa.bindparam("b_count", type_=sa.BigInteger), updated_at=NOW)
)
_SUMMARY = (_m.c.id, _m.c.seq, _m.c.local_id, _m.c.created_at, _m.c.updated_at)


def summary_json(row: dict[str, Any]) -> dict[str, Any]:
    """A message of the batch answer: ``{id, seq, localId, createdAt, updatedAt}``."""
    return {
        "id": row["id"],
        "seq": int(row["seq"]),
        "localId": row["local_id"],
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }


@attrs.frozen
class Posted:
    """What one batch stored: the answer (sorted by seq) and the new messages to announce."""

    messages: list[dict[str, Any]]
    created: list[tuple[dict[str, Any], int]]  # (message, user update seq), in seq order


class _Raced(Exception):
    """The insert met a localId the lookup had not seen: roll back and run the unit again."""


class UserSlots:
    """At most ``per_user`` holders per user; a waiter gives up after ``wait_s`` (TooBusy)."""

    def __init__(self, per_user: int, wait_s: float) -> None:
        self.per_user = per_user
        self.wait_s = wait_s
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def take(self, user_id: str) -> AsyncIterator[None]:
        """Hold one of the user's slots for the ``async with`` body."""
        entry = self._slots.get(user_id)
        if entry is None:
            entry = self._slots[user_id] = (asyncio.Semaphore(self.per_user), [0])
        semaphore, users = entry
        users[0] += 1
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await semaphore.acquire()
            except TimeoutError:
                raise TooBusy(retry_after=RETRY_AFTER_S) from None
            try:
                yield
            finally:
                semaphore.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._slots[user_id]


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the ``async with`` body."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


class BatchWriter:
    """Stores batches of messages and announces the new ones, in seq order per session."""

    def __init__(self, app: App) -> None:
        self.app = app
        per_user = int(app.settings.option("sessions", "post_concurrency", POST_CONCURRENCY))
        wait = float(app.settings.option("sessions", "post_wait", POST_WAIT_S))
        self.slots = UserSlots(max(1, per_user), wait)
        self._sessions = KeyedLocks()

    async def post(
        self, user_id: str, session_id: str, items: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]] | None:
        """Store ``(localId, content)`` items; the answer sorted by seq, or None if not owned.

        The first item of each localId wins. Each new message is emitted as ``update``
        ``new-message`` to ``all-interested-in-session`` after the commit, in seq order (one
        session's batches are written and announced one at a time in this process).
        """
        # keyed by (user, session): another account's requests never wait on this lock
        async with self.slots.take(user_id), self._sessions.hold((user_id, session_id)):
            posted = await self.write(user_id, session_id, items)
            if posted is None:
                return None
            router = self.app.router
            for message, seq in posted.created:
                body = {"t": "new-message", "sid": session_id, "message": message}
                await router.send_update(user_id, seq, body, InterestedInSession(session_id))
        return posted.messages

    async def write(
        self, user_id: str, session_id: str, items: Sequence[tuple[str, str]]
    ) -> Posted | None:
        """The batch's one atomic unit (retried when it met an unseen localId); no emits."""
        unique: dict[str, str] = {}
        for local_id, content in items:
            unique.setdefault(local_id, content)
        own = {"b_sid": session_id, "b_uid": user_id}
        stored = sa.select(*_SUMMARY).where(
            _m.c.session_id == session_id, _m.c.local_id.in_(list(unique))
        )
        now = self.app.clock()

        async def unit(tx: Tx) -> Posted | None:
            base = await tx.fetch_val(_LOCK, own)
            if base is None:
                return None
            existing = await tx.fetch_all(stored)
            known = {row["local_id"] for row in existing}
            fresh = [(local, content) for local, content in unique.items() if local not in known]
            if not fresh:
                return Posted(_answer(existing, []), [])
            rows = [
                {
                    "id": new_id(),
                    "session_id": session_id,
                    "seq": int(base) + index,
                    "local_id": local_id,
                    "content": content,
                    "created_at": now,
                    "updated_at": now,
                }
                for index, (local_id, content) in enumerate(fresh, start=1)
            ]
            insert = (
                self.app.db.insert(_m)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["session_id", "local_id"])
                .returning(*_m.c)
            )
            inserted = await tx.fetch_all(insert)
            if len(inserted) != len(rows):
                raise _Raced()
            await tx.execute(_ADVANCE, {**own, "b_count": len(rows), "b_now": now})
            inserted.sort(key=lambda row: int(row["seq"]))
            created = [
                (message_json(row), await self.app.accounts.next_seq(user_id, tx))
                for row in inserted
            ]
            return Posted(_answer(existing, inserted), created)

        for attempt in range(ATTEMPTS):
            try:
                return await self.app.db.write(unit)
            except _Raced:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def _answer(existing: list[dict[str, Any]], inserted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = sorted([*existing, *inserted], key=lambda row: int(row["seq"]))
    return [summary_json(row) for row in rows]
