"""Two ``serve`` processes on PostgreSQL + Redis: ``happy-socket accounts delete``, run as a third
process, closes the user's sockets on both at once and both refuse the token afterwards.

Without the Redis notice the bound would be 15 s (the cached "account exists" answer and the
sweep); the test allows 3 s, so only the notice can pass it.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import socketio
import sqlalchemy as sa

from happy_socket.storage import accounts
from happy_socket.testing import TestSocket

from .conftest import SECRET, Cluster, ClusterFactory, command, unique_user

NOTICE_BOUND_S = 3.0


async def closed(sock: TestSocket, within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while sock.client.connected:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def refusal(url: str, token: str) -> str | None:
    """The ``connect_error`` message for ``token`` at ``url``, or None when accepted."""
    client = socketio.AsyncClient(reconnection=False)
    messages: list[Any] = []

    async def connect_error(data: Any) -> None:
        messages.append(data.get("message") if isinstance(data, dict) else data)

    client.on("connect_error", connect_error)
    try:
        await client.connect(
            url, socketio_path="/v1/updates", auth={"token": token}, transports=["websocket"]
        )
    except socketio.exceptions.ConnectionError:
        return str(messages[0]) if messages else "?"
    await client.disconnect()
    return None


async def sessions_status(url: str, token: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=url) as http:
        resp = await http.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.json()


async def delete_command(c: Cluster, db: str, user: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPPY_SOCKET_")}
    proc = await asyncio.create_subprocess_exec(
        *command(),
        *("accounts", "delete", user, "--db", db, "--redis", c.redis, "--secret", SECRET),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return int(proc.returncode or 0), out.decode()


async def test_accounts_delete_reaches_every_process_at_once(
    cluster: ClusterFactory, pg_url: str
) -> None:
    c = await cluster(2)
    user, keeper = unique_user("gone"), unique_user("kept")
    token = await c.token(user)
    on_first = await c.client(0, user)
    on_second = await c.client(1, user, client_type="machine-scoped", machine_id="m1")
    bystander = await c.client(1, keeper)
    for p in c.processes:  # both processes have the account cached now
        assert (await sessions_status(p.url, token))[0] == 200

    started = asyncio.get_running_loop().time()
    code, out = await delete_command(c, pg_url, user)
    assert code == 0, out
    assert json.loads(out) == {"success": True}
    assert await closed(on_first, NOTICE_BOUND_S), c.logs()
    assert await closed(on_second, NOTICE_BOUND_S), c.logs()
    assert asyncio.get_running_loop().time() - started < NOTICE_BOUND_S + 2  # CLI start-up
    for p in c.processes:
        assert await refusal(p.url, token) == "Invalid authentication token"
        assert await sessions_status(p.url, token) == (401, {"error": "Invalid token"})
    assert bystander.client.connected and await bystander.call("ping") == {}
    row = await c.app.db.fetch_one(sa.select(accounts).where(accounts.c.id == user))
    assert row is None

    again = await delete_command(c, pg_url, user)
    assert again[0] == 1 and "Account not found" in again[1]


async def test_the_library_delete_on_one_process_reaches_the_other(
    cluster: ClusterFactory, pg_url: str, redis_url: str
) -> None:
    """``AccountsService.delete_account`` in an app of the deployment (same Redis channel)."""
    from happy_socket_accounts import AccountsService

    from happy_socket import Settings, create_app

    c = await cluster(2)
    user = unique_user("lib")
    token = await c.token(user)
    socks = [await c.client(i, user) for i in range(2)]
    app = create_app(Settings(db=pg_url, redis=redis_url, secret=SECRET))
    await app.startup()
    try:
        assert await app.service(AccountsService).delete_account(user) is True
    finally:
        await app.shutdown()
    for sock in socks:
        assert await closed(sock, NOTICE_BOUND_S), c.logs()
    for p in c.processes:
        assert await refusal(p.url, token) == "Invalid authentication token"
