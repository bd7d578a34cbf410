"""Isolation matrix on two ``happy-socket serve`` processes (PostgreSQL + Redis).

A's app and session sockets are on process 0, A's machine (the RPC holder) on process 1;
B has sockets on both. Emits travel through Redis, RPC through the cross-process registry.
"""

from __future__ import annotations

from typing import Any

import attrs

from happy_socket import App
from happy_socket.testing import TestSocket
from tests.scaleout.conftest import Cluster, ClusterFactory, unique_user

from .isolation import Matrix


@attrs.define
class TwoProcesses:
    """A cluster of serve processes; ``app`` is the test's issuer on the same database."""

    cluster: Cluster

    @property
    def app(self) -> App:
        return self.cluster.app

    def url(self, index: int) -> str:
        return self.cluster[index].url

    async def connect(self, index: int, user: str, **auth: Any) -> TestSocket:
        return await self.cluster.client(
            index,
            user,
            client_type=auth.get("clientType"),
            session_id=auth.get("sessionId"),
            machine_id=auth.get("machineId"),
        )


async def test_user_b_cannot_reach_user_a_across_processes(cluster: ClusterFactory) -> None:
    deployment = TwoProcesses(await cluster(2, grace=0.0))
    matrix = Matrix(deployment)
    await matrix.run(unique_user("alice"), unique_user("bob"))
    assert matrix.tried > 100
    assert not matrix.failures, "\n".join(matrix.failures[:20])
