"""`databases` internals happy-socket relies on (pinned ``<0.10``; tests/core/test_compat_databases.py
fails when they change).

- ``databases.core.Connection(database, backend)`` built by hand with ``Database._backend``:
  the SQLite reader is one long-lived aiosqlite connection shared by every task
  (:func:`open_connection`). ``Database.connection()``, the public way, gives each task a
  connection of its own, and on SQLite each is a new file connection (one thread and one
  ``connect`` per reading task).
- ``Connection.__aenter__`` / ``__aexit__`` (acquire and release the backend connection) and
  ``fetch_all`` / ``fetch_one`` / ``execute`` on it, serialised by its own query lock.

:func:`check` runs when a SQLite :class:`~happy_socket.storage.Database` connects. Without
these, reads take the public path: they run on the writer connection as units, as they do
for ``:memory:`` (correct, but a read waits for the writer's batch), and one log line says so.
``Connection.raw_connection`` (the asyncpg connection, used on PostgreSQL) is public API.
"""

from __future__ import annotations

import inspect
import logging

import databases
from databases.core import Connection

log = logging.getLogger("happy_socket.compat")

CONNECTION_PARAMS = ("self", "database", "backend")
CONNECTION_METHODS = ("__aenter__", "__aexit__", "fetch_all", "fetch_one", "execute")


def missing(db: databases.Database) -> list[str]:
    """What :func:`open_connection` needs of the installed `databases` that ``db`` lacks."""
    problems = []
    try:
        params = tuple(inspect.signature(Connection.__init__).parameters)
    except (TypeError, ValueError):  # pragma: no cover - not a Python function
        params = ()
    if params != CONNECTION_PARAMS:
        problems.append(f"databases.core.Connection{CONNECTION_PARAMS[1:]}")
    problems += [f"Connection.{n}" for n in CONNECTION_METHODS if not hasattr(Connection, n)]
    if not callable(getattr(getattr(db, "_backend", None), "connection", None)):
        problems.append("Database._backend.connection()")
    return problems


def check(db: databases.Database) -> bool:
    """True when a shared connection can be built by hand; otherwise logs the public path."""
    problems = missing(db)
    if problems:
        log.warning(
            "databases %s lacks %s: SQLite reads run on the writer connection (a read waits "
            "for the writer's batch)",
            getattr(databases, "__version__", "?"),
            ", ".join(problems),
        )
    return not problems


async def open_connection(db: databases.Database) -> Connection:
    """A connection of its own on ``db``, acquired, not tied to the calling task."""
    conn = Connection(db, db._backend)
    await conn.__aenter__()
    return conn


async def close_connection(conn: Connection) -> None:
    """Release a connection from :func:`open_connection`."""
    await conn.__aexit__(None, None, None)
