"""Accounts and the per-user update seq (PROTOCOL.md §3): the core's own storage."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..context import now_ms
from .database import Database, Tx
from .results import CasResult

metadata = sa.MetaData()

_USER_SEQ = "happy_socket_user_seq"  # the seq's label in one-statement compare-and-sets

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    # the Ed25519 login key (standard base64), set and read only by the accounts plugin
    sa.Column("public_key", sa.String(200), nullable=True, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)


class Accounts:
    """Creates accounts and allocates their update seq atomically."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: set[str] = set()
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._one_statement_cas: dict[Any, Any] = {}  # update statement -> PostgreSQL statement
        # built once: the hottest statement of the server (every update allocates a seq)
        self._next_seq = (
            db.insert(accounts)
            .values(
                id=sa.bindparam("user_id"),
                seq=1,
                created_at=sa.bindparam("created_at"),
                updated_at=sa.bindparam("updated_at"),
            )
            .on_conflict_do_update(index_elements=["id"], set_={"seq": accounts.c.seq + 1})
            .returning(accounts.c.seq)
        )
        count = sa.bindparam("count", type_=sa.BigInteger)
        self._next_seqs = (
            db.insert(accounts)
            .values(
                id=sa.bindparam("user_id"),
                seq=count,
                created_at=sa.bindparam("created_at"),
                updated_at=sa.bindparam("updated_at"),
            )
            .on_conflict_do_update(index_elements=["id"], set_={"seq": accounts.c.seq + count})
            .returning(accounts.c.seq)
        )

    def next_seq_after(self, change: sa.CTE) -> sa.CTE:
        """A CTE that allocates the user's next update seq only if ``change`` returned a row.

        For one-statement writes on PostgreSQL (SQLite has no data-modifying CTEs): put
        ``change`` (an INSERT/UPDATE ... RETURNING as a CTE) and this CTE in one statement and
        run it with :meth:`Database.write_one`; the change and the seq then commit together.
        Bind :meth:`seq_values` with the statement's own values; the CTE's column is ``seq``.
        """
        source = sa.select(
            sa.bindparam("user_id", type_=sa.String),
            sa.literal(1, sa.BigInteger),
            sa.bindparam("created_at", type_=sa.BigInteger),
            sa.bindparam("updated_at", type_=sa.BigInteger),
        ).where(sa.exists(change.select()))
        upsert = (
            postgresql.insert(accounts)
            .from_select(["id", "seq", "created_at", "updated_at"], source)
            .on_conflict_do_update(index_elements=["id"], set_={"seq": accounts.c.seq + 1})
            .returning(accounts.c.seq)
        )
        return upsert.cte("user_seq")

    async def compare_and_set(
        self, user_id: str, update: Any, current: Any, values: dict[str, Any], now: int
    ) -> CasResult:
        """Run a compare-and-set and allocate the user's update seq in the same commit.

        ``update`` is an ``UPDATE ... WHERE <owned by the user and versions match> RETURNING
        <columns>`` (its first returned column never NULL), ``current`` a ``SELECT ... WHERE
        <owned>``; both take their bind parameters from ``values``. Build them once (module
        constants): on PostgreSQL the matching case is one statement (the update and the seq as
        data-modifying CTEs, compiled once per ``update``), on SQLite one unit on the writer.

        Returns CHANGED with the returned row and the user seq when the update matched,
        MISMATCH with the ``current`` row read after the failed attempt when it did not,
        MISSING when the user has no such row.
        """
        if self._db.is_sqlite:

            async def unit(tx: Tx) -> CasResult:
                changed = await tx.fetch_one(update, values)
                if changed is not None:
                    return CasResult.changed(changed, await self.next_seq(user_id, tx))
                row = await tx.fetch_one(current, values)
                return CasResult.missing() if row is None else CasResult.mismatch(row)

            return await self._db.write(unit)
        statement = self._one_statement_cas.get(update)
        if statement is None:
            change = update.cte("change")
            user_seq = self.next_seq_after(change)
            statement = self._one_statement_cas[update] = sa.select(
                *(sa.select(c).scalar_subquery().label(c.name) for c in change.c),
                sa.select(user_seq.c.seq).scalar_subquery().label(_USER_SEQ),
            )
        row = await self._db.write_one(statement, {**values, **self.seq_values(user_id, now)})
        if row is not None and next(iter(row.values())) is not None:
            seq = int(row.pop(_USER_SEQ))
            return CasResult.changed(row, seq)
        now_row = await self._db.fetch_one(current, values)
        return CasResult.missing() if now_row is None else CasResult.mismatch(now_row)

    async def ensure(self, user_id: str) -> None:
        """Create the account ``user_id`` unless it exists."""
        if user_id in self._known:
            return
        now = now_ms()
        stmt = self._db.insert(accounts).values(id=user_id, seq=0, created_at=now, updated_at=now)
        await self._db.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
        self._known.add(user_id)

    async def exists(self, user_id: str) -> bool:
        """True when the account exists (positive answers are cached).

        Concurrent lookups of one user share one query (a reconnect storm of many sockets
        of the same user would otherwise read the same row once per socket).
        """
        if user_id in self._known:
            return True
        pending = self._pending.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[user_id] = future
        try:
            row = await self._db.fetch_one(sa.select(accounts.c.id).where(accounts.c.id == user_id))
            if row is not None:
                self._known.add(user_id)
            future.set_result(row is not None)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) get it too
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._pending[user_id]
        return row is not None

    @staticmethod
    def seq_values(user_id: str, now: int) -> dict[str, Any]:
        """The bind values of the seq statements (``next_seq``, ``next_seq_after``)."""
        return {"user_id": user_id, "created_at": now, "updated_at": now}

    async def next_seqs(self, user_id: str, count: int, tx: Tx) -> list[int]:
        """Allocate ``count`` consecutive update seqs of the user in one statement."""
        if count < 1:
            return []
        values = {**self.seq_values(user_id, now_ms()), "count": count}
        last = int(await tx.fetch_val(self._next_seqs, values))
        return list(range(last - count + 1, last + 1))

    async def next_seq(self, user_id: str, tx: Tx | None = None) -> int:
        """Allocate the user's next update seq (one atomic upsert; creates the account)."""
        values = self.seq_values(user_id, now_ms())
        if tx is not None:
            return int(await tx.fetch_val(self._next_seq, values))
        return int(await self._db.write(lambda t: t.fetch_val(self._next_seq, values)))
