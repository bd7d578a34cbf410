"""Every Redis key happy-socket writes starts with the deployment's ``--redis-channel``.

Two deployments sharing one Redis with different channels (as docs/scaling.md advises) must
not see each other's presence: an app in the foreground, a machine online, RPC registrations.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory


async def keys_about(redis_url: str, user: str) -> list[str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return sorted([k.decode() async for k in client.scan_iter(match=f"*{user}*")])
    finally:
        await client.aclose()


async def test_two_channels_on_one_redis_share_no_presence_and_no_keys(
    make_server: ServerFactory, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAPPY_SOCKET_RPC_REDIS_PREFIX", raising=False)
    tag = uuid.uuid4().hex[:8]
    chan_a, chan_b = f"hs-test-a-{tag}", f"hs-test-b-{tag}"
    user = f"alice-{tag}"
    servers: list[ServerHarness] = [
        await make_server(redis=redis_url, redis_channel=chan, db=f"sqlite:///{tmp_path / name}")
        for chan, name in ((chan_a, "a.db"), (chan_b, "b.db"))
    ]
    a, b = servers
    focus_a, focus_b = (s.app.service("sessions") for s in servers)
    online_a, online_b = (s.app.service("machines") for s in servers)

    await a.client(user, appState="active")
    daemon = await a.client(user, client_type="machine-scoped", machine_id="m1")
    await daemon.emit("rpc-register", {"method": "m1:bash"})
    assert await daemon.next("rpc-registered") == {"method": "m1:bash"}

    assert await focus_a.app_active(user) is True
    assert await online_a.online(user, "m1") is True
    assert await focus_b.app_active(user) is False  # another deployment's foreground app
    assert await online_b.online(user, "m1") is False

    # B's own user of the same name is its own: presence on B does not leak to A either
    bg = await b.client(user, appState="background")
    assert await focus_b.app_active(user) is False and await focus_a.app_active(user) is True
    await bg.call("app-state", {"state": "active"})
    assert await focus_b.app_active(user) is True

    keys = await keys_about(redis_url, user)
    assert {k.split(":", 1)[0] for k in keys} == {chan_a, chan_b}, keys
    assert f"{chan_a}:focus:{user}" in keys and f"{chan_b}:focus:{user}" in keys
    assert any(k.startswith(f"{chan_a}:machine-online:") for k in keys), keys
    assert any(k.startswith(f"{chan_a}:rpc:") for k in keys), keys
    assert not any(k.startswith(f"{chan_b}:machine-online:") for k in keys), keys


async def test_processes_of_one_channel_still_share_presence(
    make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    chan, user = f"hs-test-{tag}", f"bob-{tag}"
    one, two = [
        await make_server(redis=redis_url, redis_channel=chan, db=f"sqlite:///{tmp_path / n}")
        for n in ("1.db", "2.db")
    ]
    await one.client(user, appState="active")
    await one.client(user, client_type="machine-scoped", machine_id="m1")
    assert await two.app.service("sessions").app_active(user) is True
    assert await two.app.service("machines").online(user, "m1") is True
    assert f"{chan}:focus:{user}" in await keys_about(redis_url, user)
