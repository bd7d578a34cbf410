"""Shared fixtures: real servers on random ports, SQLite files, fresh PostgreSQL databases, Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from happy_socket import App, Settings, create_app
from happy_socket.testing import ServerHarness, ci

PG_ADMIN_URL = os.environ.get(
    "HAPPY_SOCKET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HAPPY_SOCKET_TEST_REDIS", "redis://127.0.0.1:6379/0")


def service_missing(what: str, exc: BaseException) -> None:
    """Fail under CI (the service must be there), skip with a reason on a laptop."""
    message = f"{what} is not reachable ({exc!r})"
    if ci():
        pytest.fail(message + " and CI=true: tests that need it must not be skipped")
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


async def _admin(sql: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = "hs_" + uuid.uuid4().hex[:16]
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        service_missing("PostgreSQL", exc)
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A reachable Redis (flushed channel names are per test, so no flush is needed)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        service_missing("Redis", exc)
    finally:
        await client.aclose()
    yield REDIS_URL


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
