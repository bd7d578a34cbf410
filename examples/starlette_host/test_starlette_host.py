"""Smoke test of the embedding example: host route → library API → new-session on the socket."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import socketio
import uvicorn

from examples.starlette_host.host import build, host_token
from happy_socket import Settings

SECRET = "host-secret-0123456789abcdef0123456789"


async def test_host_route_creates_a_session_seen_by_an_app_socket(tmp_path: Path) -> None:
    host, happy = build(Settings(db=f"sqlite:///{tmp_path / 'h.db'}", secret="h" * 32), SECRET)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(host, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        assert happy.started  # the host's lifespan ran the plugins' startup
        token = host_token(SECRET, "erin")
        client = socketio.AsyncClient()
        updates: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        client.on("update", updates.put)
        await client.connect(
            f"http://127.0.0.1:{port}",
            socketio_path="/v1/updates",
            auth={"token": token},
            transports=["websocket"],
        )
        assert await client.call("ping") == {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            made = await http.post(
                "/api/sessions",
                json={"tag": "t1", "metadata": "m"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert made.status_code == 200 and made.json()["created"] is True
            refused = await http.post(
                "/api/sessions", json={}, headers={"Authorization": "Bearer x"}
            )
            assert refused.status_code == 401
            # the plugins' own routes accept the host's JWT as a bearer token too
            listed = await http.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"})
            assert [s["id"] for s in listed.json()["sessions"]] == [made.json()["session"]["id"]]
        update = await asyncio.wait_for(updates.get(), 3)
        assert update["body"]["t"] == "new-session"  # type: ignore[index]
        assert update["body"]["id"] == made.json()["session"]["id"]  # type: ignore[index]
        await client.disconnect()
    finally:
        server.should_exit = True
        await task
    assert not happy.started  # and its shutdown
