"""Tripwires for the `databases` internals happy-socket relies on (happy_socket.compat.databases),
and its public path: SQLite reads on the writer connection."""

from __future__ import annotations

import asyncio
import logging

import databases
import pytest
import sqlalchemy as sa

from happy_socket.compat import databases as db_compat
from happy_socket.storage import Database


def test_the_installed_release_has_every_internal(sqlite_url: str) -> None:
    assert db_compat.missing(databases.Database(sqlite_url)) == []


async def test_a_connection_built_by_hand_serves_every_task(sqlite_url: str) -> None:
    db = databases.Database(sqlite_url)
    await db.connect()
    conn = await db_compat.open_connection(db)
    try:
        await conn.execute("CREATE TABLE t (v INTEGER)")

        async def read(i: int) -> int:
            row = await conn.fetch_one(sa.text("SELECT :i + count(*) AS n FROM t").bindparams(i=i))
            return int(row._mapping["n"])

        # tasks other than the opener share it; it is not the per-task connection
        assert await asyncio.gather(*(read(i) for i in range(5))) == [0, 1, 2, 3, 4]
        assert await asyncio.create_task(_task_connection(db)) is not conn
        assert conn.raw_connection is not None
    finally:
        await db_compat.close_connection(conn)
        await db.disconnect()


async def _task_connection(db: databases.Database) -> object:
    return db.connection()


async def test_the_sqlite_reader_is_that_connection(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.connect()
    try:
        assert db._reader is not None
        await db.execute("CREATE TABLE t (v INTEGER)")
        await db.execute("INSERT INTO t VALUES (1)")
        batches = len(db.batch_sizes)
        assert await db.fetch_val("SELECT sum(v) FROM t") == 1
        assert len(db.batch_sizes) == batches  # read beside the writer, not through it
    finally:
        await db.disconnect()


def test_a_changed_constructor_is_found(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def changed(self: object, database: object, backend: object, extra: object) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(databases.core.Connection, "__init__", changed)
    caplog.set_level(logging.WARNING, logger="happy_socket.compat")
    assert db_compat.check(databases.Database(sqlite_url)) is False
    assert "databases.core.Connection" in caplog.text and "writer connection" in caplog.text


async def test_missing_internals_read_on_the_writer_and_say_so(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db_compat, "missing", lambda db: ["Database._backend.connection()"])

    async def never(db: object) -> None:
        raise AssertionError("a connection was built by hand")

    monkeypatch.setattr(db_compat, "open_connection", never)
    caplog.set_level(logging.WARNING, logger="happy_socket.compat")
    db = Database(sqlite_url)
    await db.connect()
    try:
        assert db._reader is None
        assert len([r for r in caplog.records if "writer connection" in r.getMessage()]) == 1
        await db.execute("CREATE TABLE t (v INTEGER)")
        await db.write(lambda tx: tx.execute("INSERT INTO t VALUES (:v)", {"v": 7}))
        batches = len(db.batch_sizes)
        assert await db.fetch_all("SELECT v FROM t") == [{"v": 7}]
        assert await db.fetch_one(sa.text("SELECT v FROM t WHERE v = :v"), {"v": 7}) == {"v": 7}
        assert len(db.batch_sizes) == batches + 2  # each read was a unit on the writer
    finally:
        await db.disconnect()
