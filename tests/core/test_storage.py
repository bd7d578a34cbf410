"""Storage on SQLite and PostgreSQL: atomic units, group commit, seq allocation, CAS, schema."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from happy_socket import CasResult, Settings, Tx, create_app
from happy_socket.app import App
from happy_socket.storage import Database, current_versions

counters = sa.Table(
    "test_counters",
    sa.MetaData(),
    sa.Column("id", sa.String(50), primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)


class CounterPlugin:
    from happy_socket import hookimpl

    @hookimpl
    def register_tables(self, metadata: sa.MetaData) -> None:
        counters.to_metadata(metadata)


@pytest.fixture
async def app(db_url: str) -> Any:
    app = create_app(
        Settings(db=db_url, secret="s" * 32),
        plugins=[("counter", CounterPlugin())],
        load_entry_points=False,
    )
    await app.startup()
    for user in ("alice", "bob"):  # a seq is allocated only to an existing account
        await app.accounts.ensure(user)
    yield app
    await app.shutdown()


async def test_schema_versions_recorded(app: App) -> None:
    assert await current_versions(app.db) == {"core": 1, "counter": 1}


async def test_seq_allocation_is_atomic_and_gapless_under_concurrency(app: App) -> None:
    seqs = await asyncio.gather(*(app.accounts.next_seq("alice") for _ in range(300)))
    assert sorted(seqs) == list(range(1, 301))
    assert await app.accounts.next_seq("bob") == 1


async def test_seq_inside_a_unit_rolls_back_with_it(app: App) -> None:
    assert await app.accounts.next_seq("alice") == 1

    async def unit(tx: Tx) -> None:
        await app.accounts.next_seq("alice", tx)
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await app.db.write(unit)
    assert await app.accounts.next_seq("alice") == 2


async def test_failing_units_roll_back_alone(app: App) -> None:
    async def unit(i: int) -> int:
        async def work(tx: Tx) -> int:
            await tx.execute(counters.insert().values(id=f"c{i}", value=i, version=0))
            if i % 5 == 0:
                raise ValueError(i)
            return i

        return await app.db.write(work)

    results = await asyncio.gather(*(unit(i) for i in range(60)), return_exceptions=True)
    failed = {r.args[0] for r in results if isinstance(r, ValueError)}
    assert failed == set(range(0, 60, 5))
    rows = await app.db.fetch_all(sa.select(counters.c.id))
    assert {r["id"] for r in rows} == {f"c{i}" for i in range(60) if i % 5}


async def test_compare_and_set_has_exactly_one_winner(app: App) -> None:
    await app.db.execute(counters.insert().values(id="x", value=0, version=0))

    async def cas(i: int) -> bool:
        stmt = (
            counters.update()
            .where(counters.c.id == "x", counters.c.version == 0)
            .values(value=i, version=counters.c.version + 1)
            .returning(counters.c.version)
        )
        return await app.db.write(lambda tx: tx.fetch_one(stmt)) is not None

    wins = await asyncio.gather(*(cas(i) for i in range(16)))
    assert wins.count(True) == 1
    row = await app.db.fetch_one(sa.select(counters).where(counters.c.id == "x"))
    assert row is not None and row["version"] == 1


async def test_read_after_write_is_visible(app: App) -> None:
    await app.db.execute(counters.insert().values(id="r", value=7, version=0))
    assert await app.db.fetch_val(sa.select(counters.c.value).where(counters.c.id == "r")) == 7


async def test_insert_on_conflict_helpers(app: App) -> None:
    stmt = app.db.insert(counters).values(id="u", value=1, version=0)
    await app.db.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
    await app.db.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
    upsert = app.db.insert(counters).values(id="u", value=5, version=0)
    await app.db.execute(upsert.on_conflict_do_update(index_elements=["id"], set_={"value": 5}))
    assert await app.db.fetch_val(sa.select(counters.c.value).where(counters.c.id == "u")) == 5


async def test_ping(app: App) -> None:
    assert await app.db.ping() is True


async def test_sqlite_group_commit_batches_under_load(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.connect()
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    await asyncio.gather(*(db.execute(f"INSERT INTO t (v) VALUES ({i})") for i in range(500)))
    assert await db.fetch_val("SELECT COUNT(*) FROM t") == 500
    assert max(db.batch_sizes) > 1  # units that queued while a commit ran were committed together
    # queued writes are finished before disconnect returns
    pending = [asyncio.ensure_future(db.execute("INSERT INTO t (v) VALUES (0)")) for _ in range(50)]
    await asyncio.sleep(0)
    await db.disconnect()
    await asyncio.gather(*pending)
    db2 = Database(sqlite_url)
    await db2.connect()
    assert await db2.fetch_val("SELECT COUNT(*) FROM t") == 550
    await db2.disconnect()


async def test_sqlite_reads_do_not_wait_for_the_writer(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.connect()
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    started = asyncio.Event()
    release = asyncio.Event()

    async def long_unit(tx: Tx) -> None:
        await tx.execute("INSERT INTO t (id) VALUES (1)")
        started.set()
        await release.wait()

    writer = asyncio.ensure_future(db.write(long_unit))
    await started.wait()
    # the reader sees the last committed state while the writer holds its transaction
    assert await asyncio.wait_for(db.fetch_val("SELECT COUNT(*) FROM t"), 2) == 0
    release.set()
    await writer
    assert await db.fetch_val("SELECT COUNT(*) FROM t") == 1
    await db.disconnect()


async def test_memory_database_works(tmp_path: Any) -> None:
    db = Database("sqlite:///:memory:")
    await db.connect()
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    await db.execute("INSERT INTO t (id) VALUES (1)")
    assert await db.fetch_val("SELECT COUNT(*) FROM t") == 1
    await db.disconnect()


async def test_write_one_runs_a_statement_atomically(app: App) -> None:
    await app.db.execute(counters.insert().values(id="w", value=1, version=0))
    row = await app.db.write_one(
        counters.update()
        .where(counters.c.id == "w")
        .values(value=counters.c.value + 1)
        .returning(counters.c.value)
    )
    assert row == {"value": 2}
    missing = counters.update().where(counters.c.id == "nope").values(value=0)
    assert await app.db.write_one(missing.returning(counters.c.value)) is None


async def test_next_seq_after_allocates_only_with_the_change(pg_url: str) -> None:
    app = create_app(
        Settings(db=pg_url, secret="s" * 32),
        plugins=[("counter", CounterPlugin())],
        load_entry_points=False,
    )
    await app.startup()
    try:
        await app.accounts.ensure("carol")
        await app.db.execute(counters.insert().values(id="c", value=0, version=0))
        change = (
            counters.update()
            .where(counters.c.id == "c", counters.c.version == sa.bindparam("expected"))
            .values(version=counters.c.version + 1)
            .returning(counters.c.version)
            .cte("change")
        )
        seq = app.accounts.next_seq_after(change)
        statement = sa.select(
            sa.select(*change.c).scalar_subquery().label("version"),
            sa.select(seq.c.seq).scalar_subquery().label("seq"),
        )
        values = {"user_id": "carol", "created_at": 1, "updated_at": 1}
        assert await app.db.write_one(statement, {**values, "expected": 0}) == {
            "version": 1,
            "seq": 1,
        }
        # no change, no seq
        assert await app.db.write_one(statement, {**values, "expected": 0}) == {
            "version": None,
            "seq": None,
        }
        assert await app.db.write_one(statement, {**values, "expected": 1}) == {
            "version": 2,
            "seq": 2,
        }
        # an error anywhere in the statement undoes all of it
        failing = sa.select(
            sa.select(*change.c).scalar_subquery().label("version"),
            sa.select(seq.c.seq).scalar_subquery().label("seq"),
            # zero only once the change ran (not foldable when the statement is planned)
            (
                sa.literal(1)
                / (sa.select(sa.func.count()).select_from(change).scalar_subquery() - 1)
            ).label("boom"),
        )
        with pytest.raises(Exception, match="division by zero"):
            await app.db.write_one(failing, {**values, "expected": 2})
        assert await app.accounts.next_seq("carol") == 3
        version = await app.db.fetch_val(sa.select(counters.c.version).where(counters.c.id == "c"))
        assert version == 2
    finally:
        await app.shutdown()


_CAS_UPDATE = (
    counters.update()
    .where(counters.c.id == sa.bindparam("b_id"), counters.c.version == sa.bindparam("b_expected"))
    .values(value=sa.bindparam("b_value"), version=counters.c.version + 1)
    .returning(counters.c.version, counters.c.value)
)
_CAS_CURRENT = sa.select(counters.c.value, counters.c.version).where(
    counters.c.id == sa.bindparam("b_id")
)


async def test_accounts_compare_and_set_outcomes_and_seq(app: App) -> None:
    await app.db.execute(counters.insert().values(id="x", value=0, version=0))
    seq_before = await app.accounts.next_seq("alice")

    async def cas(expected: int, value: int, row_id: str = "x") -> Any:
        values = {"b_id": row_id, "b_expected": expected, "b_value": value}
        return await app.accounts.compare_and_set("alice", _CAS_UPDATE, _CAS_CURRENT, values, 1)

    assert await cas(0, 7) == CasResult.changed({"version": 1, "value": 7}, seq_before + 1)
    # mismatch: the current row, no seq
    assert await cas(0, 8) == CasResult.mismatch({"value": 7, "version": 1})
    assert await cas(0, 8, row_id="nope") == CasResult.missing()
    # racing writers on one version: one winner, one seq each success, no seq for the others
    results = await asyncio.gather(*(cas(1, i) for i in range(8)))
    winners = [r for r in results if r.is_changed]
    assert len(winners) == 1 and winners[0].seq == seq_before + 2
    assert all(r.is_mismatch and r.seq is None for r in results if not r.is_changed)
    assert await app.accounts.next_seq("alice") == seq_before + 3


async def test_a_newer_schema_refuses_older_code(db_url: str) -> None:
    """A rolling deploy must not run old code on a database a newer release migrated: the
    version is never written back down, and start-up stops with one sentence."""
    from happy_socket.errors import ConfigError
    from happy_socket.storage.schema import schema_versions

    app = create_app(Settings(db=db_url, secret="s" * 32))
    await app.startup()
    await app.db.execute(
        schema_versions.update().where(schema_versions.c.component == "core").values(version=99)
    )
    await app.shutdown()
    again = create_app(Settings(db=db_url, secret="s" * 32))
    with pytest.raises(ConfigError, match=r"'core' is at version 99, newer than this code's 1"):
        await again.startup()
    assert not again.started
    check = create_app(Settings(db=db_url, secret="s" * 32))
    await check.db.connect()
    try:
        assert (await current_versions(check.db))["core"] == 99
    finally:
        await check.db.disconnect()
