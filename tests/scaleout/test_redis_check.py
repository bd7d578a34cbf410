"""``--redis`` is checked at start: unreachable and cluster-mode servers are refused in one sentence."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from happy_socket import ConfigError, Settings, create_app
from happy_socket.fanout_link import check_redis

from ..conftest import service_missing
from .conftest import free_port


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is a valid, free port too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535 and port_free(port + 10000):
            return port
    raise AssertionError("no free port pair for a cluster-mode redis-server")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def cluster_mode_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this machine started with ``cluster-enabled yes`` (no slots assigned)."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server (to start a cluster-mode node)", FileNotFoundError())
    port = cluster_port()
    options = {"port": str(port), "bind": "127.0.0.1", "save": "", "appendonly": "no"}
    options |= {"cluster-enabled": "yes", "cluster-config-file": str(tmp_path / "nodes.conf")}
    options |= {"dir": str(tmp_path)}
    args = [binary]
    for name, value in options.items():
        args += [f"--{name}", value]
    proc = subprocess.Popen(args)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def wait_until_up(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                await client.ping()
                return
            except Exception:
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise AssertionError(f"the cluster-mode redis-server at {url} did not start")


async def test_cluster_mode_redis_is_refused_at_start(cluster_mode_redis: str) -> None:
    await wait_until_up(cluster_mode_redis)
    with pytest.raises(ConfigError) as refused:
        await check_redis(cluster_mode_redis)
    assert "cluster mode, which happy-socket does not support" in str(refused.value)
    app = create_app(Settings(db="sqlite:///:memory:", redis=cluster_mode_redis))
    with pytest.raises(ConfigError, match="cluster mode"):
        await app.startup()


async def test_unreachable_redis_is_refused_in_one_sentence() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(ConfigError) as refused:
        await check_redis(url)
    message = str(refused.value)
    assert message.startswith(f"Cannot connect to Redis at {url}: ")
    assert message.endswith(".") and "\n" not in message
