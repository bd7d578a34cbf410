"""SQLite: one long-lived synchronous writer connection with group commit.

Units queue on :class:`SQLiteWriter`; whatever queued while the previous commit ran is
committed together (up to ``MAX_BATCH``). The units of a batch run back to back without
savepoints; when one raises, the batch is rolled back and runs again with each unit in its
own SAVEPOINT, so only the failing unit is lost. Futures resolve after COMMIT, in queue order.
A unit must only talk to the database: awaiting anything else stalls the writer.

The connection is a plain synchronous SQLAlchemy connection (pysqlite, WAL,
synchronous=NORMAL) used on the event loop's thread; prebuilt statements that need no type
conversion run straight on the sqlite3 cursor (:class:`SyncTx`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql import ClauseElement

from ..compat import sqlalchemy as sa_compat
from .tx import Query, Row, T, Tx, Unit, Values

log = logging.getLogger("happy_socket.storage")

MAX_BATCH = 256
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another process's write lock


def sync_url(url: str) -> str:
    """The ``databases`` SQLite URL as a SQLAlchemy (pysqlite) URL."""
    return "sqlite://" + url.split("://", 1)[1]


class _Plain:
    """A prebuilt statement compiled for pysqlite, when it needs no type conversions."""

    __slots__ = ("compiled", "keys", "query")

    def __init__(self, query: ClauseElement, compiled: Any, keys: list[str]) -> None:
        self.query = query  # keeps the statement alive while its id() is a cache key
        self.compiled = compiled
        self.keys = keys


def plain_sqlite(query: ClauseElement, dialect: Any) -> _Plain | None:
    """``query`` compiled once for the raw sqlite3 cursor, or None when SQLAlchemy must run it.

    Only statements whose bound parameters and result columns need no conversion (integers,
    text, NULL; not booleans, dates or JSON) qualify; the rest keep SQLAlchemy's execution.
    """
    if not sa_compat.enabled():
        return None
    compiled: Any = query.compile(dialect=dialect)
    if sa_compat.converts_binds(compiled):
        return None
    keys = sa_compat.result_columns(compiled, dialect)
    if keys is None:
        return None
    return _Plain(query, compiled, keys)


class SyncTx:
    """A :class:`~happy_socket.storage.tx.Tx` over the synchronous SQLite writer (never suspends).

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
            plain = self._plain[key] = plain_sqlite(query, self._sync.dialect)
        if plain is None:
            return None
        compiled = plain.compiled
        args = sa_compat.positional_args(compiled, dict(values))
        cursor = self._sync.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.string, args)
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


class SQLiteWriter:
    """The writer task and its queue of units (see the module docstring)."""

    def __init__(self, conn: sa.Connection, on_batch: Callable[[int], None] | None = None) -> None:
        self._sync = conn
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Unit[Any], asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # recent group-commit sizes, for tests

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    async def stop(self) -> None:
        """Run what is queued, then stop."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None

    def submit(self, unit: Unit[T]) -> asyncio.Future[T]:
        """Queue ``unit`` now; the future resolves after its commit."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((unit, future))
        return future

    async def _write_loop(self) -> None:
        tx = SyncTx(self._sync)
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
                settle_error(fut, exc)
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
            settle_error(fut, error)

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


def settle_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
