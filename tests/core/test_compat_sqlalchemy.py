"""Tripwires for the SQLAlchemy internals happy-socket relies on (happy_socket.compat.sqlalchemy),
and its public path: the same statements, with the internals declared missing, give the same
rows on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as pysqlite_dialect

from happy_socket.compat import sqlalchemy as sa_compat
from happy_socket.storage import Database, Tx

PG: Any = asyncpg_dialect()  # type: ignore[no-untyped-call]
LITE: Any = pysqlite_dialect()  # type: ignore[no-untyped-call]

items = sa.table(
    "compat_items",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("flag", sa.Boolean),
)


class Shout(sa.TypeDecorator[str]):
    """A type with a bind and a result conversion, as JSON or dates have."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else value.upper()

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return value


@pytest.fixture(autouse=True)
def fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test checks again; the process's result is restored afterwards."""
    monkeypatch.setattr(sa_compat, "_enabled", None)


def test_the_installed_release_has_every_internal() -> None:
    assert sa_compat.missing() == []
    assert sa_compat.check() and sa_compat.enabled()


def test_cache_key_is_shared_by_statements_differing_in_literals() -> None:
    first = sa.select(items.c.id).where(items.c.id == 1)
    second = sa.select(items.c.id).where(items.c.id == 2)
    other = sa.select(items.c.name).where(items.c.id == 1)
    key1, key2 = sa_compat.cache_key(first), sa_compat.cache_key(second)
    assert key1.key == key2.key != sa_compat.cache_key(other).key
    assert [b.value for b in key2.bindparams] == [2]


def test_a_shape_compiled_once_serves_later_literals_and_bindparams() -> None:
    query = sa.select(items.c.id).where(items.c.id == 1, items.c.name == sa.bindparam("name"))
    later = sa.select(items.c.id).where(items.c.id == 5, items.c.name == sa.bindparam("name"))
    compiled = sa_compat.compile_once(PG, query, sa_compat.cache_key(query))
    assert compiled is not None and "$1" in compiled.string and "$2" in compiled.string
    args = sa_compat.positional_args(compiled, {"name": "n"}, sa_compat.cache_key(later))
    assert args == [5, "n"]


def test_statements_rendered_per_execution_are_not_compiled_once() -> None:
    expanding = sa.select(items.c.id).where(items.c.id.in_([1, 2, 3]))
    literal = sa.select(items.c.id).where(items.c.id == sa.bindparam("x", 1, literal_execute=True))
    for query in (expanding, literal):
        assert sa_compat.compile_once(PG, query, sa_compat.cache_key(query)) is None


def test_bind_processors_are_applied_and_reported() -> None:
    shouting = sa.table("t", sa.column("name", Shout()))
    query = sa.insert(shouting).values(name=sa.bindparam("name"))
    for dialect in (PG, LITE):
        compiled: Any = query.compile(dialect=dialect)
        assert sa_compat.converts_binds(compiled)
        assert sa_compat.positional_args(compiled, {"name": "quiet"}) == ["QUIET"]
    plain: Any = sa.insert(items).values(id=sa.bindparam("id")).compile(dialect=LITE)
    assert not sa_compat.converts_binds(plain)
    assert sa_compat.positional_args(plain, {"id": 3}) == [3]


def test_result_columns_name_plain_columns_and_refuse_converted_ones() -> None:
    query = sa.select(items.c.id, items.c.name.label("title"))
    assert sa_compat.result_columns(query.compile(dialect=LITE), LITE) == ["id", "title"]
    delete = sa.delete(items).where(items.c.id == 1).compile(dialect=LITE)
    assert sa_compat.result_columns(delete, LITE) == []  # no rows
    textual = sa.text("SELECT id FROM compat_items").compile(dialect=LITE)
    assert sa_compat.result_columns(textual, LITE) is None  # rows of unknown columns
    for column in (items.c.flag, sa.cast(items.c.name, Shout()), sa.cast(items.c.id, sa.DateTime)):
        compiled = sa.select(items.c.id, column).compile(dialect=LITE)
        assert sa_compat.result_columns(compiled, LITE) is None


def test_missing_internals_take_the_public_path_and_say_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sa_compat, "missing", lambda: ["SQLCompiler.positiontup"])
    caplog.set_level(logging.DEBUG, logger="happy_socket.compat")
    assert sa_compat.check() is False and sa_compat.enabled() is False
    assert sa_compat.check() is False
    lines = [r.getMessage() for r in caplog.records if "SQLAlchemy" in r.getMessage()]
    assert len(lines) == 1 and "positiontup" in lines[0] and "public API" in lines[0]


def test_a_changed_internal_is_found_by_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.sql.compiler import SQLCompiler

    monkeypatch.delattr(SQLCompiler, "_bind_processors")  # as if a release renamed it
    problems = sa_compat.missing()
    assert problems and all("AttributeError" in p for p in problems)
    assert any("_bind_processors" in p for p in problems)


# -- the same statements on both paths ---------------------------------------------------

CREATE = (
    "CREATE TABLE compat_items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL, "
    "flag BOOLEAN NOT NULL, payload {json})"
)
full = sa.Table(
    "compat_items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("payload", sa.JSON),
)
INSERT = sa.insert(full).values(
    id=sa.bindparam("id"), name=sa.bindparam("name"), flag=sa.bindparam("flag")
)
BY_ID = sa.select(full.c.id, full.c.name).where(full.c.id == sa.bindparam("id"))


async def workload(db: Database) -> list[Any]:
    """Prebuilt and ad-hoc statements, plain and converted types, IN lists, a failed unit."""
    json_type = "TEXT" if db.is_sqlite else "JSON"
    await db.execute(CREATE.format(json=json_type))
    seen: list[Any] = []

    async def fill(tx: Tx) -> None:
        for i in range(1, 6):
            await tx.execute(INSERT, {"id": i, "name": f"n{i}", "flag": i % 2 == 0})
        await tx.execute(sa.update(full).where(full.c.id == 1).values(payload={"k": [1, 2]}))

    await db.write(fill)
    await db.write(
        lambda tx: tx.execute(
            db.insert(full).values(id=1, name="x", flag=True).on_conflict_do_nothing()
        )
    )

    async def failing(tx: Tx) -> None:
        await tx.execute(INSERT, {"id": 9, "name": "gone", "flag": False})
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await db.write(failing)

    async def reads(tx: Tx) -> list[Any]:
        return [
            await tx.fetch_one(BY_ID, {"id": 3}),
            await tx.fetch_one(sa.select(full.c.name).where(full.c.id == 4)),
            await tx.fetch_all(
                sa.select(full.c.id).where(full.c.id.in_([2, 5, 9])).order_by(full.c.id)
            ),
            await tx.fetch_all(
                sa.select(full.c.id, full.c.flag).where(full.c.flag).order_by(full.c.id)
            ),
            await tx.fetch_val(sa.select(full.c.payload).where(full.c.id == 1)),
            await tx.fetch_one(
                sa.update(full).where(full.c.id == 5).values(name="five").returning(full.c.name)
            ),
            await tx.fetch_val("SELECT count(*) FROM compat_items"),
            await tx.fetch_one(sa.text("SELECT name FROM compat_items WHERE id = :id"), {"id": 3}),
        ]

    seen += await db.write(reads)
    if not db.is_sqlite:  # on asyncpg a JSON column comes back as its text on both paths
        seen[4] = json.loads(seen[4])  # (`databases` installs no JSON codec); nothing uses JSON
    seen.append(await db.fetch_one(BY_ID, {"id": 5}))
    seen.append(await db.fetch_all(sa.select(full.c.id).where(full.c.id > 3).order_by(full.c.id)))
    seen.append(await db.write_one(sa.delete(full).where(full.c.id == 2).returning(full.c.id)))
    return seen


EXPECTED = [
    {"id": 3, "name": "n3"},
    {"name": "n4"},
    [{"id": 2}, {"id": 5}],
    [{"id": 2, "flag": True}, {"id": 4, "flag": True}],
    {"k": [1, 2]},
    {"name": "five"},
    5,
    {"name": "n3"},
    {"id": 5, "name": "five"},
    [{"id": 4}, {"id": 5}],
    {"id": 2},
]


@pytest.mark.parametrize("fast", [True, False], ids=["internals", "public-path"])
async def test_both_paths_give_the_same_rows(
    db_url: str, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    positional_args = sa_compat.positional_args

    def spy(*args: Any, **kwargs: Any) -> list[Any]:
        nonlocal calls
        calls += 1
        if not fast:
            raise AssertionError("the public path used an internal")
        return positional_args(*args, **kwargs)

    monkeypatch.setattr(sa_compat, "positional_args", spy)
    if not fast:
        monkeypatch.setattr(sa_compat, "missing", lambda: ["SQLCompiler._bind_processors"])
    db = Database(db_url)
    await db.connect()
    try:
        assert sa_compat.enabled() is fast
        assert await workload(db) == EXPECTED
    finally:
        await db.disconnect()
    assert (calls > 0) is fast
