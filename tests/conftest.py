"""Shared fixtures: real servers on random ports, SQLite files, fresh PostgreSQL databases, Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from happy_socket import App, Settings, create_app
from happy_socket.pytest_plugin import (
    _pg_admin,
    pg_admin_url,
    redis_test_url,
)
from happy_socket.pytest_plugin import service_missing as service_missing
from happy_socket.testing import ServerHarness

# the service fixtures are the pytest plugin's (happy_socket.pytest_plugin); these names stay
# for the suite's own modules
PG_ADMIN_URL = pg_admin_url()
REDIS_URL = redis_test_url()
_admin = _pg_admin


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_url(happy_pg_url: str) -> str:
    """A fresh, empty PostgreSQL database, dropped afterwards (fails, not skips, under CI)."""
    return happy_pg_url


@pytest.fixture
def redis_url(happy_redis_url: str) -> str:
    """A reachable Redis (channel names are per test, so no flush is needed)."""
    return happy_redis_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("pg_url"))


ServerFactory = Callable[..., Awaitable[ServerHarness]]


@pytest.fixture
async def make_server(sqlite_url: str) -> AsyncIterator[ServerFactory]:
    """``await make_server(plugins=[...], db=..., **settings)`` -> a started ServerHarness."""
    harnesses: list[ServerHarness] = []

    async def make(
        *,
        plugins: Any = (),
        load_entry_points: bool = True,
        app: App | None = None,
        **settings: Any,
    ) -> ServerHarness:
        settings.setdefault("db", sqlite_url)
        settings.setdefault("secret", "test-secret-0123456789abcdef0123456789")
        if app is None:
            app = create_app(
                Settings(**settings), plugins=plugins, load_entry_points=load_entry_points
            )
        harness = ServerHarness(app)
        await harness.__aenter__()
        harnesses.append(harness)
        return harness

    yield make
    for harness in reversed(harnesses):
        await harness.__aexit__(None, None, None)


@pytest.fixture
async def server(make_server: ServerFactory) -> ServerHarness:
    """A server with every installed plugin on a fresh SQLite file."""
    return await make_server()
