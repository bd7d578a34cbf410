"""Faults: the database goes away at request time; the server is stopped mid-traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import socketio
import sqlalchemy as sa

from happy_socket import App, Settings, create_app
from happy_socket.settings import sqlite_path
from happy_socket.testing import ServerHarness, TestSocket
from tests.conftest import ServerFactory, _admin
from tests.scaleout.conftest import ClusterFactory, Process, unique_user

from .support import FRESH, create_resources

INTERNAL = {"result": "error", "message": "Internal error"}
INTERNAL_HTTP = {
    "error": "Internal Server Error",
    "message": "An unexpected error occurred",
    "statusCode": 500,
}
SECRET = "faults-secret-0123456789abcdef0123456789"


async def health(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(limits=FRESH, base_url=url, timeout=10) as http:
        reply = await http.get("/health")
        return reply.status_code, reply.json()


async def wait_for(check: Any, within: float = 15.0) -> None:
    """Poll the async ``check()`` until it is true."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the server did not recover")
        await asyncio.sleep(0.1)


async def outage_answers(server: ServerHarness, sock: TestSocket, sid: str) -> None:
    """While the database is away: envelope errors, 503, 500 — and the socket stays up."""
    app = server.app
    ack = await sock.call("update-metadata", {"sid": sid, "metadata": "x", "expectedVersion": 0})
    assert ack == INTERNAL
    assert (
        await sock.call("message", {"sid": sid, "message": "lost", "localId": "lost"}) == INTERNAL
    )
    if "usage-report" in app.registry:
        report = {"key": "k", "tokens": {"total": 1}, "cost": {"total": 1}}
        assert await sock.call("usage-report", report) == {
            "success": False,
            "error": "Failed to save usage report",
        }
    status, body = await health(server.url)
    assert status == 503 and body["status"] == "error", body
    assert await sock.call("ping") == {}


async def recovered(server: ServerHarness, sock: TestSocket, sid: str) -> None:
    """The database is back: the same requests succeed without a restart."""

    async def healthy() -> bool:
        return (await health(server.url))[0] == 200

    await wait_for(healthy)

    async def writes() -> bool:
        ack = await sock.call("message", {"sid": sid, "message": "back", "localId": "back"})
        return bool(ack.get("result") == "success")

    await wait_for(writes)
    ack = await sock.call("update-metadata", {"sid": sid, "metadata": "y", "expectedVersion": 0})
    assert ack == {"result": "success", "version": 1, "metadata": "y"}
    token = await server.token("alice")
    async with httpx.AsyncClient(
        limits=FRESH, base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        messages = (await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]
    local_ids = [m["localId"] for m in messages]
    assert "back" in local_ids and "lost" not in local_ids
    assert [m["seq"] for m in messages] == list(range(len(messages), 0, -1))  # no gap


async def test_postgresql_goes_away_and_comes_back(make_server: ServerFactory, pg_url: str) -> None:
    server = await make_server(db=pg_url)
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    name = pg_url.rsplit("/", 1)[1]
    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await _admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        await outage_answers(server, sock, own.session_id)
        # a user this process has not seen: the account check cannot run, and the refusal
        # says so instead of calling a good token invalid
        assert await server.refusal({"token": server.app.tokens.issue("newcomer")}) == (
            "Internal error"
        )
        assert await server.refusal({"token": "not-a-token"}) == "Invalid authentication token"
        token = await server.token("alice")
        async with httpx.AsyncClient(
            limits=FRESH, base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            reply = await http.get("/v1/sessions")
            assert (reply.status_code, reply.json()) == (500, INTERNAL_HTTP)
    finally:
        await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    await recovered(server, sock, own.session_id)


async def test_sqlite_locked_by_another_process_and_released(
    make_server: ServerFactory, sqlite_url: str
) -> None:
    server = await make_server(db=sqlite_url)
    app = server.app
    # With a busy_timeout of its own the writer gives up after SQLite's wait (0.2 s) instead
    # of retrying for 5 s: the outage answers come quickly.
    await app.db.write(lambda tx: tx.execute("PRAGMA busy_timeout=200"))
    sock = await server.client("alice")
    own = await create_resources(server.url, app, "alice", sock)
    path = sqlite_path(app.settings.db)
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN EXCLUSIVE")
        await outage_answers(server, sock, own.session_id)
        # reads still work on SQLite (WAL): an unseen account is checked and refused normally
        newcomer = server.app.tokens.issue("newcomer")
        assert await server.refusal({"token": newcomer}) == "Invalid authentication token"
    finally:
        other.execute("ROLLBACK")
        other.close()
    await recovered(server, sock, own.session_id)


# -- stopping a serve process mid-traffic --------------------------------------------


async def _prepare(db: str) -> str:
    """Create the schema and the account; return a token (the server runs in a subprocess)."""
    app = create_app(Settings(db=db, secret=SECRET))
    await app.startup()
    try:
        return await app.issue_token("writer")
    finally:
        await asyncio.wait_for(app.shutdown(), 20)  # fail fast rather than hang


async def _stored(db: str) -> list[tuple[str | None, int]]:
    """(localId, seq) of every stored message, read straight from the database."""
    app: App = create_app(Settings(db=db, secret=SECRET))
    await app.startup()
    try:
        table = app.metadata.tables["session_messages"]
        rows = await app.db.fetch_all(sa.select(table.c.local_id, table.c.seq))
        return [(r["local_id"], int(r["seq"])) for r in rows]
    finally:
        await asyncio.wait_for(app.shutdown(), 20)


async def _connect(url: str, token: str, **auth: Any) -> TestSocket:
    client = socketio.AsyncClient(reconnection=False)
    sock = TestSocket(client, "writer")
    await client.connect(
        url, socketio_path="/v1/updates", auth={"token": token, **auth}, transports=["websocket"]
    )
    return sock


async def _session(process: Process, token: str) -> str:
    async with httpx.AsyncClient(
        limits=FRESH, base_url=process.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        reply = await http.post("/v1/sessions", json={"tag": "t", "metadata": "m"})
        return str(reply.json()["session"]["id"])


async def _write_until(
    watcher: TestSocket, writers: list[TestSocket], sid: str, prefix: str, kill: Callable[[], None]
) -> tuple[set[str], set[str]]:
    """The writers send messages until ``kill()`` ran mid-way; (acked, broadcast to watcher)."""
    acked: set[str] = set()
    stop = asyncio.Event()

    async def write(index: int, sock: TestSocket) -> None:
        n = 0
        while not stop.is_set():
            local = f"{prefix}w{index}-{n}"
            n += 1
            try:
                ack = await sock.client.call(
                    "message", {"sid": sid, "message": local, "localId": local}, timeout=2
                )
            except Exception:
                return
            if isinstance(ack, dict) and ack.get("result") == "success":
                acked.add(local)

    tasks = [asyncio.create_task(write(i, s)) for i, s in enumerate(writers)]
    while len(acked) < 40:
        await asyncio.sleep(0.01)
    kill()
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    broadcast = {
        u["body"]["message"]["localId"]
        for u in watcher.events["update"]
        if u["body"].get("t") == "new-message"
    }
    return acked, broadcast


async def _traffic_then_signal(
    process: Process, token: str, sid: str, sig: int
) -> tuple[set[str], set[str]]:
    """Send messages from 4 sockets; ``sig`` the server mid-way; (acked, broadcast)."""
    watcher = await _connect(process.url, token)
    writers = [
        await _connect(process.url, token, clientType="session-scoped", sessionId=sid)
        for _ in range(4)
    ]
    acked, broadcast = await _write_until(
        watcher, writers, sid, f"{sig}-", lambda: process.kill(sig)
    )
    for sock in (watcher, *writers):
        with contextlib.suppress(Exception):
            await sock.disconnect()
    return acked, broadcast


async def test_stopped_mid_traffic_loses_nothing_acked_or_broadcast(
    db_url: str, tmp_path: Path
) -> None:
    """SIGTERM, restart, check; then SIGKILL, restart, check (one serve process, one DB)."""
    token = await _prepare(db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPPY_SOCKET_")}
    args = ["--db", db_url, "--secret", SECRET, "--log-level", "warning"]
    process = Process(0, args, env, tmp_path / "serve.log")
    process.start()
    try:
        await process.wait_healthy()
        sid = await _session(process, token)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            acked, broadcast = await _traffic_then_signal(process, token, sid, sig)
            assert process.proc is not None
            code = await asyncio.to_thread(process.proc.wait, 15)
            if sig == signal.SIGTERM:
                assert code == 0, process.output()
            process.start()  # the same database, the same port
            await process.wait_healthy()
            stored = await _stored(db_url)
            local_ids = {local for local, _ in stored}
            assert acked and broadcast
            lost_acked, lost_broadcast = acked - local_ids, broadcast - local_ids
            assert not lost_acked, f"{sig!r}: acked but not stored: {sorted(lost_acked)[:10]}"
            assert not lost_broadcast, f"{sig!r}: broadcast, lost: {sorted(lost_broadcast)[:10]}"
            assert sorted(seq for _, seq in stored) == list(range(1, len(stored) + 1))
        after = await _connect(process.url, token, clientType="session-scoped", sessionId=sid)
        ack = await after.call("message", {"sid": sid, "message": "after", "localId": "after"})
        assert ack["result"] == "success" and ack["seq"] == len(stored) + 1, ack
        await after.disconnect()
    finally:
        process.stop()


async def test_sqlite_short_lock_is_waited_out_while_the_server_keeps_answering(
    make_server: ServerFactory, sqlite_url: str
) -> None:
    """Default settings: a write waits (up to 5 s) for another process's lock, off the loop."""
    server = await make_server(db=sqlite_url)
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    path = sqlite_path(server.app.settings.db)
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN EXCLUSIVE")
        update = {"sid": own.session_id, "metadata": "x", "expectedVersion": 0}
        pending = asyncio.create_task(sock.call("update-metadata", update, timeout=15))
        await asyncio.sleep(0.2)
        assert not pending.done()
        assert await sock.call("ping") == {}  # the event loop keeps serving
        assert (await health(server.url))[0] == 503  # the database does not answer in 2 s
        assert not pending.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await pending == {"result": "success", "version": 1, "metadata": "x"}


async def test_sigkill_of_one_of_two_processes_loses_nothing_broadcast(
    cluster: ClusterFactory,
) -> None:
    """Writers on process 1, the watcher on process 0 (fan-out through Redis); kill 1."""
    group = await cluster(2, grace=0.0)
    user = unique_user("writer")
    token = await group.token(user)
    sid = await _session(group[1], token)
    watcher = await group.client(0, user)
    writers = [
        await group.client(1, user, client_type="session-scoped", session_id=sid) for _ in range(4)
    ]
    acked, broadcast = await _write_until(
        watcher, writers, sid, "", lambda: group[1].kill(signal.SIGKILL)
    )
    table = group.app.metadata.tables["session_messages"]
    rows = await group.app.db.fetch_all(
        sa.select(table.c.local_id, table.c.seq).where(table.c.session_id == sid)
    )
    stored = {r["local_id"] for r in rows}
    assert broadcast and not (broadcast - stored), sorted(broadcast - stored)[:10]
    assert not (acked - stored), sorted(acked - stored)[:10]
    assert sorted(int(r["seq"]) for r in rows) == list(range(1, len(rows) + 1))
    assert await watcher.call("ping") == {}  # process 0 is unaffected
