"""Isolation matrix on one process (SQLite): B never reaches A's resources.

The same matrix runs on PostgreSQL + Redis with two processes in test_isolation_scaleout.py.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from happy_socket import AllUserConnections, App, UserScopedOnly, hookimpl
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


class HostIds:
    """A host application's authenticate hook whose user ids contain ``:``."""

    @hookimpl(tryfirst=True)
    def authenticate(self, app: App, token: str, auth: dict[str, Any]) -> str | None:
        return token.removeprefix("host:") if token.startswith("host:") else None


@pytest.mark.parametrize(
    ("victim", "attacker", "claim"),
    [
        ("acme:session:x", "acme", {"clientType": "session-scoped", "sessionId": "x"}),
        ("acme:machine:m", "acme", {"clientType": "machine-scoped", "machineId": "m"}),
        ("acme:user-scoped", "acme", {}),
        ("a%3Ab", "a:b", {}),
    ],
)
async def test_user_ids_with_colons_cannot_name_another_users_room(
    make_server: ServerFactory, victim: str, attacker: str, claim: dict[str, str]
) -> None:
    server = await make_server(plugins=[("host-ids", HostIds())])
    victim_sock = await server.connect({"token": f"host:{victim}"}, user_id=victim)
    attacker_sock = await server.connect({"token": f"host:{attacker}", **claim}, user_id=attacker)
    await server.app.emit_update(victim, {"t": "delete-session", "sid": "s"}, AllUserConnections())
    await server.app.emit_update(victim, {"t": "delete-session", "sid": "s"}, UserScopedOnly())
    assert (await victim_sock.next("update"))["body"] == {"t": "delete-session", "sid": "s"}
    assert await attacker_sock.nothing("update")
