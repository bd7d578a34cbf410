"""--redis-channel: processes of one deployment share emits; two deployments on one Redis don't."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from happy_socket import AllUserConnections, ConfigError, Settings
from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory


async def started(make_server: ServerFactory, redis: str, channel: str, db: Path) -> ServerHarness:
    return await make_server(redis=redis, redis_channel=channel, db=f"sqlite:///{db}")


async def test_emits_cross_processes_on_one_channel_only(
    make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    mine, other = f"hs-test-{uuid.uuid4().hex[:8]}", f"hs-test-{uuid.uuid4().hex[:8]}"
    sender = await started(make_server, redis_url, mine, tmp_path / "a.db")
    peer = await started(make_server, redis_url, mine, tmp_path / "b.db")
    stranger = await started(make_server, redis_url, other, tmp_path / "c.db")
    on_peer = await peer.client("alice")
    on_stranger = await stranger.client("alice")
    await asyncio.sleep(0.3)  # the Redis managers' subscriptions are up
    await sender.app.emit_ephemeral("alice", {"type": "probe", "n": 1}, AllUserConnections())
    assert await on_peer.next("ephemeral") == {"type": "probe", "n": 1}
    with pytest.raises(TimeoutError):
        await on_stranger.next("ephemeral", timeout=0.5)
    assert sender.app.service("rpc").prefix == f"{mine}:rpc"


def test_channel_defaults_and_must_not_be_empty() -> None:
    assert Settings().redis_channel == "happy-socket"
    assert Settings.from_env({"HAPPY_SOCKET_REDIS_CHANNEL": "team-a"}).redis_channel == "team-a"
    with pytest.raises(ConfigError, match="channel"):
        Settings(redis_channel=" ")
