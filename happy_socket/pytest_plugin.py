"""pytest fixtures for testing happy-socket plugins, loaded by pytest on its own.

Installing happy-socket registers this module as a pytest plugin (the ``pytest11`` entry
point ``happy_socket``; ``-p no:happy_socket`` turns it off). It offers:

- ``happy_server``: ``await happy_server(plugins=[...], load_entry_points=..., **settings)`` ->
  a started :class:`~happy_socket.testing.ServerHarness` (uvicorn on a free port, SQLite in
  ``tmp_path`` unless ``db=`` says otherwise), stopped after the test;
- ``app_client``: the same arguments -> an entered :class:`~happy_socket.testing.AppClient`
  (HTTP in process, no uvicorn), closed after the test;
- ``happy_sqlite_url``, ``happy_pg_url`` (a fresh PostgreSQL database, dropped afterwards),
  ``happy_db_url`` (each test twice: SQLite and PostgreSQL) and ``happy_redis_url``.
  PostgreSQL (``HAPPY_SOCKET_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/postgres``)
  and Redis (``HAPPY_SOCKET_TEST_REDIS``) tests skip with a reason when the service is not
  reachable, and fail under ``CI=true``.

Async tests need no configuration. In pytest-asyncio's ``strict`` mode (its default, where an
unmarked ``async def`` test does not run at all), coroutine tests that use these fixtures or
live in a module that imports ``happy_socket`` (or a ``happy_socket_*`` plugin) are marked
``asyncio``; tests marked for another framework (``anyio``, ``trio``) are left alone. In
``auto`` mode (this repository's) nothing changes. Your own async fixtures still need
``@pytest_asyncio.fixture`` in strict mode.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import pluggy
import pytest

if TYPE_CHECKING:
    from .app import App
    from .testing import AppClient, ServerHarness

F = TypeVar("F", bound=Callable[..., Any])

try:  # a dev dependency of plugins' tests, not of happy-socket
    import pytest_asyncio

    _decorate: Any = pytest_asyncio.fixture(loop_scope="function")
except ImportError:  # pragma: no cover - then async tests cannot run at all
    _decorate = pytest.fixture


def _async_fixture(fn: F) -> F:
    """An async fixture pytest-asyncio runs in strict mode too."""
    return cast(F, _decorate(fn))


FIXTURES = frozenset(
    {
        "happy_server",
        "app_client",
        "happy_sqlite_url",
        "happy_pg_url",
        "happy_db_url",
        "happy_redis_url",
    }
)
OTHER_ASYNC_MARKS = ("asyncio", "anyio", "trio")
TEST_SECRET = "test-secret-0123456789abcdef0123456789"


def pg_admin_url() -> str:
    """The PostgreSQL database used to create and drop per-test databases."""
    return os.environ.get("HAPPY_SOCKET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def redis_test_url() -> str:
    """The Redis used by ``happy_redis_url``."""
    return os.environ.get("HAPPY_SOCKET_TEST_REDIS", "redis://127.0.0.1:6379/0")


def service_missing(what: str, exc: BaseException) -> NoReturn:
    """Fail under CI (the service must be there), skip with a reason otherwise."""
    from .testing import ci

    message = f"{what} is not reachable ({exc!r})"
    if ci():
        pytest.fail(message + " and CI=true: tests that need it must not be skipped")
    pytest.skip(message)


# -- asyncio without configuration ----------------------------------------------------------


def _strict(config: pytest.Config) -> bool:
    """True when pytest-asyncio runs in strict mode: its default, where an unmarked coroutine
    test does not run (pytest fails it)."""
    if not config.pluginmanager.hasplugin("asyncio"):
        return False
    mode = getattr(config.option, "asyncio_mode", None) or config.getini("asyncio_mode")
    return str(mode) == "strict"


def _uses_happy_socket(module: ModuleType | None) -> bool:
    if module is None:
        return False
    for value in list(vars(module).values()):
        try:
            name = value.__name__ if isinstance(value, ModuleType) else value.__module__
        except Exception:  # not every object has (or can give) a module name
            continue
        if isinstance(name, str) and name.split(".")[0].startswith("happy_socket"):
            return True
    return False


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, pluggy.Result[Any], None]:
    """Mark this plugin's users' coroutine tests ``asyncio`` in an unconfigured project.

    ``trylast``: this wrapper sits inside pytest-asyncio's, which turns marked coroutine
    functions into its own items when the inner wrappers are done.
    """
    outcome = yield
    config = collector.config
    if not _strict(config):
        return
    result = outcome.get_result()
    items = result if isinstance(result, list) else [result]
    module_uses = None
    for item in items:
        if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
            continue
        if any(item.get_closest_marker(mark) for mark in OTHER_ASYNC_MARKS):
            continue
        if "anyio_backend" in item.fixturenames:
            continue
        if module_uses is None:
            module = getattr(collector, "module", None)
            module_uses = _uses_happy_socket(module if isinstance(module, ModuleType) else None)
        if module_uses or FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.asyncio)


# -- databases and services -----------------------------------------------------------------


async def _pg_admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    admin = await asyncpg.connect(pg_admin_url(), timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture
def happy_sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in the test's ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'happy-test.db'}"


@pytest.fixture
def happy_pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = "hs_" + uuid.uuid4().hex[:16]
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        service_missing("PostgreSQL", exc)
    yield f"{pg_admin_url().rsplit('/', 1)[0]}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def happy_db_url(request: pytest.FixtureRequest, happy_sqlite_url: str) -> str:
    """Each test using it runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return happy_sqlite_url
    return str(request.getfixturevalue("happy_pg_url"))


@_async_fixture
async def happy_redis_url() -> AsyncIterator[str]:
    """A reachable Redis URL."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_test_url())
    try:
        await client.ping()
    except Exception as exc:
        service_missing("Redis", exc)
    finally:
        await client.aclose()
    yield redis_test_url()


# -- servers and clients --------------------------------------------------------------------


def _make_app(
    db: str, plugins: Any, load_entry_points: bool, app: App | None, settings: dict[str, Any]
) -> App:
    from . import Settings, create_app

    if app is not None:
        return app
    settings.setdefault("db", db)
    settings.setdefault("secret", TEST_SECRET)
    return create_app(Settings(**settings), plugins=plugins, load_entry_points=load_entry_points)


@_async_fixture
async def happy_server(
    happy_sqlite_url: str,
) -> AsyncIterator[Callable[..., Awaitable[ServerHarness]]]:
    """``await happy_server(plugins=[("echo", module)], load_entry_points=False, **settings)``.

    A started ServerHarness serving a new App (or ``app=`` one you built); every server this
    test made is stopped afterwards. Settings default to SQLite in ``tmp_path``.
    """
    from .testing import ServerHarness

    harnesses: list[ServerHarness] = []

    async def make(
        *,
        plugins: Any = (),
        load_entry_points: bool = True,
        app: App | None = None,
        **settings: Any,
    ) -> ServerHarness:
        harness = ServerHarness(
            _make_app(happy_sqlite_url, plugins, load_entry_points, app, settings)
        )
        await harness.__aenter__()
        harnesses.append(harness)
        return harness

    yield make
    for harness in reversed(harnesses):
        await harness.__aexit__(None, None, None)


@_async_fixture
async def app_client(
    happy_sqlite_url: str,
) -> AsyncIterator[Callable[..., Awaitable[AppClient]]]:
    """``http = await app_client(plugins=[...], **settings)``: an in-process HTTP client
    (:class:`~happy_socket.testing.AppClient`, ``user=`` adds a bearer token), closed after the
    test together with the App it started."""
    from .testing import AppClient

    clients: list[AppClient] = []

    async def make(
        *,
        plugins: Any = (),
        load_entry_points: bool = True,
        app: App | None = None,
        **settings: Any,
    ) -> AppClient:
        client = AppClient(_make_app(happy_sqlite_url, plugins, load_entry_points, app, settings))
        await client.__aenter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await client.__aexit__(None, None, None)
