"""Session messages: one stored message (the socket ``message`` event) and paged reads.

Every message of a session takes the next value of the session's counter (``sessions.seq``):
1, 2, 3, … without holes. A message's ``localId`` is unique per session, whichever path
stored it (this module, or :mod:`.batch` for ``POST /v3/sessions/:id/messages``). Every
writer locks the session row before it looks for a ``localId`` or takes a seq, so writers of
one session are serialized by the database, across processes too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from happy_socket import App, Tx, Unit, new_id
from happy_socket.storage.accounts import AccountMissing, is_account_missing
from happy_socket.validation import INT64

from .tables import message_json, session_messages, sessions

_bp = sa.bindparam
OWN = (sessions.c.id == _bp("b_sid"), sessions.c.account_id == _bp("b_uid"))
NOW = _bp("b_now", type_=sa.BigInteger)

# The hot statements of the ``message`` event, built once with bind parameters: building a
# SQLAlchemy statement per event cost more than running it (bench/RESULTS.md).
_FIND_LOCAL_ID = sa.select(session_messages).where(
    session_messages.c.session_id == _bp("b_sid"), session_messages.c.local_id == _bp("b_local")
)
_NEXT_MESSAGE_SEQ = (
    sessions.update()
    .where(*OWN)
    .values(seq=sessions.c.seq + 1, updated_at=NOW)
    .returning(sessions.c.seq)
)
_MESSAGE_VALUES: dict[str, Any] = {
    "id": _bp("b_id", type_=sa.Text),
    "session_id": _bp("b_sid", type_=sa.Text),
    "seq": _bp("b_seq", type_=sa.BigInteger),
    "local_id": _bp("b_local", type_=sa.Text),
    "content": _bp("b_content", type_=sa.Text),
    "created_at": NOW,
    "updated_at": NOW,
}
_OWNED = sa.select(sessions.c.id).where(*OWN)

DUPLICATE_GUARD_SQLSTATE = "22012"  # division_by_zero: see _one_statement_message


def _one_statement_message(app: App) -> sa.Select[Any]:
    """``message`` as one PostgreSQL statement: session seq, insert, user seq, together.

    A duplicate localId must leave no trace (the session seq would get a gap), but the
    session row was already updated by then; the guard column divides by zero exactly in
    that case, which aborts the whole statement (autocommit: nothing is kept). The caller
    then reads the stored message. Not owned: no session row, no insert, no user seq. No
    account row: the account guard aborts the statement (AccountMissing, nothing kept).
    """
    s = (
        sessions.update()
        .where(*OWN)
        .values(seq=sessions.c.seq + 1, updated_at=NOW)
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
        app.accounts.account_guard(m, u),
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


WriteFn = Callable[[Unit[MessageResult | None]], Awaitable[MessageResult | None]]


class MessageStore:
    """Stores and reads the messages of sessions; every call is scoped by the user."""

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

    async def owned(self, user_id: str, session_id: str) -> bool:
        """True when the session is the user's, read now (no cache)."""
        row = await self.app.db.fetch_one(_OWNED, {"b_sid": session_id, "b_uid": user_id})
        return row is not None

    async def add(
        self,
        user_id: str,
        session_id: str,
        content: str,
        local_id: str | None,
        *,
        write: WriteFn | None = None,
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
            return await self._add_pg(own, now, content, local_id)

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

    async def _add_pg(
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
            if is_account_missing(exc):
                raise AccountMissing() from None
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

    async def latest(
        self, user_id: str, session_id: str, limit: int
    ) -> list[dict[str, Any]] | None:
        """The session's latest messages, newest first; None when it is not the user's."""
        if not await self.owned(user_id, session_id):
            return None
        m = session_messages
        rows = await self.app.db.fetch_all(
            sa.select(m)
            .where(m.c.session_id == session_id)
            .order_by(m.c.seq.desc())
            .limit(max(0, limit))
        )
        return [message_json(r) for r in rows]

    async def page(
        self,
        user_id: str,
        session_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """One page of messages and whether more follow in the same direction.

        ``after``: seq > after, ascending; ``before``: seq < before, descending; neither: as
        ``after=0``. None when the session is not the user's.
        """
        if not await self.owned(user_id, session_id):
            return None
        m = session_messages
        query = sa.select(m).where(m.c.session_id == session_id)
        if before is not None:
            query = query.where(m.c.seq < min(before, INT64)).order_by(m.c.seq.desc())
        else:
            query = query.where(m.c.seq > min(after or 0, INT64)).order_by(m.c.seq)
        rows = await self.app.db.fetch_all(query.limit(limit + 1))
        return [message_json(r) for r in rows[:limit]], len(rows) > limit
