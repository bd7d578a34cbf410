"""PROTOCOL.md §4.4/§5 across two ``happy-socket serve`` processes (PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from happy_socket.testing import TestSocket

from .conftest import ClusterFactory, unique_user

DISCONNECTED = {"ok": False, "error": "RPC target disconnected"}
NOT_AVAILABLE = {"ok": False, "error": "RPC method not available"}


def answer_with(sock: TestSocket, name: str) -> None:
    async def on_request(data: Any) -> Any:
        return {"by": name, "echo": data}

    sock.client.on("rpc-request", on_request)


async def register(sock: TestSocket, method: str) -> None:
    await sock.emit("rpc-register", {"method": method})
    assert await sock.next("rpc-registered") == {"method": method}


async def unregister(sock: TestSocket, method: str) -> None:
    await sock.emit("rpc-unregister", {"method": method})
    assert await sock.next("rpc-unregistered") == {"method": method}


def blocking_holder(sock: TestSocket) -> tuple[asyncio.Event, asyncio.Event]:
    """``sock`` announces each rpc-request and answers only once released."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(data: Any) -> Any:
        arrived.set()
        await release.wait()
        return "late"

    sock.client.on("rpc-request", slow)
    return arrived, release


async def test_rpc_in_both_directions(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=0.0)
    user = unique_user()
    daemon0 = await c.client(0, user, client_type="machine-scoped", machine_id="M0")
    daemon1 = await c.client(1, user, client_type="machine-scoped", machine_id="M1")
    app0, app1 = await c.client(0, user), await c.client(1, user)
    answer_with(daemon0, "d0")
    answer_with(daemon1, "d1")
    await register(daemon0, "M0:ls")
    await register(daemon1, "M1:ls")
    # app on process 1 -> daemon on process 0, and the other way round
    assert await app1.call("rpc-call", {"method": "M0:ls", "params": {"p": [1]}}) == {
        "ok": True,
        "result": {"by": "d0", "echo": {"method": "M0:ls", "params": {"p": [1]}}},
    }
    assert await app0.call("rpc-call", {"method": "M1:ls", "params": "x"}) == {
        "ok": True,
        "result": {"by": "d1", "echo": {"method": "M1:ls", "params": "x"}},
    }
    # a daemon calling the other daemon across processes, and a same-process call
    reply = await daemon0.call("rpc-call", {"method": "M1:ls", "params": None})
    assert reply["result"]["by"] == "d1"
    reply = await app0.call("rpc-call", {"method": "M0:ls", "params": None})
    assert reply["result"]["by"] == "d0"
    # another user's call finds nothing
    stranger = await c.client(1, unique_user("stranger"))
    assert await stranger.call("rpc-call", {"method": "M0:ls"}) == NOT_AVAILABLE


async def test_sigkill_of_holder_process_mid_call(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=0.0, timeout=10.0)
    user = unique_user()
    holder = await c.client(0, user, client_type="machine-scoped", machine_id="M")
    caller = await c.client(1, user)
    arrived, release = blocking_holder(holder)
    await register(holder, "M:slow")
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "M:slow"}, timeout=12))
    await asyncio.wait_for(arrived.wait(), 5)
    started = time.monotonic()
    c[0].kill()
    try:
        reply = await asyncio.wait_for(call, 6)  # the call timeout is 10 s
    finally:
        release.set()
    elapsed = time.monotonic() - started
    assert reply == DISCONNECTED
    assert elapsed < 4, elapsed  # PROTOCOL says about 2 s; generous margin, no benchmark
    # the dead process's registration is ignored afterwards
    assert await caller.call("rpc-call", {"method": "M:slow"}) == NOT_AVAILABLE


async def test_holder_socket_closing_on_other_process_mid_call(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=0.0, timeout=10.0)
    user = unique_user()
    holder = await c.client(0, user)
    caller = await c.client(1, user)
    arrived, release = blocking_holder(holder)
    await register(holder, "m")
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "m"}, timeout=12))
    await asyncio.wait_for(arrived.wait(), 5)
    await holder.disconnect()
    try:
        assert await asyncio.wait_for(call, 4) == DISCONNECTED
    finally:
        release.set()


async def test_holder_reconnecting_to_the_other_process_is_found(
    cluster: ClusterFactory,
) -> None:
    c = await cluster(2, grace=8.0)
    user = unique_user()
    caller = await c.client(0, user)
    old = await c.client(0, user, client_type="machine-scoped", machine_id="M")
    answer_with(old, "old")
    await register(old, "M:x")
    await old.disconnect()
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "M:x", "params": 1}, timeout=9))
    await asyncio.sleep(0.5)
    assert not call.done()  # waiting in the grace window
    new = await c.client(1, user, client_type="machine-scoped", machine_id="M")
    answer_with(new, "new")
    started = time.monotonic()
    await register(new, "M:x")
    assert await asyncio.wait_for(call, 5) == {
        "ok": True,
        "result": {"by": "new", "echo": {"method": "M:x", "params": 1}},
    }
    assert time.monotonic() - started < 3  # woken by the registration, not the 8 s grace


async def test_holder_whose_process_died_reconnects_elsewhere(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=8.0)
    user = unique_user()
    old = await c.client(0, user, client_type="machine-scoped", machine_id="M")
    caller = await c.client(1, user)
    answer_with(old, "old")
    await register(old, "M:x")
    c[0].kill()
    await asyncio.to_thread(c[0].wait)
    await asyncio.sleep(0.1)  # Redis has seen the connection close
    # its registration is still in Redis (liveness key up to ~2 s): the request is refused
    # by Redis (no listener) and the call waits for the grace window instead
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "M:x"}, timeout=9))
    await asyncio.sleep(0.3)
    new = await c.client(1, user, client_type="machine-scoped", machine_id="M")
    answer_with(new, "new")
    await register(new, "M:x")
    reply = await asyncio.wait_for(call, 6)
    assert reply == {"ok": True, "result": {"by": "new", "echo": {"method": "M:x", "params": None}}}


async def test_latest_wins_and_fallback_across_processes(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=0.0)
    user = unique_user()
    caller = await c.client(0, user)
    h0 = await c.client(0, user)
    h1 = await c.client(1, user)
    answer_with(h0, "h0")
    answer_with(h1, "h1")

    async def who() -> Any:
        reply = await caller.call("rpc-call", {"method": "m", "params": None})
        return reply["result"]["by"] if reply.get("ok") else reply

    await register(h0, "m")
    assert await who() == "h0"
    await register(h1, "m")  # on the other process, later: it wins
    assert await who() == "h1"
    await unregister(h1, "m")
    assert await who() == "h0"
    await register(h1, "m")
    assert await who() == "h1"
    await register(h0, "m")  # re-registering on the caller's process wins again
    assert await who() == "h0"
    await h0.disconnect()
    assert await who() == "h1"
    await unregister(h1, "m")
    assert await who() == NOT_AVAILABLE


async def test_dead_process_registrations_are_purged(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=0.0)
    user = unique_user()
    holder = await c.client(0, user)
    for i in range(3):
        await register(holder, f"m{i}")
    redis = aioredis.Redis.from_url(c.redis)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{c.prefix}:m:*")]
        assert len(keys) == 3
        c[0].kill()
        deadline = time.monotonic() + 8
        while keys and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            keys = [k async for k in redis.scan_iter(match=f"{c.prefix}:m:*")]
        assert keys == []  # swept by the surviving process within a few seconds
        assert await redis.smembers(f"{c.prefix}:procs") != set()  # the survivor remains
    finally:
        await redis.aclose()
