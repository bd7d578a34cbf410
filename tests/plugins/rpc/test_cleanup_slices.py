"""Cleaning registrations out of Redis never blocks it for long: a closing socket, a process
that shuts down, a killed process (swept by a survivor) and a re-publish all work in slices
of at most ``cleanup_slice`` method keys per Redis call.

Redis's own MONITOR stream is the witness: every Lua script run that names this test's keys
is recorded with the commands it executed, so a test can count the slices and prove that no
single call handled more than one slice.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio
from happy_socket_rpc.registry import LocalRegistry, RedisRegistry

from happy_socket.testing import ServerHarness, TestSocket
from tests.scaleout.conftest import Process

from .test_rpc_events import register

ServerFactory = Callable[..., Awaitable[ServerHarness]]
SECRET = "test-secret-0123456789abcdef0123456789"  # the make_server fixture's


class ScriptLog:
    """The Lua script runs (from MONITOR) whose EVALSHA names a key under ``prefix``."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.prefix = prefix
        self.runs: list[list[str]] = []  # [EVALSHA line, commands the script ran...]
        self._client = aioredis.Redis.from_url(redis_url)
        self._monitor: Any = None
        self._task: asyncio.Task[None] | None = None
        self._marker = f"{prefix}:end-of-log"
        self._caught_up = asyncio.Event()

    async def __aenter__(self) -> ScriptLog:
        self._monitor = self._client.monitor()
        await self._monitor.__aenter__()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # the stream lags behind Redis: wait until it shows a marker sent after everything
        await self._client.echo(self._marker)
        async with asyncio.timeout(10):
            await self._caught_up.wait()
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._monitor.__aexit__(None, None, None)
        await self._client.aclose()

    async def _read(self) -> None:
        current: list[str] | None = None
        async for entry in self._monitor.listen():
            command = entry["command"]
            if entry["client_type"] == "lua":  # a script's commands follow its EVALSHA line
                if current is not None:
                    current.append(command)
                continue
            current = None
            if self._marker in command:
                self._caught_up.set()
            elif command.startswith("EVALSHA") and self.prefix in command:
                current = [command]
                self.runs.append(current)

    def running(self, command: str) -> list[list[str]]:
        """The runs that executed ``command`` (e.g. ``SPOP``), as lists of their commands."""
        return [run[1:] for run in self.runs if any(c.startswith(command + " ") for c in run[1:])]


def count(run: list[str], command: str) -> int:
    return sum(1 for c in run if c.startswith(command + " "))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Any) -> AsyncIterator[str]:
    name = f"hs-test:{uuid.uuid4().hex[:12]}"
    yield name
    keys = [k async for k in redis.scan_iter(match=f"{name}:*")]
    if keys:
        await redis.delete(*keys)


async def keys_of(redis: Any, prefix: str, kind: str) -> list[str]:
    return sorted([k.decode() async for k in redis.scan_iter(match=f"{prefix}:{kind}*")])


async def until(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def register_many(sock: TestSocket, methods: list[str]) -> None:
    """Register ``methods`` (pipelined: all sent, then every reply awaited)."""
    for method in methods:
        await sock.emit("rpc-register", {"method": method})
    replies = [await sock.next("rpc-registered", timeout=10) for _ in methods]
    assert sorted(r["method"] for r in replies) == sorted(methods)


async def test_closing_socket_is_cleaned_up_in_slices(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str
) -> None:
    server = await make_server(
        redis=redis_url, plugin_options={"rpc": {"redis_prefix": prefix, "cleanup_slice": 4}}
    )
    sock = await server.client("alice")
    await register_many(sock, [f"M1:method-{i}" for i in range(30)])
    assert len(await keys_of(redis, prefix, "m:")) == 30
    async with ScriptLog(redis_url, prefix) as log:
        await sock.disconnect()
        assert await until(lambda: _gone(redis, prefix, "m:", "regs:", "count:"), 5)
    slices = log.running("ZREM")
    assert len(slices) >= math.ceil(30 / 4)
    assert max(count(run, "ZREM") for run in slices) <= 4
    assert sum(count(run, "ZREM") for run in slices) == 30


async def _gone(redis: Any, prefix: str, *kinds: str) -> bool:
    for kind in kinds:
        if await keys_of(redis, prefix, kind):
            return False
    return True


async def test_shutdown_withdraws_in_slices(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str
) -> None:
    server = await make_server(
        redis=redis_url, plugin_options={"rpc": {"redis_prefix": prefix, "cleanup_slice": 10}}
    )
    socks = [await server.client("alice"), await server.client("bob")]
    for n, sock in enumerate(socks):
        await register_many(sock, [f"S{n}:m{i}" for i in range(25)])
    async with ScriptLog(redis_url, prefix) as log:
        await server.app.service("rpc").stop()
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*")] == []
    slices = log.running("SPOP")
    assert len(slices) >= 5  # 50 method keys, 10 per slice
    assert all(count(run, "ZREM") <= 10 for run in slices)
    spops = [c for run in slices for c in run if c.startswith("SPOP ")]
    assert spops and all(c.endswith(" 10") for c in spops)  # SPOP regs 10


async def test_dead_process_is_swept_in_slices(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str, tmp_path: Path
) -> None:
    """A real ``happy-socket serve`` holding 300 registrations is killed with SIGKILL; the
    in-process survivor sweeps them in slices of 25 and every key of the victim goes."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    survivor = await make_server(
        db=db,
        redis=redis_url,
        plugin_options={"rpc": {"redis_prefix": prefix, "cleanup_slice": 25}},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPPY_SOCKET_")}
    env |= {
        "HAPPY_SOCKET_RPC_REDIS_PREFIX": prefix,
        "HAPPY_SOCKET_RPC_MAX_METHODS_PER_SOCKET": "400",
    }
    victim = Process(
        0, ["--db", db, "--redis", redis_url, "--secret", SECRET], env, tmp_path / "v.log"
    )
    victim.start()
    client = socketio.AsyncClient(reconnection=False)
    try:
        await victim.wait_healthy()
        await client.connect(
            victim.url,
            socketio_path="/v1/updates",
            auth={"token": await survivor.token("alice")},
            transports=["websocket"],
            wait_timeout=5,
        )
        await register_many(TestSocket(client, "alice"), [f"M:{i}" for i in range(300)])
        mine = survivor.app.service("rpc").cluster.pid
        pids = {p.decode() for p in await redis.smembers(f"{prefix}:procs")} - {mine}
        assert len(pids) == 1
        pid = pids.pop()
        assert await redis.scard(f"{prefix}:regs:{pid}") == 300
        async with ScriptLog(redis_url, prefix) as log:
            victim.kill(signal.SIGKILL)
            await asyncio.to_thread(victim.wait)

            async def swept() -> bool:
                left = await redis.exists(
                    f"{prefix}:regs:{pid}", f"{prefix}:count:{pid}", f"{prefix}:proc:{pid}"
                )
                return not left and not await redis.sismember(f"{prefix}:procs", pid)

            assert await until(swept, 10), victim.output()
        assert await keys_of(redis, prefix, "m:") == []
    finally:
        await client.disconnect()
        victim.stop()
    slices = [run for run in log.running("SPOP") if pid in run[0]]
    assert len(slices) >= math.ceil(300 / 25)
    assert max(count(run, "ZREM") for run in slices) <= 25
    assert sum(count(run, "ZREM") for run in slices) == 300


async def test_concurrent_sweepers_share_the_slices(redis: Any, prefix: str) -> None:
    """Several processes sweeping one dead process take disjoint slices; all of it goes."""
    local = LocalRegistry()
    for i in range(120):
        local.add("alice", f"m{i}", "sid")
    dead = RedisRegistry(redis, prefix, "dead", slice_size=7)
    assert await dead.sync(local) == 120
    await redis.delete(dead.proc_key())
    sweepers = [RedisRegistry(redis, prefix, f"s{n}", slice_size=7) for n in range(3)]
    results = await asyncio.gather(*(s.purge("dead") for s in sweepers))
    assert sum(slices for slices, _ in results) >= math.ceil(120 / 7)
    assert all(finished for _, finished in results)
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*")] == []


async def test_purge_leaves_a_live_process_alone(redis: Any, prefix: str) -> None:
    local = LocalRegistry()
    for i in range(20):
        local.add("alice", f"m{i}", "sid")
    ghost = RedisRegistry(redis, prefix, "ghost", ttl_ms=60_000, slice_size=5)
    await ghost.sync(local)  # live: its liveness key exists
    sweeper = RedisRegistry(redis, prefix, "sweeper", slice_size=5)
    assert await sweeper.purge("ghost") == (0, False)
    assert await sweeper.sweep() == 0
    assert await redis.scard(ghost.regs_key()) == 20
    # it dies, a slice is purged, then it comes back (re-publishes): the purge stops there
    await redis.delete(ghost.proc_key())
    await sweeper._purge(
        keys=[sweeper.procs_key],
        args=[ghost.proc_key(), ghost.regs_key(), ghost.count_key(), "ghost", "5"],
    )
    assert await redis.scard(ghost.regs_key()) == 15
    await ghost.sync(local)
    assert await sweeper.purge("ghost") == (0, False)
    assert await redis.scard(ghost.regs_key()) == 20
    assert len(await ghost.lookup("alice", "m0")) == 1
    assert await redis.hgetall(ghost.count_key()) == {b"alice": b"20"}


async def test_republish_prunes_what_the_process_no_longer_holds_in_slices(
    make_server: ServerFactory, redis_url: str, redis: Any, prefix: str
) -> None:
    """Removals Redis missed (it was unreachable) are pruned by the re-publish, slice by
    slice; the user counts follow the process's own registrations."""
    server = await make_server(
        redis=redis_url, plugin_options={"rpc": {"redis_prefix": prefix, "cleanup_slice": 5}}
    )
    sock, other = await server.client("alice"), await server.client("bob")
    await register_many(sock, [f"m{i}" for i in range(20)])
    await register(other, "b")
    rpc = server.app.service("rpc")
    for i in range(12):  # as if these unregistrations had not reached Redis
        assert rpc.local.remove("alice", f"m{i}", sock.sid)
    assert rpc.local.remove("bob", "b", other.sid)
    reg: RedisRegistry = rpc.cluster.registry
    async with ScriptLog(redis_url, prefix) as log:
        rpc.cluster._dirty = True  # what a failed Redis write does

        async def pruned() -> bool:
            return await redis.scard(reg.regs_key()) == 8 and not rpc.cluster._dirty

        assert await until(pruned, 5)
    expected = sorted(reg.method_key("alice", f"m{i}") for i in range(12, 20))
    assert await keys_of(redis, prefix, "m:") == expected
    assert await redis.hgetall(reg.count_key()) == {b"alice": b"8"}
    publishes = [count(run, "ZADD") for run in log.running("ZADD")]
    assert len(publishes) >= 2 and max(publishes) <= 5  # 8 registrations left, 5 per slice
    prunes = [count(run, "ZRANGE") for run in log.running("ZRANGE") if not count(run, "ZADD")]
    assert len(prunes) >= math.ceil(20 / 5) and max(prunes) <= 5  # 20 method keys scanned
