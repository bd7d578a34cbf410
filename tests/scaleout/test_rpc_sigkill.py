"""A holder's process killed with SIGKILL: calls fail fast, the holder is found elsewhere,
and the dead process's registrations disappear from Redis; a frozen (SIGSTOP) process is
treated as dead and heals itself when it runs again; SIGTERM withdraws at once."""

from __future__ import annotations

import asyncio
import signal
import time

import redis.asyncio as aioredis

from .conftest import ClusterFactory, unique_user
from .support import DISCONNECTED, answer_with, blocking_holder, register


async def test_sigkill_of_holder_process(cluster: ClusterFactory) -> None:
    c = await cluster(2, grace=8.0, timeout=10.0)
    user = unique_user()
    slow = await c.client(0, user, client_type="machine-scoped", machine_id="M")
    old = await c.client(0, user, client_type="machine-scoped", machine_id="N")
    caller = await c.client(1, user)
    arrived, release = blocking_holder(slow)
    answer_with(old, "old")
    await register(slow, "M:slow")
    for i in range(3):
        await register(old, f"N:{i}")
    redis = aioredis.Redis.from_url(c.redis)
    try:
        assert len([k async for k in redis.scan_iter(match=f"{c.prefix}:m:*")]) == 4

        # SIGSTOP (a frozen process: its Redis connection stays open): a call forwarded to it
        # fails once its liveness key expires; the survivor sweeps its registrations
        c[0].kill(signal.SIGSTOP)
        started = time.monotonic()
        reply = await caller.call("rpc-call", {"method": "N:1"}, timeout=8)
        assert reply == DISCONNECTED
        assert time.monotonic() - started < 5  # liveness TTL 2 s; generous margin
        key = f"{c.prefix}:m:{len(user)}:{user}:N:1"
        deadline = time.monotonic() + 8
        while await redis.exists(key) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not await redis.exists(key)
        # ... and once it runs again it publishes its registrations again by itself
        c[0].kill(signal.SIGCONT)
        reply = await caller.call("rpc-call", {"method": "N:1", "params": 2}, timeout=9)
        assert reply == {
            "ok": True,
            "result": {"by": "old", "echo": {"method": "N:1", "params": 2}},
        }
        in_flight = asyncio.ensure_future(caller.call("rpc-call", {"method": "M:slow"}, timeout=12))
        await asyncio.wait_for(arrived.wait(), 5)

        started = time.monotonic()
        c[0].kill()
        await asyncio.to_thread(c[0].wait)
        # a call made right after the death: the dead registration may still be in Redis
        # (liveness key up to 2 s); the request is refused or detected and the call keeps
        # waiting in its grace window for the daemon to come back
        waiting = asyncio.ensure_future(
            caller.call("rpc-call", {"method": "N:0", "params": 7}, timeout=9)
        )
        try:
            reply = await asyncio.wait_for(in_flight, 6)
        finally:
            release.set()
        assert reply == DISCONNECTED
        assert time.monotonic() - started < 4  # ~2 s in PROTOCOL; generous margin, no benchmark

        new = await c.client(1, user, client_type="machine-scoped", machine_id="N")
        answer_with(new, "new")
        await register(new, "N:0")
        assert await asyncio.wait_for(waiting, 6) == {
            "ok": True,
            "result": {"by": "new", "echo": {"method": "N:0", "params": 7}},
        }

        # the survivor sweeps the dead process's registrations out of Redis
        deadline = time.monotonic() + 8
        keys = [k async for k in redis.scan_iter(match=f"{c.prefix}:m:*")]
        while len(keys) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            keys = [k async for k in redis.scan_iter(match=f"{c.prefix}:m:*")]
        assert len(keys) == 1  # only N:0 of the new holder is left
        assert len(await redis.smembers(f"{c.prefix}:procs")) == 1

        # SIGTERM: the process withdraws its registrations and liveness key itself, at once
        # (without it they would stay visible up to the 2 s liveness TTL)
        c[1].kill(signal.SIGTERM)
        assert await asyncio.to_thread(c[1].wait) == 0
        assert [k async for k in redis.scan_iter(match=f"{c.prefix}:*")] == []
    finally:
        await redis.aclose()
