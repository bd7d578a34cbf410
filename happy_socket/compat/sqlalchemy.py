"""SQLAlchemy internals happy-socket relies on (pinned ``<2.2``; tests/core/test_compat_sqlalchemy.py
fails when they change).

The storage layer compiles a hot statement once and runs it straight on the driver — asyncpg
on PostgreSQL (:mod:`happy_socket.storage.postgres`), the sqlite3 cursor on SQLite
(:mod:`happy_socket.storage.sqlite`) — skipping SQLAlchemy's and ``databases``' work per
execution. For that it reads:

- ``ClauseElement._generate_cache_key()``: a ``CacheKey(key, bindparams)`` shared by
  statements that differ only in their literal values, whose values it carries
  (:func:`cache_key`).
- ``dialect.statement_compiler(dialect, statement, cache_key=...)`` and
  ``SQLCompiler.post_compile_params`` / ``literal_execute_params`` (a statement rendered
  again per execution — expanding IN lists — cannot be reused) (:func:`compile_once`).
- ``SQLCompiler.construct_params(params, extracted_parameters=, escape_names=False)``,
  ``positiontup`` (the order of positional parameters) and ``_bind_processors`` (per-parameter
  type conversions) (:func:`positional_args`, :func:`converts_binds`).
- ``SQLCompiler._result_columns`` (entries with ``keyname`` and ``type``; empty for a
  textual SELECT), ``isinsert`` / ``isupdate`` / ``isdelete`` and
  ``TypeEngine._cached_result_processor(dialect, coltype)`` (:func:`result_columns`).

:func:`check` runs when a :class:`~happy_socket.storage.Database` connects. On a release where
any of these is missing or behaves differently, :func:`enabled` turns False and every statement
takes the public path, and one log line says so (slower, same results): SQLAlchemy's own
execution on the SQLite writer; on PostgreSQL, SQLAlchemy's public
``SQLCompiler.construct_expanded_state`` per execution, run on asyncpg
(:func:`happy_socket.storage.postgres.pg_public`; ``databases``' own execution renders no
casts and PostgreSQL mistypes some parameters).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("happy_socket.compat")

_enabled: bool | None = None  # None: not checked yet


def cache_key(query: Any) -> Any:
    """SQLAlchemy's cache key of ``query`` (``.key``, ``.bindparams``), or None if uncacheable."""
    return query._generate_cache_key()


def compile_once(dialect: Any, query: Any, key: Any) -> Any:
    """``query`` compiled for ``dialect`` so it can serve every statement sharing ``key``;
    None when it must be compiled per execution (expanding or literal-execute parameters)."""
    compiled = dialect.statement_compiler(dialect, query, cache_key=key)
    if compiled.post_compile_params or compiled.literal_execute_params:
        return None
    return compiled


def converts_binds(compiled: Any) -> bool:
    """True when a bound parameter of ``compiled`` needs a type conversion, or the statement
    is not positional or is rendered per execution: the raw sqlite3 cursor cannot run it."""
    return bool(
        compiled._bind_processors or not compiled.positional or compiled.post_compile_params
    )


def positional_args(compiled: Any, values: Any, key: Any = None) -> list[Any]:
    """The driver's positional arguments for ``compiled`` with ``values`` (for ``sa.bindparam``
    names) and, when it was compiled for another statement of the same ``key``, the literal
    values of this one; bind processors applied."""
    params = compiled.construct_params(
        params=values,
        extracted_parameters=None if key is None else key.bindparams,
        escape_names=False,
    )
    procs = compiled._bind_processors
    if not procs:
        return [params[name] for name in compiled.positiontup]
    return [procs[n](params[n]) if n in procs else params[n] for n in compiled.positiontup]


def result_columns(compiled: Any, dialect: Any) -> list[str] | None:
    """The names of ``compiled``'s result columns, or None when one needs a conversion
    (booleans, dates, JSON, numerics...) or they are unknown (``text("SELECT ...")``):
    SQLAlchemy must process those rows itself. ``[]``: an INSERT/UPDATE/DELETE without
    RETURNING."""
    if not compiled._result_columns and not (
        compiled.isinsert or compiled.isupdate or compiled.isdelete
    ):
        return None
    names = []
    for column in compiled._result_columns:
        try:
            processor = column.type._cached_result_processor(dialect, None)
        except Exception:  # a processor that depends on the driver's column type
            return None
        if processor is not None:
            return None
        names.append(column.keyname)
    return names


def missing() -> list[str]:
    """What the fast paths use that the installed SQLAlchemy lacks or does differently."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
    from sqlalchemy.dialects.sqlite.pysqlite import dialect as pysqlite_dialect

    table = sa.table("t", sa.column("id", sa.Integer), sa.column("name", sa.String))
    problems: list[str] = []

    def probe(label: str, fn: Any) -> None:
        try:
            if not fn():
                problems.append(label)
        except Exception as exc:
            problems.append(f"{label} ({type(exc).__name__}: {exc})")

    first = sa.select(table.c.id, table.c.name).where(
        table.c.id == 7, table.c.name == sa.bindparam("n")
    )
    second = sa.select(table.c.id, table.c.name).where(
        table.c.id == 8, table.c.name == sa.bindparam("n")
    )
    pg: Any = asyncpg_dialect()  # type: ignore[no-untyped-call]
    lite: Any = pysqlite_dialect()  # type: ignore[no-untyped-call]

    def pg_reuse() -> bool:
        key1, key2 = cache_key(first), cache_key(second)
        if key1 is None or key1.key != key2.key:
            return False
        compiled = compile_once(pg, first, key1)
        return compiled is not None and positional_args(compiled, {"n": "x"}, key2) == [8, "x"]

    def pg_expanding() -> bool:
        query = sa.select(table.c.id).where(table.c.id.in_([1, 2]))
        return compile_once(pg, query, cache_key(query)) is None

    def sqlite_raw() -> bool:
        compiled: Any = first.compile(dialect=lite)
        return (
            not converts_binds(compiled)
            and positional_args(compiled, {"n": "x"}) == [7, "x"]
            and result_columns(compiled, lite) == ["id", "name"]
            and result_columns(sa.update(table).compile(dialect=lite), lite) == []
            and result_columns(sa.text("SELECT 1").compile(dialect=lite), lite) is None
        )

    def sqlite_conversions() -> bool:
        flags = sa.table("f", sa.column("on", sa.Boolean), sa.column("at", sa.DateTime))
        binds: Any = sa.insert(flags).values(at=sa.bindparam("at")).compile(dialect=lite)
        rows: Any = sa.select(flags.c.on).compile(dialect=lite)
        return converts_binds(binds) and result_columns(rows, lite) is None

    probe("ClauseElement._generate_cache_key / SQLCompiler.construct_params (reuse)", pg_reuse)
    probe("SQLCompiler.post_compile_params (expanding IN)", pg_expanding)
    probe("SQLCompiler.positiontup / _result_columns (sqlite3 cursor)", sqlite_raw)
    probe("SQLCompiler._bind_processors / TypeEngine._cached_result_processor", sqlite_conversions)
    return problems


def check() -> bool:
    """Probe the internals once per process; False (logged once) means the public path."""
    global _enabled
    if _enabled is None:
        problems = missing()
        _enabled = not problems
        if problems:
            log.warning(
                "SQLAlchemy %s differs in %s: statements are compiled on every execution "
                "through SQLAlchemy's public API (slower)",
                sa.__version__,
                "; ".join(problems),
            )
        else:
            log.debug(
                "SQLAlchemy %s: statements compiled once and run on the driver", sa.__version__
            )
    return _enabled


def enabled() -> bool:
    """True when the fast paths may be used (:func:`check` passed, or has not run yet)."""
    return _enabled is not False


def reset() -> None:
    """Forget the result of :func:`check` (tests)."""
    global _enabled
    _enabled = None
