"""Redis restarted under two running processes: RPC resumes, nothing persisted is lost.

This module runs its own ``redis-server`` on a free port (``--save "" --appendonly no``:
a restart loses everything Redis held) so that restarting it cannot disturb other tests
using the shared Redis; the fixture always stops it, even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from happy_socket.testing import TestSocket

from ..conftest import service_missing
from .conftest import ClusterFactory, free_port, unique_user


class RedisServer:
    """A throw-away redis-server that can be killed and started again on the same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def launch(self) -> None:
        """Start redis-server (not waiting for it)."""
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )

    async def start(self) -> None:
        """Start redis-server and wait until it answers PING."""
        self.launch()
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
            raise AssertionError("redis-server did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Kill it (SIGKILL: nothing is saved, clients see their connections drop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server (binary)", FileNotFoundError("redis-server"))
        raise AssertionError("unreachable")
    server = RedisServer(binary, tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


def answer_with(sock: TestSocket, name: str) -> None:
    async def on_request(data: Any) -> Any:
        return {"by": name}

    sock.client.on("rpc-request", on_request)


async def register(sock: TestSocket, method: str) -> None:
    await sock.emit("rpc-register", {"method": method})
    assert await sock.next("rpc-registered") == {"method": method}


async def test_rpc_resumes_after_redis_restart(
    cluster: ClusterFactory, private_redis: RedisServer
) -> None:
    c = await cluster(2, grace=10.0, timeout=10.0, redis=private_redis.url)
    user = unique_user()
    holder = await c.client(0, user, client_type="machine-scoped", machine_id="M")
    local_caller = await c.client(0, user)
    remote_caller = await c.client(1, user)
    answer_with(holder, "holder")
    await register(holder, "M:a")
    assert await remote_caller.call("rpc-call", {"method": "M:a"}) == {
        "ok": True,
        "result": {"by": "holder"},
    }

    private_redis.stop()
    # Redis is down: a caller on the holder's own process is still served ...
    assert await local_caller.call("rpc-call", {"method": "M:a"}, timeout=5) == {
        "ok": True,
        "result": {"by": "holder"},
    }
    # ... and registering still answers (published once Redis is back)
    await register(holder, "M:b")

    await private_redis.start()  # empty: every registration and liveness key is gone
    # the processes re-publish their registrations within about a second; the call waits
    # in its grace window meanwhile
    for method in ("M:a", "M:b"):
        assert await remote_caller.call("rpc-call", {"method": method}, timeout=10) == {
            "ok": True,
            "result": {"by": "holder"},
        }
    # what PostgreSQL holds survived: accounts (tokens) still connect on both processes
    late = await c.client(1, user, client_type="machine-scoped", machine_id="M2")
    answer_with(late, "late")
    await register(late, "M2:c")
    assert await local_caller.call("rpc-call", {"method": "M2:c"}, timeout=10) == {
        "ok": True,
        "result": {"by": "late"},
    }


async def test_updates_resume_and_nothing_persisted_is_lost(
    cluster: ClusterFactory, private_redis: RedisServer
) -> None:
    import httpx

    c = await cluster(2, grace=2.0, redis=private_redis.url)
    user = unique_user()
    token = await c.token(user)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        created = await http.post(c[0].url + "/v1/sessions", json={"tag": "t", "metadata": "m"})
        sid = created.json()["session"]["id"]
        sender = await c.client(0, user, client_type="session-scoped", session_id=sid)
        app = await c.client(1, user)
        assert (await sender.call("message", {"sid": sid, "message": "before"}))["seq"] == 1
        assert (await app.next("update"))["body"]["message"]["seq"] == 1

        private_redis.stop()
        # stored in PostgreSQL even though its emit to process 1 is lost
        assert (await sender.call("message", {"sid": sid, "message": "during"}))["seq"] == 2
        await private_redis.start()

        # python-socketio's Redis manager reconnects with a backoff (1, 2, 4 s ...):
        # keep sending until a message crosses processes again
        seq = 2
        for _ in range(40):
            seq = (await sender.call("message", {"sid": sid, "message": "after"}))["seq"]
            with contextlib.suppress(TimeoutError):
                update = await app.next("update", timeout=0.5)
                if update["body"]["message"]["seq"] == seq:
                    break
        else:
            raise AssertionError("updates never crossed processes again after the restart")
        listed = await http.get(f"{c[1].url}/v1/sessions/{sid}/messages")
        seqs = [m["seq"] for m in listed.json()["messages"]]
        assert seqs == list(range(seq, 0, -1))  # newest first, no gap: nothing persisted lost
