"""The sessions service: storage, compare-and-set, messages, presence, and the library API (§8).

Published as ``app.service("sessions")``. Every query is scoped by the user id.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from happy_socket import (
    App,
    InterestedInSession,
    NotFound,
    Tx,
    Unit,
    UserScopedOnly,
    VersionMismatch,
    new_id,
)
from happy_socket.presence import LazyActivityWriter, SharedPresence, TimedCache

from .tables import message_json, session_json, session_messages, sessions

log = logging.getLogger("happy_socket.sessions")

OWNED_TTL_MS = 30_000
NOT_OWNED_TTL_MS = 5_000
END_SUPPRESS_MS = 60_000
TIMEOUT_MS = 10 * 60 * 1000
LIST_LIMIT = 150
FOCUS_PREFIX = "happy_socket:focus:"

DeleteListener = Callable[[Tx, str, str], Awaitable[None]]
Key = tuple[str, str]  # (user id, session id)

# wire name -> (value column, version column)
FIELDS = {
    "metadata": (sessions.c.metadata, sessions.c.metadata_version),
    "agentState": (sessions.c.agent_state, sessions.c.agent_state_version),
}

# The hot statements (message, update-metadata/state), built once with bind parameters:
# building a SQLAlchemy statement per event cost more than running it (bench/RESULTS.md).
_bp = sa.bindparam
_OWN = (sessions.c.id == _bp("b_sid"), sessions.c.account_id == _bp("b_uid"))
_NOW = _bp("b_now", type_=sa.BigInteger)
_CAS = {
    field: (
        sessions.update()
        .where(*_OWN, version_col == _bp("b_expected", type_=sa.BigInteger))
        .values(
            {value_col.name: _bp("b_value"), version_col.name: version_col + 1, "updated_at": _NOW}
        )
        .returning(version_col),
        sa.select(value_col, version_col).where(*_OWN),
    )
    for field, (value_col, version_col) in FIELDS.items()
}
_FIND_LOCAL_ID = sa.select(session_messages).where(
    session_messages.c.session_id == _bp("b_sid"), session_messages.c.local_id == _bp("b_local")
)
_NEXT_MESSAGE_SEQ = (
    sessions.update()
    .where(*_OWN)
    .values(seq=sessions.c.seq + 1, updated_at=_NOW)
    .returning(sessions.c.seq)
)
_MESSAGE_VALUES: dict[str, Any] = {
    "id": _bp("b_id", type_=sa.Text),
    "session_id": _bp("b_sid", type_=sa.Text),
    "seq": _bp("b_seq", type_=sa.BigInteger),
    "local_id": _bp("b_local", type_=sa.Text),
    "content": _bp("b_content", type_=sa.Text),
    "created_at": _NOW,
    "updated_at": _NOW,
}


DUPLICATE_GUARD_SQLSTATE = "22012"  # division_by_zero: see _one_statement_message


def _one_statement_message(app: App) -> sa.Select[Any]:
    """``message`` as one PostgreSQL statement: session seq, insert, user seq, together.

    A duplicate localId must leave no trace (the session seq would get a gap), but the
    session row was already updated by then; the guard column divides by zero exactly in
    that case, which aborts the whole statement (autocommit: nothing is kept). The caller
    then reads the stored message. Not owned: no session row, no insert, no user seq.
    """
    s = (
        sessions.update()
        .where(*_OWN)
        .values(seq=sessions.c.seq + 1, updated_at=_NOW)
        .returning(sessions.c.seq)
        .cte("s")
    )
    # the unit's insert values, with the seq taken from the session update
    columns: list[Any] = [s.c.seq if k == "seq" else v for k, v in _MESSAGE_VALUES.items()]
    source = sa.select(*columns)
    m = (
        app.db.insert(session_messages)
        .from_select(list(_MESSAGE_VALUES), source)
        .on_conflict_do_nothing(index_elements=["session_id", "local_id"])
        .returning(*session_messages.c)
        .cte("m")
    )
    u = app.accounts.next_seq_after(m)
    duplicate = sa.and_(sa.exists(s.select()), ~sa.exists(m.select()))
    one = sa.select(sa.literal(1).label("one")).subquery("one")
    return sa.select(
        sa.select(s.c.seq).scalar_subquery().label("session_seq"),
        *m.c,
        sa.select(u.c.seq).scalar_subquery().label("user_seq"),
        (sa.literal(1) / sa.case((duplicate, 0), else_=1)).label("guard"),
    ).select_from(one.outerjoin(m, sa.true()))


class MessageResult:
    """A stored (or already stored) message."""

    __slots__ = ("created", "message", "seq")

    def __init__(self, message: dict[str, Any], created: bool, seq: int | None) -> None:
        self.message = message
        self.created = created
        self.seq = seq  # the user's update seq allocated with it


class _Duplicate(Exception):
    """Raised inside a message unit to roll back its seq: the localId is already stored."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__("duplicate localId")
        self.message = message


class SessionsService:
    """Sessions of users; one instance per App."""

    def __init__(self, app: App) -> None:
        self.app = app
        # a duplicate localId inserts nothing (and returns no row) instead of a separate lookup
        self._insert_message = (
            app.db.insert(session_messages)
            .values(_MESSAGE_VALUES)
            .on_conflict_do_nothing(index_elements=["session_id", "local_id"])
            .returning(*session_messages.c)
        )
        self._message_statement = None if app.db.is_sqlite else _one_statement_message(app)
        self._owned: TimedCache[Key] = TimedCache(clock=app.clock)
        self._not_owned: TimedCache[Key] = TimedCache(clock=app.clock)
        self._ended: dict[Key, int] = {}
        self._delete_listeners: list[DeleteListener] = []
        self.writer: LazyActivityWriter[Key] = LazyActivityWriter(
            self._write_activity, clock=app.clock, name="session activity"
        )
        self.focus = SharedPresence(FOCUS_PREFIX, app.settings.redis)  # key: user id

    # -- ownership -----------------------------------------------------------

    async def owns(self, user_id: str, session_id: str) -> bool:
        """True when ``session_id`` is ``user_id``'s (answers cached ~30 s)."""
        key = (user_id, session_id)
        if key in self._owned:
            return True
        if key in self._not_owned:
            return False
        t = sessions
        row = await self.app.db.fetch_one(
            sa.select(t.c.id).where(t.c.id == session_id, t.c.account_id == user_id)
        )
        if row is None:
            self._not_owned.add(key, NOT_OWNED_TTL_MS)
            return False
        self._owned.add(key, OWNED_TTL_MS)
        return True

    def add_delete_listener(self, fn: DeleteListener) -> None:
        """Call ``await fn(tx, user_id, session_id)`` inside every session's delete unit."""
        self._delete_listeners.append(fn)

    # -- library API ---------------------------------------------------------

    async def create_or_load(
        self,
        user_id: str,
        tag: str,
        metadata: str,
        agent_state: str | None = None,
        data_encryption_key: bytes | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The user's session with ``tag``, created (and announced) if missing."""
        t = sessions
        now = self.app.clock()
        insert = (
            self.app.db.insert(t)
            .values(
                id=new_id(),
                account_id=user_id,
                tag=tag,
                seq=0,
                metadata=metadata,
                metadata_version=0,
                agent_state=agent_state,
                agent_state_version=0,
                data_encryption_key=data_encryption_key,
                active=True,
                last_active_at=now,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "tag"])
            .returning(*t.c)
        )

        async def unit(tx: Tx) -> tuple[dict[str, Any], int | None]:
            row = await tx.fetch_one(insert)
            if row is not None:
                return row, await self.app.accounts.next_seq(user_id, tx)
            existing = await tx.fetch_one(
                sa.select(t).where(t.c.account_id == user_id, t.c.tag == tag)
            )
            assert existing is not None
            return existing, None

        row, seq = await self.app.db.write(unit)
        key = (user_id, row["id"])
        self._ended.pop(key, None)
        self._not_owned.discard(key)
        self._owned.add(key, OWNED_TTL_MS)
        session = session_json(row)
        if seq is not None:
            body = {"t": "new-session", **session}
            await self.app.router.send_update(user_id, seq, body, UserScopedOnly())
        return session, seq is not None

    async def get(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        """One session of the user, or None."""
        t = sessions
        row = await self.app.db.fetch_one(
            sa.select(t).where(t.c.id == session_id, t.c.account_id == user_id)
        )
        return None if row is None else session_json(row)

    async def list(self, user_id: str, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """The user's sessions, most recently updated first."""
        t = sessions
        rows = await self.app.db.fetch_all(
            sa.select(t)
            .where(t.c.account_id == user_id)
            .order_by(t.c.updated_at.desc(), t.c.id)
            .limit(max(0, limit))
        )
        return [session_json(r) for r in rows]

    async def messages(
        self, user_id: str, session_id: str, limit: int = LIST_LIMIT
    ) -> builtins.list[dict[str, Any]] | None:
        """The session's latest messages, newest first; None when it is not the user's."""
        if await self.get(user_id, session_id) is None:
            return None
        m = session_messages
        rows = await self.app.db.fetch_all(
            sa.select(m)
            .where(m.c.session_id == session_id)
            .order_by(m.c.seq.desc())
            .limit(max(0, limit))
        )
        return [message_json(r) for r in rows]

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Delete the session, its messages and dependants (listeners); announce it."""
        t, m = sessions, session_messages

        async def unit(tx: Tx) -> int | None:
            deleted = await tx.fetch_val(
                t.delete().where(t.c.id == session_id, t.c.account_id == user_id).returning(t.c.id)
            )
            if deleted is None:
                return None
            await tx.execute(m.delete().where(m.c.session_id == session_id))
            for listener in self._delete_listeners:
                await listener(tx, user_id, session_id)
            return await self.app.accounts.next_seq(user_id, tx)

        key = (user_id, session_id)
        self._owned.discard(key)
        seq = await self.app.db.write(unit)
        self._owned.discard(key)
        self.writer.drop(key)
        self._ended.pop(key, None)
        if seq is None:
            return False
        body = {"t": "delete-session", "sid": session_id}
        await self.app.router.send_update(user_id, seq, body, UserScopedOnly())
        return True

    async def app_active(self, user_id: str) -> bool:
        """True when the user has an app in the foreground (PROTOCOL.md §7)."""
        return await self.focus.anywhere(user_id)

    # -- socket events -------------------------------------------------------

    async def compare_and_set(
        self, user_id: str, session_id: str, field: str, value: str | None, expected: int
    ) -> int:
        """Set ``field`` if its version is ``expected``; announce; return the new version.

        Raises NotFound, or VersionMismatch carrying the current (fresh) version and value.
        """
        value_col, version_col = FIELDS[field]
        update, current = _CAS[field]
        now = self.app.clock()
        values = {
            "b_sid": session_id,
            "b_uid": user_id,
            "b_expected": expected,
            "b_value": value,
            "b_now": now,
        }
        outcome = await self.app.accounts.compare_and_set(user_id, update, current, values, now)
        if outcome.is_missing:
            raise NotFound(None)
        if outcome.is_mismatch:
            current_row = outcome.current
            raise VersionMismatch(
                version=int(current_row[version_col.name]),
                **{field: current_row[value_col.name]},
            )
        seq = outcome.seq
        assert seq is not None
        version = int(outcome.current[version_col.name])
        body = {
            "t": "update-session",
            "id": session_id,
            field: {"value": value, "version": version},
        }
        await self.app.router.send_update(user_id, seq, body, InterestedInSession(session_id))
        return version

    async def add_message(
        self,
        user_id: str,
        session_id: str,
        content: str,
        local_id: str | None,
        *,
        write: Callable[[Unit[MessageResult | None]], Awaitable[MessageResult | None]]
        | None = None,
    ) -> MessageResult | None:
        """Store a message with the next gapless seq (idempotent per localId); None if not owned.

        ``write`` runs the atomic unit (default ``app.db.write``; the ``message`` handler
        passes ``ctx.write`` so one socket's messages can share a group commit).

        The seq update comes first: it proves ownership and locks the session row, so the
        seq, the duplicate check (the insert's ON CONFLICT on (session, localId)) and the insert
        are one atomic step even with concurrent writers on PostgreSQL. A duplicate rolls the
        unit back, so the seq stays gapless.
        """
        own = {"b_sid": session_id, "b_uid": user_id}
        now = self.app.clock()
        if self._message_statement is not None:
            return await self._add_message_pg(own, now, content, local_id)

        async def unit(tx: Tx) -> MessageResult | None:
            seq = await tx.fetch_val(_NEXT_MESSAGE_SEQ, {**own, "b_now": now})
            if seq is None:
                return None
            row = await tx.fetch_one(
                self._insert_message,
                {
                    "b_id": new_id(),
                    "b_sid": session_id,
                    "b_seq": seq,
                    "b_local": local_id,
                    "b_content": content,
                    "b_now": now,
                },
            )
            if row is None:  # the localId is already stored: roll the seq back
                existing = await tx.fetch_one(
                    _FIND_LOCAL_ID, {"b_sid": session_id, "b_local": local_id}
                )
                assert existing is not None
                raise _Duplicate(message_json(existing))
            return MessageResult(
                message_json(row), True, await self.app.accounts.next_seq(user_id, tx)
            )

        try:
            return await (write or self.app.db.write)(unit)
        except _Duplicate as duplicate:
            return MessageResult(duplicate.message, False, None)

    async def _add_message_pg(
        self, own: dict[str, Any], now: int, content: str, local_id: str | None
    ) -> MessageResult | None:
        """PostgreSQL: the whole message in one statement and one round trip."""
        values = {
            **own,
            "b_now": now,
            "b_id": new_id(),
            "b_local": local_id,
            "b_content": content,
            **self.app.accounts.seq_values(own["b_uid"], now),
        }
        assert self._message_statement is not None
        try:
            row = await self.app.db.write_one(self._message_statement, values)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != DUPLICATE_GUARD_SQLSTATE:
                raise
            existing = await self.app.db.fetch_one(
                _FIND_LOCAL_ID, {"b_sid": own["b_sid"], "b_local": local_id}
            )
            if existing is None:  # pragma: no cover - the guard fires only for a stored localId
                raise
            return MessageResult(message_json(existing), False, None)
        if row is None or row["session_seq"] is None:
            return None
        return MessageResult(message_json(row), True, int(row["user_seq"]))

    async def heartbeat(self, user_id: str, session_id: str, at: int, thinking: bool) -> bool:
        """``session-alive``: announce activity and queue a lazy write; False when ignored."""
        key = (user_id, session_id)
        ended = self._ended.get(key)
        if ended is not None:
            if self.app.clock() - ended < END_SUPPRESS_MS:
                return False
            del self._ended[key]
        if not await self.owns(user_id, session_id):
            return False
        self.writer.record(key, at)
        payload = {
            "type": "activity",
            "id": session_id,
            "active": True,
            "activeAt": at,
            "thinking": thinking,
        }
        await self.app.router.emit_ephemeral(user_id, payload, UserScopedOnly())
        return True

    async def end(self, user_id: str, session_id: str, at: int) -> bool:
        """``session-end``: mark inactive now, suppress heartbeats for a minute, announce."""
        t = sessions
        stmt = (
            t.update()
            .where(t.c.id == session_id, t.c.account_id == user_id)
            .values(active=False, last_active_at=at)
            .returning(t.c.id)
        )
        if await self.app.db.write(lambda tx: tx.fetch_val(stmt)) is None:
            return False
        key = (user_id, session_id)
        self._ended[key] = self.app.clock()
        self.writer.drop(key)
        payload = {
            "type": "activity",
            "id": session_id,
            "active": False,
            "activeAt": at,
            "thinking": False,
        }
        await self.app.router.emit_ephemeral(user_id, payload, UserScopedOnly())
        return True

    async def _write_activity(self, batch: dict[Key, int]) -> None:
        t = sessions

        async def unit(tx: Tx) -> None:
            for (user_id, session_id), at in batch.items():
                await tx.execute(
                    t.update()
                    .where(
                        t.c.id == session_id,
                        t.c.account_id == user_id,
                        t.c.last_active_at < at,
                    )
                    .values(active=True, last_active_at=at)
                )

        await self.app.db.write(unit)

    async def sweep(self) -> int:
        """Mark sessions silent for 10 minutes inactive; each row is flipped and announced once."""
        await self.writer.flush()
        now = self.app.clock()
        for key in [k for k, at in self._ended.items() if now - at >= END_SUPPRESS_MS]:
            del self._ended[key]
        self._owned.prune()
        self._not_owned.prune()
        t = sessions
        stmt = (
            t.update()
            .where(t.c.active == sa.true(), t.c.last_active_at < now - TIMEOUT_MS)
            .values(active=False)
            .returning(t.c.id, t.c.account_id, t.c.last_active_at)
        )
        rows = await self.app.db.write(lambda tx: tx.fetch_all(stmt))
        for row in rows:
            payload = {
                "type": "activity",
                "id": row["id"],
                "active": False,
                "activeAt": int(row["last_active_at"]),
                "thinking": False,
            }
            await self.app.router.emit_ephemeral(row["account_id"], payload, UserScopedOnly())
        if rows:
            log.info("presence sweep: %d session(s) timed out", len(rows))
        return len(rows)
