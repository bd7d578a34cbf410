"""Several ``happy-socket serve`` processes sharing one PostgreSQL database and one Redis.

``await cluster(n, grace=..., timeout=...)`` starts ``n`` processes on free ports (each with
``--db``, ``--redis``, one shared ``--secret`` and a Redis key prefix private to the test),
waits for ``/health`` and returns a :class:`Cluster`; teardown sends SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import socketio

from happy_socket import App, Settings, create_app
from happy_socket.testing import TestSocket

from ..conftest import PG_ADMIN_URL, REDIS_URL, service_missing

SECRET = "scaleout-secret-0123456789abcdef0123456789"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def command() -> list[str]:
    """How to run ``happy-socket`` with the Python running the tests."""
    beside = Path(sys.executable).parent / "happy-socket"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("happy-socket")
    return [found] if found else [sys.executable, "-c", "from happy_socket.cli import main; main()"]


class Process:
    """One ``happy-socket serve`` subprocess."""

    def __init__(self, index: int, args: list[str], env: dict[str, str], log: Path) -> None:
        self.index = index
        self.args = args
        self.env = env
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminating = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch the process (on the same port as before when restarted)."""
        self.terminating = False
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*command(), "serve", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def wait_healthy(self) -> None:
        """Wait until ``GET /health`` answers 200."""
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        async with httpx.AsyncClient() as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"process {self.index} exited:\n{self.output()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/health", timeout=1)).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"process {self.index} not healthy:\n{self.output()}")
                await asyncio.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default: no cleanup at all)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.terminating = sig == signal.SIGTERM

    def wait(self, timeout: float = 10) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if not self.terminating:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        """The process's log so far (last 4000 characters)."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


class Cluster:
    """N processes, a token issuer on the same database, and clients bound to a process."""

    def __init__(self, app: App, processes: list[Process], prefix: str, redis: str) -> None:
        self.app = app
        self.processes = processes
        self.prefix = prefix
        self.redis = redis
        self._sockets: list[TestSocket] = []

    def __getitem__(self, index: int) -> Process:
        return self.processes[index]

    async def token(self, user: str) -> str:
        """A token for ``user``; the account is created in the shared database."""
        return await self.app.issue_token(user)

    async def client(
        self,
        index: int,
        user: str,
        *,
        client_type: str | None = None,
        session_id: str | None = None,
        machine_id: str | None = None,
    ) -> TestSocket:
        """A websocket client of ``user`` connected to process ``index``."""
        auth: dict[str, Any] = {"token": await self.token(user)}
        if client_type is not None:
            auth["clientType"] = client_type
        if session_id is not None:
            auth["sessionId"] = session_id
        if machine_id is not None:
            auth["machineId"] = machine_id
        client = socketio.AsyncClient(reconnection=False)
        sock = TestSocket(client, user)
        await client.connect(
            self.processes[index].url,
            socketio_path="/v1/updates",
            auth=auth,
            transports=["websocket"],
            wait_timeout=5,
        )
        self._sockets.append(sock)
        return sock

    async def close_clients(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.disconnect(), 2)

    async def cluster_received(self, index: int) -> dict[str, float]:
        """``happy_socket_cluster_messages_received_total`` of process ``index``, by kind."""
        return await self.counter(index, "happy_socket_cluster_messages_received_total")

    async def counter(self, index: int, name: str) -> dict[str, float]:
        """A labelled counter of process ``index``'s ``/metrics``, by its ``kind`` label."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(self.processes[index].url + "/metrics", timeout=5)).text
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels, value = line[len(name) + 1 :].rsplit("} ", 1)
                kind = labels.split('kind="', 1)[1].split('"', 1)[0]
                found[kind] = float(value)
        return found

    async def value(self, index: int, name: str) -> float:
        """An unlabelled counter of process ``index``'s ``/metrics`` (0 when absent)."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(self.processes[index].url + "/metrics", timeout=5)).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split(" ", 1)[1])
        return 0.0

    def logs(self) -> str:
        return "\n".join(f"--- process {p.index} ---\n{p.output()}" for p in self.processes)


ClusterFactory = Callable[..., Awaitable[Cluster]]


async def cluster_in_mode(
    cluster: ClusterFactory, mode: str, n: int = 3, grace: float = 2.0
) -> Cluster:
    """``n`` processes in pub/sub ``mode`` on a channel of their own (nothing another test
    publishes can reach them)."""
    channel = f"hs-{mode}-{uuid.uuid4().hex[:8]}"
    return await cluster(n, grace=grace, extra=("--redis-pubsub", mode, "--redis-channel", channel))


def unique_user(name: str = "u") -> str:
    """A user id no other test (or concurrently running suite) uses."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


async def start_cluster(
    db: str,
    redis: str,
    logdir: Path,
    n: int = 2,
    *,
    grace: float = 10.0,
    timeout: float = 10.0,
    extra: tuple[str, ...] = (),
) -> Cluster:
    """Migrate ``db``, then start ``n`` processes and wait until all answer /health
    (``extra``: more ``serve`` arguments, e.g. ``("--redis-pubsub", "plain")``)."""
    app = create_app(Settings(db=db, secret=SECRET))
    await app.startup()  # creates/migrates the schema before the processes start
    prefix = f"hs-test:{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPPY_SOCKET_")}
    env |= {"HAPPY_SOCKET_RPC_TIMEOUT": str(timeout), "HAPPY_SOCKET_RPC_REDIS_PREFIX": prefix}
    # no periodic re-read of the registry: only registration announcements wake a waiting call
    env["HAPPY_SOCKET_RPC_RECHECK"] = "60"
    args = ["--db", db, "--redis", redis, "--secret", SECRET]
    args += ["--rpc-grace", str(grace), "--log-level", "info", *extra]
    tag = uuid.uuid4().hex[:6]
    processes = [Process(i, args, env, logdir / f"serve-{tag}-{i}.log") for i in range(n)]
    result = Cluster(app, processes, prefix, redis)
    for p in processes:
        p.start()
    try:
        await asyncio.gather(*(p.wait_healthy() for p in processes))
    except BaseException:
        await stop_cluster(result)
        raise
    return result


async def stop_cluster(c: Cluster, *, show_logs: bool = False) -> None:
    """Close the clients, SIGTERM every process (SIGKILL after 5 s), stop the token issuer."""
    await c.close_clients()
    for p in c.processes:
        p.kill(signal.SIGTERM)
    for p in c.processes:
        await asyncio.to_thread(p.stop)
    if show_logs:
        print(c.logs())
    await c.app.shutdown()


@pytest.fixture
async def cluster(
    pg_url: str, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ClusterFactory]:
    """``await cluster(n=2, grace=10.0, timeout=10.0, redis=None, extra=())`` -> a started
    Cluster."""
    made: list[Cluster] = []

    async def make(
        n: int = 2,
        *,
        grace: float = 10.0,
        timeout: float = 10.0,
        redis: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> Cluster:
        c = await start_cluster(
            pg_url, redis or redis_url, tmp_path, n, grace=grace, timeout=timeout, extra=extra
        )
        made.append(c)
        return c

    yield make
    report = getattr(request.node, "rep_call", None)
    for c in made:
        await stop_cluster(c, show_logs=report is not None and report.failed)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """Two processes shared by the non-destructive tests of the package (grace 2 s).

    Tests using it mark themselves ``pytest.mark.asyncio(loop_scope="package")`` and use
    their own users (:func:`unique_user`), so they cannot see each other.
    """
    import asyncpg
    import redis.asyncio as aioredis

    name = "hs_" + uuid.uuid4().hex[:16]
    try:
        admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            # a test database needs no durability: commits stop waiting for the disk
            await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        finally:
            await admin.close()
    except Exception as exc:
        service_missing("PostgreSQL", exc)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        service_missing("Redis", exc)
    finally:
        await client.aclose()
    db = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    c = await start_cluster(db, REDIS_URL, tmp_path_factory.mktemp("shared"), 2, grace=2.0)
    try:
        yield c
    finally:
        await stop_cluster(c)
        admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
