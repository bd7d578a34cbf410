"""The shared database: `databases` over SQLite (one writer with group commit) or PostgreSQL.

Every write goes through :meth:`Database.write` as an *atomic unit*: an async function
that receives a :class:`Tx` and runs its statements. On SQLite one long-lived writer
connection runs the units; whatever queued while the previous commit ran is committed
together (group commit), each unit inside its own SAVEPOINT so one failing unit rolls
back alone. On PostgreSQL each unit is a transaction on a pooled connection.
A unit must only talk to the database: awaiting anything else stalls the SQLite writer.

The SQLite writer is a plain synchronous SQLAlchemy connection (pysqlite, WAL,
synchronous=NORMAL) used on the event loop's thread: a statement costs ~0.1 ms there
(SQLAlchemy's compiled cache, no thread hop), against ~0.5 ms through `databases` +
aiosqlite (a fresh compile and a thread round trip per statement). A unit's statements
therefore run without yielding to the loop; the batch commits, then the futures resolve,
so acks and broadcasts still follow the commit. Reads use a separate aiosqlite connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import databases
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import ClauseElement

log = logging.getLogger("happy_socket.storage")

T = TypeVar("T")
Query = ClauseElement | str
Row = dict[str, Any]
Unit = Callable[["Tx"], Awaitable[T]]

MAX_BATCH = 256
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another process's write lock (SQLite)


Values = Mapping[str, Any] | None
_PG_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
_PG_CACHE_SIZE = 2000
_pg_compiled: dict[Any, Any] = {}


def _row(record: Any) -> Row | None:
    return None if record is None else dict(record._mapping)


def _pg_statement(query: ClauseElement, values: Values) -> tuple[str, list[Any]] | None:
    """``query`` as asyncpg SQL and arguments, compiled once per statement shape.

    SQLAlchemy's cache key identifies statements that differ only in their literal values;
    each shape is compiled once (``databases`` compiles every execution). None when the
    statement cannot be cached (expanding IN lists and the like): use ``databases`` then.
    """
    key = query._generate_cache_key()
    if key is None:
        return None
    compiled: Any = _pg_compiled.get(key.key)
    if compiled is None:
        compiled = _PG_DIALECT.statement_compiler(_PG_DIALECT, query, cache_key=key)
        if compiled.post_compile_params or compiled.literal_execute_params:
            compiled = False
        if len(_pg_compiled) >= _PG_CACHE_SIZE:
            _pg_compiled.clear()
        _pg_compiled[key.key] = compiled
    if compiled is False:
        return None
    params = compiled.construct_params(
        params=values, extracted_parameters=key.bindparams, escape_names=False
    )
    procs = compiled._bind_processors
    args = [procs[n](params[n]) if n in procs else params[n] for n in compiled.positiontup]
    return compiled.string, args


def _plain(query: Query, values: Values) -> tuple[Query, dict[str, Any] | None]:
    """``query`` and ``values`` the way ``databases`` takes them (it binds values to text only)."""
    if values is None:
        return query, None
    if isinstance(query, str):
        return query, dict(values)
    return query.params(dict(values)), None


class Tx:
    """Statements inside one atomic unit of work.

    Every method takes an optional ``values`` mapping for ``sa.bindparam(name)``
    placeholders: build a hot statement once at import time and pass its values per call,
    which skips rebuilding (and on PostgreSQL recompiling) it.
    """

    def __init__(self, conn: databases.core.Connection, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect

    async def _fetch(self, query: Query, values: Values, many: bool) -> list[Row]:
        stmt = None if isinstance(query, str) else _pg_statement(query, values)
        if stmt is None:
            query, plain = _plain(query, values)
            if many:
                return [dict(r._mapping) for r in await self._conn.fetch_all(query, plain)]
            row = _row(await self._conn.fetch_one(query, plain))
            return [] if row is None else [row]
        raw = self._conn.raw_connection
        if many:
            return [dict(r) for r in await raw.fetch(stmt[0], *stmt[1])]
        record = await raw.fetchrow(stmt[0], *stmt[1])
        return [] if record is None else [dict(record)]

    async def fetch_one(self, query: Query, values: Values = None) -> Row | None:
        """The first row of ``query`` as a dict, or None."""
        rows = await self._fetch(query, values, many=False)
        return rows[0] if rows else None

    async def fetch_all(self, query: Query, values: Values = None) -> list[Row]:
        """All rows of ``query`` as dicts."""
        return await self._fetch(query, values, many=True)

    async def fetch_val(self, query: Query, values: Values = None) -> Any:
        """The first column of the first row, or None."""
        row = await self.fetch_one(query, values)
        return None if row is None else next(iter(row.values()))

    async def execute(self, query: Query, values: Values = None) -> None:
        """Run ``query``; use ``.returning(...)`` with fetch_* to learn what it changed."""
        stmt = None if isinstance(query, str) else _pg_statement(query, values)
        if stmt is None:
            await self._conn.execute(*_plain(query, values))
        else:
            await self._conn.raw_connection.execute(stmt[0], *stmt[1])


class _Plain:
    """A prebuilt statement compiled for pysqlite, when it needs no type conversions."""

    __slots__ = ("compiled", "keys", "query")

    def __init__(self, query: ClauseElement, compiled: Any, keys: list[str]) -> None:
        self.query = query  # keeps the statement alive while its id() is a cache key
        self.compiled = compiled
        self.keys = keys


def _plain_sqlite(query: ClauseElement, dialect: Any) -> _Plain | None:
    """``query`` compiled once for the raw sqlite3 cursor, or None when SQLAlchemy must run it.

    Only statements whose bound parameters and result columns need no conversion (integers,
    text, NULL; not booleans, dates or JSON) qualify; the rest keep SQLAlchemy's execution.
    """
    compiled: Any = query.compile(dialect=dialect)
    if compiled._bind_processors or not compiled.positional or compiled.post_compile_params:
        return None
    keys = []
    for column in compiled._result_columns:
        if column.type._cached_result_processor(dialect, None) is not None:
            return None
        keys.append(column.keyname)
    return _Plain(query, compiled, keys)


class _SyncTx(Tx):
    """A :class:`Tx` over the synchronous SQLite writer connection (never suspends).

    Prebuilt statements run with ``values`` go straight to the sqlite3 cursor when they need
    no type conversions (compiled once; SQLAlchemy's execution layer cost ~16 us per statement).
    """

    def __init__(self, conn: sa.Connection) -> None:
        self._sync = conn
        self.dialect = "sqlite"
        self._plain: dict[int, _Plain | None] = {}

    def _run(self, query: Query, values: Values) -> sa.CursorResult[Any]:
        if isinstance(query, str):
            if values is None:
                return self._sync.exec_driver_sql(query)
            return self._sync.execute(sa.text(query), dict(values))
        return self._sync.execute(
            cast(sa.Executable, query), None if values is None else dict(values)
        )

    def _raw(self, query: Query, values: Values) -> list[Row] | None:
        """Rows of a prebuilt statement run on the sqlite3 cursor, or None (not eligible)."""
        if values is None or isinstance(query, str):
            return None
        key = id(query)
        plain = self._plain.get(key)
        if key not in self._plain or (plain is not None and plain.query is not query):
            if len(self._plain) >= 1000:
                self._plain.clear()
            plain = self._plain[key] = _plain_sqlite(query, self._sync.dialect)
        if plain is None:
            return None
        compiled = plain.compiled
        params = compiled.construct_params(dict(values), escape_names=False)
        cursor = self._sync.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.string, [params[n] for n in compiled.positiontup])
            if not plain.keys:
                return []
            return [dict(zip(plain.keys, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    async def fetch_one(self, query: Query, values: Values = None) -> Row | None:
        rows = self._raw(query, values)
        if rows is not None:
            return rows[0] if rows else None
        row = self._run(query, values).first()
        return None if row is None else dict(row._mapping)

    async def fetch_all(self, query: Query, values: Values = None) -> list[Row]:
        rows = self._raw(query, values)
        if rows is not None:
            return rows
        return [dict(r._mapping) for r in self._run(query, values).all()]

    async def fetch_val(self, query: Query, values: Values = None) -> Any:
        rows = self._raw(query, values)
        if rows is not None:
            return next(iter(rows[0].values())) if rows else None
        row = self._run(query, values).first()
        return None if row is None else row[0]

    async def execute(self, query: Query, values: Values = None) -> None:
        if self._raw(query, values) is None:
            self._run(query, values).close()


def _sync_url(url: str) -> str:
    """The ``databases`` SQLite URL as a SQLAlchemy (pysqlite) URL."""
    return "sqlite://" + url.split("://", 1)[1]


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
            options = {"min_size": 1, "max_size": pool_size, "reset": _pg_reset}
        self._db = databases.Database(url, **options)
        self._engine: sa.Engine | None = None
        self._sync: sa.Connection | None = None  # the SQLite writer
        self._reader: databases.core.Connection | None = None
        self._queue: asyncio.Queue[tuple[Unit[Any], asyncio.Future[Any]] | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # recent group-commit sizes, for tests
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
        await self._db.connect()
        if self.is_sqlite:
            self._sync = self._open_writer()
            self._reader = None if self._memory else await self._open_sqlite()
            self._queue = asyncio.Queue()
            self._writer_task = asyncio.create_task(self._write_loop(), name="sqlite-writer")
        else:
            await self._db.fetch_one("SELECT 1")
        self.connected = True

    def _open_writer(self) -> sa.Connection:
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}  # we BEGIN/COMMIT ourselves
        if self._memory:
            options["poolclass"] = sa.pool.StaticPool
        self._engine = sa.create_engine(_sync_url(self.url), **options)
        conn = self._engine.connect()
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        # 0: a locked database must not block the event loop; _begin waits asynchronously
        conn.exec_driver_sql("PRAGMA busy_timeout=0")
        return conn

    async def _open_sqlite(self) -> databases.core.Connection:
        conn = databases.core.Connection(self._db, self._db._backend)
        await conn.__aenter__()
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def disconnect(self) -> None:
        """Finish queued writes, then close everything."""
        if not self.connected:
            return
        self.connected = False
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        if self._reader is not None:
            await self._reader.__aexit__(None, None, None)
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
        if self._memory:
            return await self.write(lambda tx: tx.fetch_all(query, values))
        if self._reader is not None:
            query, plain = _plain(query, values)
            if many:
                return [dict(r._mapping) for r in await self._reader.fetch_all(query, plain)]
            row = _row(await self._reader.fetch_one(query, plain))
            return [] if row is None else [row]
        return await self._pooled(query, values, many)

    async def _pooled(self, query: Query, values: Values, many: bool) -> list[Row]:
        """One statement on a pooled connection, outside any transaction (PostgreSQL)."""
        async with self._db.connection() as conn:
            return await Tx(conn, self.dialect)._fetch(query, values, many)

    # -- writes --------------------------------------------------------------

    @property
    def writes_in_order(self) -> bool:
        """True when units run one at a time in the order they were queued (the SQLite writer)."""
        return self.is_sqlite and self.connected

    def submit(self, unit: Unit[T]) -> asyncio.Future[T]:
        """Queue ``unit`` on the SQLite writer now; the future resolves after its commit.

        Units submitted one after another run in that order. SQLite only
        (:attr:`writes_in_order`); elsewhere use :meth:`write`.
        """
        if not self.writes_in_order:
            raise RuntimeError("submit() needs the SQLite writer; use write()")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((unit, future))
        return future

    async def write(self, unit: Unit[T]) -> T:
        """Run ``unit(tx)`` atomically and return its result once it is committed."""
        if not self.connected:
            raise RuntimeError("database is not connected")
        if not self.is_sqlite:
            # asyncpg's own transaction, not ``conn.transaction()``: a task cancelled during
            # BEGIN or COMMIT there leaves the pooled connection checked out for good, and
            # closing the pool (shutdown) then waits forever.
            async with self._db.connection() as conn, conn.raw_connection.transaction():
                return await unit(Tx(conn, self.dialect))
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((unit, future))
        return await future

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

    async def _write_loop(self) -> None:
        assert self._sync is not None
        tx = _SyncTx(self._sync)
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if (self.batch_sizes and self.batch_sizes[-1] > 1) or not self._queue.empty():
                # under load, one event-loop round before draining: the handlers of frames
                # read in the same round queue their units too (a 4-sender flood: batches of
                # 2 -> 4, -10 % CPU per message); when idle, no added latency
                await asyncio.sleep(0)
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._run_batch(tx, batch)
            if stop:
                return

    async def _run_batch(self, tx: Tx, batch: list[tuple[Unit[Any], asyncio.Future[Any]]]) -> None:
        """Run ``batch`` in one transaction and resolve its futures after COMMIT.

        Optimistic first: the units run back to back without savepoints. If one raises, the
        transaction is rolled back and the batch runs again with each unit in its own
        SAVEPOINT, so the failing unit rolls back alone (failures are rare; savepoints cost
        two statements per unit).
        """
        assert self._sync is not None
        conn = _Raw(self._sync)
        if not await self._open(conn, batch):
            return
        done, failed = await self._run_units(conn, tx, batch, isolate=False)
        if failed:
            await self._rollback(conn)
            if len(batch) == 1:
                self._finish(batch, [], failed)
                return
            if not await self._open(conn, batch):
                return
            done, failed = await self._run_units(conn, tx, batch, isolate=True)
        try:
            await conn.execute("COMMIT")
        except Exception as commit_error:
            log.exception("group commit of %d units failed", len(batch))
            await self._rollback(conn)
            failed.extend((fut, commit_error) for fut, _ in done)
            done = []
        self._finish(batch, done, failed)

    async def _open(self, conn: _Raw, batch: list[tuple[Unit[Any], asyncio.Future[Any]]]) -> bool:
        try:
            await self._begin(conn)
        except Exception as exc:  # the database itself is unusable
            for _, fut in batch:
                _settle_error(fut, exc)
            return False
        return True

    @staticmethod
    async def _rollback(conn: _Raw) -> None:
        try:
            await conn.execute("ROLLBACK")
        except Exception:  # pragma: no cover - connection broken
            log.exception("rollback failed")

    @staticmethod
    async def _run_units(
        conn: _Raw, tx: Tx, batch: list[tuple[Unit[Any], asyncio.Future[Any]]], *, isolate: bool
    ) -> tuple[
        list[tuple[asyncio.Future[Any], Any]], list[tuple[asyncio.Future[Any], BaseException]]
    ]:
        """Run the units; without ``isolate`` stop at the first failure (the caller rolls back)."""
        done: list[tuple[asyncio.Future[Any], Any]] = []
        failed: list[tuple[asyncio.Future[Any], BaseException]] = []
        for index, (unit, fut) in enumerate(batch):
            savepoint = f"u{index}"
            try:
                if isolate:
                    await conn.execute(f"SAVEPOINT {savepoint}")
                result = await unit(tx)
                if isolate:
                    await conn.execute(f"RELEASE {savepoint}")
                done.append((fut, result))
            except Exception as exc:
                failed.append((fut, exc))
                if not isolate:
                    return [], failed
                try:
                    await conn.execute(f"ROLLBACK TO {savepoint}")
                    await conn.execute(f"RELEASE {savepoint}")
                except Exception:  # pragma: no cover - connection broken
                    log.exception("rollback of a failed unit failed")
        return done, failed

    def _finish(
        self,
        batch: list[tuple[Unit[Any], asyncio.Future[Any]]],
        done: list[tuple[asyncio.Future[Any], Any]],
        failed: list[tuple[asyncio.Future[Any], BaseException]],
    ) -> None:
        self.batch_sizes.append(len(batch))
        if self._on_batch is not None:
            self._on_batch(len(batch))
        if len(self.batch_sizes) > 1000:
            del self.batch_sizes[:500]
        for fut, result in done:
            if not fut.done():
                fut.set_result(result)
        for fut, error in failed:
            _settle_error(fut, error)

    @staticmethod
    async def _begin(conn: _Raw) -> None:
        """BEGIN IMMEDIATE; while another process holds the write lock, retry with
        asyncio sleeps (up to BUSY_TIMEOUT_S) so the event loop keeps serving."""
        deadline: float | None = None
        delay = 0.001
        while True:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                return
            except Exception as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    # a transaction left open by a failed COMMIT/ROLLBACK: close it, try again
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK")
                    await conn.execute("BEGIN IMMEDIATE")
                    return
                now = asyncio.get_running_loop().time()
                if deadline is None:
                    if conn.busy_timeout_ms() > 0:  # SQLite's own busy handler already waited
                        raise
                    deadline = now + BUSY_TIMEOUT_S
                if now >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

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


class _Raw:
    """Plain SQL on the synchronous writer connection, awaitable like `databases`."""

    __slots__ = ("_conn", "_dbapi")

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._dbapi: Any = conn.connection.dbapi_connection  # the sqlite3 connection

    async def execute(self, sql: str) -> None:
        self._dbapi.execute(sql).close()

    def busy_timeout_ms(self) -> int:
        return int(self._conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)


async def _pg_reset(conn: Any) -> None:
    """Return a connection to the pool without asyncpg's default reset round trip.

    The default runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release (one more round trip per unit of work); units only run transactions, which end
    with COMMIT or ROLLBACK and leave no session state behind.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _settle_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
