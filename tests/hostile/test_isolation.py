"""Isolation matrix on one process (SQLite): B never reaches A's resources.

The same matrix runs on PostgreSQL + Redis with two processes in test_isolation_scaleout.py.
"""

from __future__ import annotations

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


async def test_user_b_cannot_reach_user_a(make_server: ServerFactory) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0}})
    matrix = Matrix(OneProcess(server))
    await matrix.run("alice", "bob")
    assert matrix.tried > 100
    assert not matrix.failures, "\n".join(matrix.failures[:20])


async def test_the_matrix_notices_when_b_is_a(make_server: ServerFactory) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0}})
    matrix = Matrix(OneProcess(server))
    await matrix.setup("carol", "carol")
    await matrix.attack_events()
    joined = "\n".join(matrix.failures)
    assert "update-metadata" in joined and "artifact-read" in joined
    assert "succeeded for B" in joined
