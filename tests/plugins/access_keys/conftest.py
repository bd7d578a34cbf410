"""``db_url`` for this directory: SQLite and PostgreSQL (a sync fixture, so that it can pull the
async ``pg_url`` fixture with ``getfixturevalue`` outside the running event loop)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on SQLite and on PostgreSQL (PostgreSQL fails, not skips, in CI)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("pg_url"))
