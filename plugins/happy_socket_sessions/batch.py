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

from happy_socket import App, InterestedInSession, TooBusy, Tx, Unit, new_id

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
_bp = sa.bindparam
# built once: per-item statements on SQLite (a prebuilt statement runs straight on the writer's
# cursor, ~0.1 ms, where compiling a statement per request cost more than running it)
_FIND_ONE = sa.select(*_SUMMARY).where(
    _m.c.session_id == _bp("b_sid"), _m.c.local_id == _bp("b_local")
)
_ROW = {
    "id": _bp("b_id", type_=sa.Text),
    "session_id": _bp("b_sid", type_=sa.Text),
    "seq": _bp("b_seq", type_=sa.BigInteger),
    "local_id": _bp("b_local", type_=sa.Text),
    "content": _bp("b_content", type_=sa.Text),
    "created_at": NOW,
    "updated_at": NOW,
}


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
        self._tails: dict[tuple[str, str], asyncio.Future[None]] = {}  # last queued batch
        self._insert_one = (
            app.db.insert(_m)
            .values(_ROW)
            .on_conflict_do_nothing(index_elements=["session_id", "local_id"])
            .returning(*_m.c)
        )

    async def post(
        self, user_id: str, session_id: str, items: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]] | None:
        """Store ``(localId, content)`` items; the answer sorted by seq, or None if not owned.

        The first item of each localId wins. Each new message is emitted as ``update``
        ``new-message`` to ``all-interested-in-session`` after the commit, in seq order (one
        session's batches are written and announced one at a time in this process).
        """
        key = (user_id, session_id)
        async with self.slots.take(user_id):
            if self.app.db.writes_in_order:
                posted = await self._pipelined(key, items)
            else:
                # keyed by (user, session): another account's requests never wait on this lock
                async with self._sessions.hold(key):
                    posted = await self.write(user_id, session_id, items)
                    await self._announce(key, posted)
        return None if posted is None else posted.messages

    async def _pipelined(
        self, key: tuple[str, str], items: Sequence[tuple[str, str]]
    ) -> Posted | None:
        """SQLite: queue the unit at once, so a session's next batch queues behind it (one group
        commit for both); the writer runs units in queue order, and the announcements wait for
        the previous batch's, so they keep seq order."""
        previous = self._tails.get(key)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = turn
        try:
            committed = self.app.db.submit(self._unit(key[0], key[1], items))
            try:
                posted = await committed
            except _Raced:  # only another process writing the same file can cause it
                posted = await self.write(key[0], key[1], items)
            finally:
                if previous is not None:
                    await asyncio.shield(previous)
            await self._announce(key, posted)
            return posted
        finally:
            if not turn.done():
                turn.set_result(None)
            if self._tails.get(key) is turn:
                del self._tails[key]

    async def _announce(self, key: tuple[str, str], posted: Posted | None) -> None:
        if posted is None:
            return
        user_id, session_id = key
        for message, seq in posted.created:
            body = {"t": "new-message", "sid": session_id, "message": message}
            await self.app.router.send_update(user_id, seq, body, InterestedInSession(session_id))

    async def write(
        self, user_id: str, session_id: str, items: Sequence[tuple[str, str]]
    ) -> Posted | None:
        """Run the batch's unit (retried when it met an unseen localId); no emits."""
        unit = self._unit(user_id, session_id, items)
        for attempt in range(ATTEMPTS):
            try:
                return await self.app.db.write(unit)
            except _Raced:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _unit(
        self, user_id: str, session_id: str, items: Sequence[tuple[str, str]]
    ) -> Unit[Posted | None]:
        """The batch's one atomic unit."""
        unique: dict[str, str] = {}
        for local_id, content in items:
            unique.setdefault(local_id, content)
        own = {"b_sid": session_id, "b_uid": user_id}
        now = self.app.clock()

        sqlite = self.app.db.is_sqlite

        async def lookup(tx: Tx) -> list[dict[str, Any]]:
            if not sqlite:  # one round trip on PostgreSQL
                stored = sa.select(*_SUMMARY).where(
                    _m.c.session_id == session_id, _m.c.local_id.in_(list(unique))
                )
                return await tx.fetch_all(stored)
            found = []
            for local_id in unique:
                row = await tx.fetch_one(_FIND_ONE, {"b_sid": session_id, "b_local": local_id})
                if row is not None:
                    found.append(row)
            return found

        async def insert(tx: Tx, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not sqlite:  # one multi-row statement: one round trip
                statement = (
                    self.app.db.insert(_m)
                    .values(rows)
                    .on_conflict_do_nothing(index_elements=["session_id", "local_id"])
                    .returning(*_m.c)
                )
                return await tx.fetch_all(statement)
            inserted = []
            for row in rows:
                values = {
                    "b_id": row["id"],
                    "b_sid": session_id,
                    "b_seq": row["seq"],
                    "b_local": row["local_id"],
                    "b_content": row["content"],
                    "b_now": now,
                }
                one = await tx.fetch_one(self._insert_one, values)
                if one is None:
                    raise _Raced()
                inserted.append(one)
            return inserted

        async def unit(tx: Tx) -> Posted | None:
            base = await tx.fetch_val(_LOCK, own)
            if base is None:
                return None
            existing = await lookup(tx)
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
            inserted = await insert(tx, rows)
            if len(inserted) != len(rows):
                raise _Raced()
            await tx.execute(_ADVANCE, {**own, "b_count": len(rows), "b_now": now})
            inserted.sort(key=lambda row: int(row["seq"]))
            seqs = await self.app.accounts.next_seqs(user_id, len(inserted), tx)
            created = [(message_json(row), seq) for row, seq in zip(inserted, seqs, strict=True)]
            return Posted(_answer(existing, inserted), created)

        return unit


def _answer(existing: list[dict[str, Any]], inserted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = sorted([*existing, *inserted], key=lambda row: int(row["seq"]))
    return [summary_json(row) for row in rows]
