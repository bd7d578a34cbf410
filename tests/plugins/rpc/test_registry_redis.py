"""The Redis mirror of the RPC registry (one in-process server with ``--redis``).

Live registrations never expire, lost ones are re-published, dead processes' ones are
ignored and swept. Each test uses its own key prefix.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from happy_socket_rpc.registry import LocalRegistry, RedisRegistry

from happy_socket.testing import ServerHarness

from .test_rpc_events import answer_with, register

ServerFactory = Callable[..., Awaitable[ServerHarness]]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def prefix() -> str:
    return f"hs-test:{uuid.uuid4().hex[:12]}"


async def until(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def test_registry_scripts(redis: Any) -> None:
    p = prefix()
    local = LocalRegistry()
    alive = RedisRegistry(redis, p, "alive", ttl_ms=2000)
    dead = RedisRegistry(redis, p, "dead", ttl_ms=2000)
    try:
        local.add("u", "m", "s1")
        await alive.sync(local)  # publishes and sets the liveness key
        assert await dead.add("u", "m", "s2", 2e15) is False  # no liveness key for "dead"
        assert await dead.add("u2", "m", "s3", 2e15) is False
        # same user, other method; same method, other user: never mixed up
        assert await alive.add("u", "m:x", "s1", 1.0) is True
        found = await alive.lookup("u", "m")
        assert [(h.pid, h.sid) for h in found] == [("alive", "s1")]  # dead process ignored
        assert await alive.sweep() == 1
        assert await redis.zrange(dead.method_key("u", "m"), 0, -1) == [b"alive|s1"]
        assert await redis.exists(dead.method_key("u2", "m")) == 0
        assert await redis.smembers(alive.procs_key) == {b"alive"}
        await alive.remove("u", "m", "s1")
        assert await alive.lookup("u", "m") == []
        assert await redis.smembers(alive.regs_key()) == {alive.method_key("u", "m:x").encode()}
        await alive.withdraw()
        assert [k async for k in redis.scan_iter(match=f"{p}:*")] == []
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{p}:*")]
        if keys:
            await redis.delete(*keys)


async def test_method_keys_are_unambiguous(redis: Any) -> None:
    reg = RedisRegistry(redis, "p", "pid")
    assert reg.method_key("a:b", "c") != reg.method_key("a", "b:c")


async def test_live_registration_outlives_the_liveness_ttl(
    make_server: ServerFactory, redis_url: str, redis: Any
) -> None:
    p = prefix()
    server = await make_server(redis=redis_url, plugin_options={"rpc": {"redis_prefix": p}})
    holder = await server.client("alice")
    await register(holder, "m")
    rpc = server.app.service("rpc")
    await asyncio.sleep(2.6)  # longer than the 2 s liveness TTL: heartbeats keep it
    holders = await rpc.cluster.registry.lookup("alice", "m")
    assert [(h.pid, h.sid) for h in holders] == [(rpc.cluster.pid, holder.sid)]


async def test_lost_registrations_are_published_again(
    make_server: ServerFactory, redis_url: str, redis: Any
) -> None:
    p = prefix()
    server = await make_server(
        redis=redis_url, plugin_options={"rpc": {"redis_prefix": p, "grace": 5.0}}
    )
    holder, caller = await server.client("alice"), await server.client("alice")
    answer_with(holder, "holder")
    await register(holder, "m")
    rpc = server.app.service("rpc")
    # what a Redis restart does to this prefix: every key is gone
    await redis.delete(*[k async for k in redis.scan_iter(match=f"{p}:*")])

    async def republished() -> bool:
        return len(await rpc.cluster.registry.lookup("alice", "m")) == 1

    assert await until(republished, 3)
    reply = await caller.call("rpc-call", {"method": "m", "params": 1})
    assert reply["ok"] is True


async def test_shutdown_withdraws_everything(
    make_server: ServerFactory, redis_url: str, redis: Any
) -> None:
    p = prefix()
    server = await make_server(redis=redis_url, plugin_options={"rpc": {"redis_prefix": p}})
    holder = await server.client("alice")
    await register(holder, "m")
    assert [k async for k in redis.scan_iter(match=f"{p}:m:*")] != []
    await server.app.service("rpc").stop()
    assert [k async for k in redis.scan_iter(match=f"{p}:*")] == []
    await asyncio.sleep(0.7)  # no heartbeat brings anything back
    assert [k async for k in redis.scan_iter(match=f"{p}:*")] == []


async def test_holder_gone_before_the_request_arrived_falls_back(
    make_server: ServerFactory, redis_url: str, tmp_path: Any
) -> None:
    """Two in-process servers on one Redis prefix (each its own SQLite: RPC needs no DB)."""
    options = {"rpc": {"redis_prefix": prefix(), "grace": 0.0}}
    a = await make_server(redis=redis_url, plugin_options=options)
    b = await make_server(
        redis=redis_url, plugin_options=options, db=f"sqlite:///{tmp_path / 'b.db'}"
    )
    caller, older = await a.client("alice"), await a.client("alice")
    newer = await b.client("alice")
    answer_with(older, "older")
    answer_with(newer, "newer")
    await register(older, "m")
    await register(newer, "m")
    reply = await caller.call("rpc-call", {"method": "m", "params": None})
    assert reply["result"]["by"] == "newer"  # across the two servers
    # b forgets the registration but Redis still lists it (as in the instant between a
    # disconnect and its removal from Redis): b answers "not here", a falls back
    assert b.app.service("rpc").local.remove("alice", "m", newer.sid)
    reply = await caller.call("rpc-call", {"method": "m", "params": None})
    assert reply == {
        "ok": True,
        "result": {"by": "older", "echo": {"method": "m", "params": None}},
    }
    await older.emit("rpc-unregister", {"method": "m"})
    assert await older.next("rpc-unregistered") == {"method": "m"}
    assert await caller.call("rpc-call", {"method": "m"}) == {
        "ok": False,
        "error": "RPC method not available",
    }
