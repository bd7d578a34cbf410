"""Fixtures of the machines tests: ``db_url`` (SQLite + PostgreSQL), a fake clock, servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import FakeClock, make_app


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on SQLite and on PostgreSQL (PostgreSQL fails, not skips, in CI)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def srv(make_server: Any, sqlite_url: str, clock: FakeClock) -> ServerHarness:
    """Every plugin on SQLite, with the fake clock."""
    return await make_server(app=make_app(sqlite_url, clock))  # type: ignore[no-any-return]


@pytest.fixture
async def both(make_server: Any, db_url: str, clock: FakeClock) -> ServerHarness:
    """Every plugin on SQLite and on PostgreSQL, with the fake clock."""
    return await make_server(app=make_app(db_url, clock))  # type: ignore[no-any-return]
