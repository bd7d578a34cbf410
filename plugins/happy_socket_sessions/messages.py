"""Session messages: one stored message (the socket ``message`` event) and paged reads.

Every message of a session takes the next value of the session's counter (``sessions.seq``):
1, 2, 3, … without holes. A message's ``localId`` is unique per session, whichever path
stored it (this module, or :mod:`.batch` for ``POST /v3/sessions/:id/messages``). On
PostgreSQL every writer locks the session row before it looks for a ``localId`` or takes a
seq, so writers of one session are serialized by the database, across processes too; on
SQLite the one writer connection holds the write lock for each whole group commit.
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
# SQLite's ``message`` (see MessageStore.add): insert with the session's next seq if the session
# is the user's and the localId is new; else find the stored message of an owned session
_INSERT_NEXT: dict[str, Any] = {
    **_MESSAGE_VALUES,
    "session_id": sessions.c.id,
    "seq": sessions.c.seq + 1,
}
_FIND_OWNED_LOCAL_ID = (
    sa.select(session_messages)
    .join(sessions, sessions.c.id == session_messages.c.session_id)
    .where(*OWN, session_messages.c.local_id == _bp("b_local"))
)

DUPLICATE_GUARD_SQLSTATE = "22012"  # division_by_zero: see _one_statement_message


def _one_statement_message(app: App) -> sa.Select[Any]:
    """``message`` as one PostgreSQL statement: session seq, insert, user seq, together.

    One round trip instead of five (BEGIN, three statements, COMMIT). Two columns of the
    result exist only to abort the statement, since a data-modifying CTE cannot be undone
    otherwise and autocommit then keeps nothing:

    - ``guard`` divides by zero when the session row was updated but the insert met a stored
      localId: the session's seq would otherwise keep a hole. The caller catches that
      SQLSTATE and reads the stored message (a second round trip, only for a duplicate).
      A plainer ``UPDATE ... WHERE NOT EXISTS (<that localId>)`` is not enough: two requests
      racing with one new localId both evaluate ``NOT EXISTS`` in the snapshot taken at the
      start of their statement; the second waits for the first's row lock, then rechecks its
      WHERE against the new version of that row only (the subquery still reads the old
      snapshot) and updates it anyway, so the hole would come back in exactly the race this
      guards against.
    - ``account_guard`` (``app.accounts.account_guard``): the user has no account row, so no
      update seq could be allocated: AccountMissing, nothing kept.

    Not owned: no session row, no insert, no user seq, and both guards stay quiet. SQLite has
    no data-modifying CTEs and needs none of this (see :meth:`MessageStore.add`).
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
        # aborts the statement on a duplicate localId (see the docstring), 1 otherwise
        (sa.literal(1) / sa.case((duplicate, 0), else_=1)).label("guard"),
        app.accounts.account_guard(m, u),  # aborts it when the user has no account row
    ).select_from(one.outerjoin(m, sa.true()))


class MessageResult:
    """A stored (or already stored) message."""

    __slots__ = ("created", "message", "seq")

    def __init__(self, message: dict[str, Any], created: bool, seq: int | None) -> None:
        self.message = message
        self.created = created
        self.seq = seq  # the user's update seq allocated with it


WriteFn = Callable[[Unit[MessageResult | None]], Awaitable[MessageResult | None]]


class MessageStore:
    """Stores and reads the messages of sessions; every call is scoped by the user."""

    def __init__(self, app: App) -> None:
        self.app = app
        # a duplicate localId or a session of someone else inserts nothing (and returns no row)
        self._insert_next = (
            app.db.insert(session_messages)
            .from_select(list(_INSERT_NEXT), sa.select(*_INSERT_NEXT.values()).where(*OWN))
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

        On SQLite a unit of three statements, with no exception on any path (an exception
        would roll back and rerun the writer's whole group commit): the insert takes the
        session's seq + 1 only when the session is the user's and the localId is new; then the
        session's counter moves to that seq and the user's update seq is allocated. When the
        insert stored nothing, the message already stored under this localId of an owned
        session is the answer (``created`` False, nothing written), else the session is not
        the user's (None). The writer holds SQLite's write lock for the whole group commit, so
        nothing can change between the statements. On PostgreSQL: one statement
        (:func:`_one_statement_message`).
        """
        own = {"b_sid": session_id, "b_uid": user_id}
        now = self.app.clock()
        if self._message_statement is not None:
            return await self._add_pg(own, now, content, local_id)
        values = {**own, "b_id": new_id(), "b_local": local_id, "b_content": content, "b_now": now}

        async def unit(tx: Tx) -> MessageResult | None:
            row = await tx.fetch_one(self._insert_next, values)
            if row is None:
                stored = None
                if local_id is not None:
                    stored = await tx.fetch_one(_FIND_OWNED_LOCAL_ID, values)
                return None if stored is None else MessageResult(message_json(stored), False, None)
            await tx.execute(_NEXT_MESSAGE_SEQ, values)
            user_seq = await self.app.accounts.next_seq(user_id, tx)
            return MessageResult(message_json(row), True, user_seq)

        return await (write or self.app.db.write)(unit)

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
