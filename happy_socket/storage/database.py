"""The shared database: `databases` over SQLite (one writer with group commit) or PostgreSQL.

Every write goes through :meth:`Database.write` as an *atomic unit*: an async function that
receives a :class:`~happy_socket.storage.tx.Tx` and runs its statements, committed together.
On SQLite the units run on one long-lived writer connection with group commit
(:mod:`.sqlite`: a batch runs its units back to back, and only when one fails again with a
SAVEPOINT per unit); on PostgreSQL each unit is a transaction on a pooled asyncpg connection,
statements compiled once per shape (:mod:`.postgres`). Reads on SQLite use a separate
aiosqlite connection (WAL lets it read the last commit while the writer works).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import databases
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..compat import databases as db_compat
from ..compat import sqlalchemy as sa_compat
from .postgres import ConnectionTx, pg_reset, plain, row_of
from .sqlite import SQLiteWriter, sync_url
from .tx import Query, Row, T, Tx, Unit, Values

__all__ = ["Database", "Query", "Row", "Tx", "Unit", "Values"]

log = logging.getLogger("happy_socket.storage")


class Database:
    """One database for the whole app; see the module docstring for the write model."""

    def __init__(
        self, url: str, *, pool_size: int = 10, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._memory = self.dialect == "sqlite" and url.split("?")[0].endswith(":memory:")
        options: dict[str, Any] = {}
        if self.dialect == "postgresql":
            options = {"min_size": 1, "max_size": pool_size, "reset": pg_reset}
        self._db = databases.Database(url, **options)
        self._engine: sa.Engine | None = None
        self._sync: sa.Connection | None = None  # the SQLite writer
        self._reader: Any = None  # the SQLite reader (a databases Connection)
        self._writer: SQLiteWriter | None = None
        self._on_batch = on_batch
        self.connected = False

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite."""
        return self.dialect == "sqlite"

    async def connect(self) -> None:
        """Open connections (and the SQLite writer task)."""
        if self.connected:
            return
        sa_compat.check()
        await self._db.connect()
        if self.is_sqlite:
            self._sync = self._open_writer()
            shared = not self._memory and db_compat.check(self._db)
            self._reader = await self._open_reader() if shared else None
            self._writer = SQLiteWriter(self._sync, self._on_batch)
            self._writer.start()
        else:
            await self._db.fetch_one("SELECT 1")
        self.connected = True

    def _open_writer(self) -> sa.Connection:
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}  # we BEGIN/COMMIT ourselves
        if self._memory:
            options["poolclass"] = sa.pool.StaticPool
        self._engine = sa.create_engine(sync_url(self.url), **options)
        conn = self._engine.connect()
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        # 0: a locked database must not block the event loop; _begin waits asynchronously
        conn.exec_driver_sql("PRAGMA busy_timeout=0")
        return conn

    async def _open_reader(self) -> Any:
        conn = await db_compat.open_connection(self._db)
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def disconnect(self) -> None:
        """Finish queued writes, then close everything."""
        if not self.connected:
            return
        self.connected = False
        if self._writer is not None:
            await self._writer.stop()
        if self._reader is not None:
            await db_compat.close_connection(self._reader)
        if self._sync is not None:
            self._sync.close()
        if self._engine is not None:
            self._engine.dispose()
        self._reader = self._sync = self._engine = None
        await self._db.disconnect()

    # -- reads ---------------------------------------------------------------

    async def fetch_one(self, query: Query, values: Values = None) -> Row | None:
        """Read the first row of ``query``."""
        rows = await self._read(query, values, many=False)
        return rows[0] if rows else None

    async def fetch_all(self, query: Query, values: Values = None) -> list[Row]:
        """Read all rows of ``query``."""
        return await self._read(query, values, many=True)

    async def fetch_val(self, query: Query, values: Values = None) -> Any:
        """Read the first column of the first row of ``query``."""
        row = await self.fetch_one(query, values)
        return None if row is None else next(iter(row.values()))

    async def _read(self, query: Query, values: Values, many: bool) -> list[Row]:
        if self.is_sqlite and self._reader is None:  # :memory:, or no reader (compat)
            return await self.write(lambda tx: tx.fetch_all(query, values))
        if self._reader is not None:
            query, bound = plain(query, values)
            if many:
                return [dict(r._mapping) for r in await self._reader.fetch_all(query, bound)]
            row = row_of(await self._reader.fetch_one(query, bound))
            return [] if row is None else [row]
        return await self._pooled(query, values, many)

    async def _pooled(self, query: Query, values: Values, many: bool) -> list[Row]:
        """One statement on a pooled connection, outside any transaction (PostgreSQL)."""
        async with self._db.connection() as conn:
            return await ConnectionTx(conn, self.dialect)._fetch(query, values, many)

    # -- writes --------------------------------------------------------------

    @property
    def batch_sizes(self) -> list[int]:
        """Recent SQLite group-commit sizes (for tests and the bench)."""
        return [] if self._writer is None else self._writer.batch_sizes

    @property
    def writes_in_order(self) -> bool:
        """True when units run one at a time in the order they were queued (the SQLite writer)."""
        return self.is_sqlite and self.connected

    def submit(self, unit: Unit[T]) -> asyncio.Future[T]:
        """Queue ``unit`` on the SQLite writer now; the future resolves after its commit.

        Units submitted one after another run in that order. SQLite only
        (:attr:`writes_in_order`); elsewhere use :meth:`write`.
        """
        if not self.writes_in_order or self._writer is None:
            raise RuntimeError("submit() needs the SQLite writer; use write()")
        return self._writer.submit(unit)

    async def write(self, unit: Unit[T]) -> T:
        """Run ``unit(tx)`` atomically and return its result once it is committed."""
        if not self.connected:
            raise RuntimeError("database is not connected")
        if not self.is_sqlite:
            # asyncpg's own transaction, not ``conn.transaction()``: a task cancelled during
            # BEGIN or COMMIT there leaves the pooled connection checked out for good, and
            # closing the pool (shutdown) then waits forever.
            async with self._db.connection() as conn, conn.raw_connection.transaction():
                return await unit(ConnectionTx(conn, self.dialect))
        assert self._writer is not None
        return await self._writer.submit(unit)

    async def write_one(self, query: Query, values: Values = None) -> Row | None:
        """Run one write statement atomically and return its first row (or None).

        On PostgreSQL the statement runs alone in autocommit: one round trip instead of
        BEGIN, statement, COMMIT — a single statement is atomic, data-modifying CTEs included,
        and an error inside it undoes all of it. On SQLite it is a unit on the writer.
        """
        if self.is_sqlite:
            return await self.write(lambda tx: tx.fetch_one(query, values))
        if not self.connected:
            raise RuntimeError("database is not connected")
        rows = await self._pooled(query, values, many=False)
        return rows[0] if rows else None

    async def execute(self, query: Query, values: Values = None) -> None:
        """Run one write statement as its own unit."""
        await self.write(lambda tx: tx.execute(query, values))

    # -- helpers -------------------------------------------------------------

    def insert(self, table: Any) -> Any:
        """A dialect insert that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    @property
    def sa_dialect(self) -> Any:
        """The SQLAlchemy dialect for compiling DDL."""
        return sqlite.dialect() if self.is_sqlite else postgresql.dialect()  # type: ignore[no-untyped-call]

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the database answers a trivial query within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                if self.is_sqlite:
                    await self.write(lambda tx: tx.fetch_val("SELECT 1"))
                else:
                    await self._db.fetch_one("SELECT 1")
            return True
        except Exception:
            return False
