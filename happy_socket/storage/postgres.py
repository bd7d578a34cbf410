"""PostgreSQL: statements compiled once per shape for asyncpg, and a cheap pool reset.

Also the `databases` connection :class:`ConnectionTx`, which SQLite's reader uses too.
"""

from __future__ import annotations

from typing import Any

import databases
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import cloned_traverse

from ..compat import sqlalchemy as sa_compat
from .tx import Query, Row, Values

_PG_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
_PG_CACHE_SIZE = 2000
_pg_compiled: dict[Any, Any] = {}


def row_of(record: Any) -> Row | None:
    return None if record is None else dict(record._mapping)


def pg_statement(query: ClauseElement, values: Values) -> tuple[str, list[Any]] | None:
    """``query`` as asyncpg SQL and arguments, compiled once per statement shape.

    SQLAlchemy's cache key identifies statements that differ only in their literal values;
    each shape is compiled once (``databases`` compiles every execution). None when the
    statement cannot be cached (expanding IN lists and the like), or SQLAlchemy's internals
    are not the ones :mod:`happy_socket.compat.sqlalchemy` knows: use ``databases`` then.
    """
    if not sa_compat.enabled():
        return None
    key = sa_compat.cache_key(query)
    if key is None:
        return None
    compiled: Any = _pg_compiled.get(key.key)
    if compiled is None:
        compiled = sa_compat.compile_once(_PG_DIALECT, query, key) or False
        if len(_pg_compiled) >= _PG_CACHE_SIZE:
            _pg_compiled.clear()
        _pg_compiled[key.key] = compiled
    if compiled is False:
        return None
    return compiled.string, sa_compat.positional_args(compiled, values, key)


def pg_public(query: ClauseElement, values: Values) -> tuple[str, list[Any]]:
    """``query`` as asyncpg SQL and arguments through SQLAlchemy's public API, compiled on
    every call: the path when :mod:`happy_socket.compat.sqlalchemy` finds its internals changed.

    Not ``databases``' own execution: it compiles for psycopg and renders no casts, so
    PostgreSQL must guess the type of a parameter and guesses wrong in places
    (``sqrt(CASE WHEN ... THEN $1 ...)`` is ``sqrt(text)``).
    """
    compiled: Any = query.compile(dialect=_PG_DIALECT)
    given = None if values is None else dict(values)
    state = compiled.construct_expanded_state(given, escape_names=False)
    procs = dict(state.processors)  # those of expanded parameters (IN lists)
    args = []
    for name, value in zip(state.positiontup or (), state.positional_parameters, strict=True):
        process = procs.get(name)
        if process is None and name in compiled.binds:
            impl = compiled.binds[name].type.dialect_impl(_PG_DIALECT)
            process = procs[name] = impl.bind_processor(_PG_DIALECT)
        args.append(value if process is None else process(value))
    return state.statement, args


def plain(query: Query, values: Values) -> tuple[Query, dict[str, Any] | None]:
    """``query`` and ``values`` the way ``databases`` takes them (it binds values to text only).

    A statement's ``sa.bindparam`` placeholders get ``values`` the way ``ClauseElement.params``
    gives them, which SQLAlchemy refuses for INSERT/UPDATE/DELETE.
    """
    if values is None:
        return query, None
    if isinstance(query, str):
        return query, dict(values)
    given = dict(values)

    def bind(param: BindParameter[Any]) -> None:
        if param.key in given:
            param.value = given[param.key]
            param.required = False

    return cloned_traverse(query, {"maintain_key": True}, {"bindparam": bind}), None


def _statement(query: ClauseElement, values: Values) -> tuple[str, list[Any]] | None:
    """asyncpg SQL and arguments for ``query``, or None: run it through ``databases``."""
    if sa_compat.enabled():
        return pg_statement(query, values)
    return pg_public(query, values)


class ConnectionTx:
    """A :class:`Tx` on a `databases` connection: PostgreSQL units and pooled reads.

    Statements that SQLAlchemy can cache are compiled once per shape and run straight on
    asyncpg (:func:`pg_statement`); the rest go through `databases`. Without the SQLAlchemy
    internals that needs, every statement is compiled per call (:func:`pg_public`).
    """

    def __init__(self, conn: databases.core.Connection, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect

    async def _fetch(self, query: Query, values: Values, many: bool) -> list[Row]:
        stmt = None if isinstance(query, str) else _statement(query, values)
        if stmt is None:
            query, bound = plain(query, values)
            if many:
                return [dict(r._mapping) for r in await self._conn.fetch_all(query, bound)]
            row = row_of(await self._conn.fetch_one(query, bound))
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
        stmt = None if isinstance(query, str) else _statement(query, values)
        if stmt is None:
            await self._conn.execute(*plain(query, values))
        else:
            await self._conn.raw_connection.execute(stmt[0], *stmt[1])


async def pg_reset(conn: Any) -> None:
    """Return a connection to the pool without asyncpg's default reset round trip.

    The default runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release (one more round trip per unit of work); units only run transactions, which end
    with COMMIT or ROLLBACK and leave no session state behind.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")
