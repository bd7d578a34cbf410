"""Registration limits with Redis: a refusal stores nothing in Redis either, and the per-user
limit counts the user's registrations on every live process (two in-process servers on one
key prefix, each on its own SQLite file: RPC needs no database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from happy_socket_rpc.registry import RedisRegistry

from happy_socket.testing import ServerHarness, TestSocket

from .test_registration_limits import FOR_USER, ON_SOCKET, refused
from .test_rpc_events import answer_with, register, unregister

ServerFactory = Callable[..., Awaitable[ServerHarness]]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Any) -> AsyncIterator[str]:
    """A key prefix of this test; its keys are deleted afterwards."""
    name = f"hs-test:{uuid.uuid4().hex[:12]}"
    yield name
    keys = [k async for k in redis.scan_iter(match=f"{name}:*")]
    if keys:
        await redis.delete(*keys)


async def pair(
    make_server: ServerFactory, redis_url: str, tmp_path: Path, prefix: str, **options: Any
) -> tuple[ServerHarness, ServerHarness]:
    rpc = {"redis_prefix": prefix, "grace": 0.0, **options}
    a = await make_server(redis=redis_url, plugin_options={"rpc": rpc})
    b = await make_server(
        redis=redis_url, plugin_options={"rpc": rpc}, db=f"sqlite:///{tmp_path / 'b.db'}"
    )
    return a, b


def registry(server: ServerHarness) -> RedisRegistry:
    reg: RedisRegistry = server.app.service("rpc").cluster.registry
    return reg


async def members(redis: Any, reg: RedisRegistry, user: str, method: str) -> list[bytes]:
    found: list[bytes] = await redis.zrange(reg.method_key(user, method), 0, -1)
    return found


async def counts(redis: Any, reg: RedisRegistry) -> dict[str, int]:
    raw = await redis.hgetall(reg.count_key())
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_refused_on_the_socket_limit_stores_nothing_in_redis(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str
) -> None:
    server = await make_server(
        redis=redis_url,
        plugin_options={"rpc": {"redis_prefix": prefix, "max_methods_per_socket": 2}},
    )
    sock = await server.client("alice")
    await register(sock, "a")
    await register(sock, "b")
    await refused(sock, "c", ON_SOCKET)
    reg = registry(server)
    assert await members(redis, reg, "alice", "c") == []
    assert await counts(redis, reg) == {"alice": 2}
    assert sorted(await redis.smembers(reg.regs_key())) == sorted(
        [reg.method_key("alice", "a").encode(), reg.method_key("alice", "b").encode()]
    )


async def test_user_limit_counts_registrations_on_every_process(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str, tmp_path: Path
) -> None:
    a, b = await pair(make_server, redis_url, tmp_path, prefix, max_methods_per_user=4)
    on_a, on_b = await a.client("alice"), await b.client("alice")
    for i in range(3):
        await register(on_a, f"a{i}")
    await register(on_b, "b0")
    await refused(on_b, "b1", FOR_USER)  # 3 on a + 1 on b: alice is at 4
    assert await members(redis, registry(b), "alice", "b1") == []
    assert not b.app.service("rpc").local.holds("alice", "b1", on_b.sid)
    assert await counts(redis, registry(b)) == {"alice": 1}
    await register(on_b, "b0")  # re-registering a held method is never refused
    # another user on the same processes has its own count
    bob = await b.client("bob")
    await register(bob, "b1")
    # an unregistration on a frees a place for b
    await unregister(on_a, "a0")
    await register(on_b, "b1")
    await refused(on_a, "a0", FOR_USER)


async def test_a_closed_socket_frees_its_places_on_every_process(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str, tmp_path: Path
) -> None:
    a, b = await pair(make_server, redis_url, tmp_path, prefix, max_methods_per_user=3)
    on_a, on_b = await a.client("alice"), await b.client("alice")
    for i in range(3):
        await register(on_a, f"a{i}")
    await refused(on_b, "b0", FOR_USER)
    await on_a.disconnect()
    for _ in range(100):
        if not await counts(redis, registry(a)):
            break
        await asyncio.sleep(0.02)
    assert await counts(redis, registry(a)) == {}  # a user with no registration: no field
    for i in range(3):
        await register(on_b, f"b{i}")


async def test_registrations_of_a_dead_process_do_not_count(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str
) -> None:
    """A process whose liveness key is gone no longer counts, even before it is swept."""
    server = await make_server(
        redis=redis_url,
        plugin_options={"rpc": {"redis_prefix": prefix, "max_methods_per_user": 3}},
    )
    ghost = RedisRegistry(redis, prefix, "ghost")
    await redis.set(ghost.proc_key(), "1", px=60_000)
    for i in range(2):
        await ghost.add("alice", f"g{i}", "gsid", 1.0, count=i + 1)
    sock = await server.client("alice")
    await register(sock, "m0")
    await refused(sock, "m1", FOR_USER)  # 2 on the live ghost + 1 here
    await redis.delete(ghost.proc_key())  # the ghost dies
    await register(sock, "m1")
    await register(sock, "m2")
    await refused(sock, "m3", FOR_USER)


async def test_refused_registration_is_not_callable_anywhere(
    make_server: ServerFactory, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    a, b = await pair(make_server, redis_url, tmp_path, prefix, max_methods_per_user=1)
    holder_a, holder_b = await a.client("alice"), await b.client("alice")
    caller: TestSocket = await a.client("alice")
    answer_with(holder_a, "a")
    answer_with(holder_b, "b")
    await register(holder_a, "x")
    await refused(holder_b, "y", FOR_USER)
    assert await caller.call("rpc-call", {"method": "y"}) == {
        "ok": False,
        "error": "RPC method not available",
    }
    assert (await caller.call("rpc-call", {"method": "x", "params": 1}))["result"]["by"] == "a"
