"""Isolation matrix on one process (SQLite and PostgreSQL): B never reaches A's resources."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs

from happy_socket import App
from happy_socket.testing import ServerHarness, TestSocket
from tests.conftest import ServerFactory

from .isolation import Matrix


@attrs.define
class OneProcess:
    """Both "processes" are the same in-process server."""

    server: ServerHarness

    @property
    def app(self) -> App:
        return self.server.app

    def url(self, index: int) -> str:
        return self.server.url

    async def connect(self, index: int, user: str, **auth: Any) -> TestSocket:
        return await self.server.connect(
            {"token": await self.server.token(user), **auth}, user_id=user
        )


async def test_user_b_cannot_reach_user_a(make_server: ServerFactory, db_url: str) -> None:
    server = await make_server(db=db_url, plugin_options={"rpc": {"grace": 0}})
    matrix = Matrix(OneProcess(server))
    await matrix.run("alice", "bob")
    assert matrix.tried > 100
    assert not matrix.failures, "\n".join(matrix.failures[:20])


async def test_the_matrix_notices_when_b_is_a(make_server: ServerFactory) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0}})
    matrix = Matrix(OneProcess(server))
    with contextlib.suppress(AssertionError):  # A's own follow-up steps then fail too
        await matrix.run("carol", "carol")
    joined = "\n".join(matrix.failures)
    assert "update-metadata" in joined and "artifact-read" in joined
    assert "A's sockets received" in joined or "B's sockets received" in joined
