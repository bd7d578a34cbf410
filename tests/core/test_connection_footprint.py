"""What an accepted socket keeps: lean queues and event on both layers, a trimmed environ."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from happy_socket.lean import LeanEvent, LeanQueue
from happy_socket.packets import KEPT_HEADERS
from happy_socket.sendqueue import SendQueue
from happy_socket.testing import ServerHarness
from happy_socket.websocket import websocket_protocol


def test_websocket_protocol_is_uvicorns_with_a_lean_queue() -> None:
    protocol = websocket_protocol()
    assert issubclass(protocol, WebSocketsSansIOProtocol)


async def test_both_per_connection_queues_are_lean(server: ServerHarness) -> None:
    sock = await server.client("alice")
    assert await sock.call("ping", {}) is not None  # the queues carried traffic
    connections = server.protocols()
    websockets = [c for c in connections if isinstance(c, WebSocketsSansIOProtocol)]
    assert websockets and all(type(c.queue) is LeanQueue for c in websockets)
    assert all(type(c.writable) is LeanEvent and c.writable.is_set() for c in websockets)
    eio_sockets = list(server.app.sio.eio.sockets.values())
    assert eio_sockets and all(type(s.queue) is SendQueue for s in eio_sockets)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_environ_is_trimmed_after_the_handshake(
    server: ServerHarness, transport: str
) -> None:
    sock = await server.client("alice", transport=transport)
    environ = server.app.sio.get_environ(sock.sid)
    assert environ is not None
    assert "wsgi.input" not in environ
    headers = {k for k in environ if k.startswith("HTTP_")}
    assert headers <= KEPT_HEADERS
    assert "HTTP_HOST" in headers
    assert environ["REQUEST_METHOD"] == "GET" and "EIO=4" in environ["QUERY_STRING"]
    # the socket still works both ways after the trim
    assert await sock.call("ping", {}) is not None


async def test_a_socket_that_stops_reading_pauses_only_itself(make_server: Any) -> None:
    """Backpressure through the lean ``writable`` event: the frames wait, nothing is lost
    (below ``max_queued_bytes``; past it the socket is closed, see test_slow_readers)."""
    import json

    server = await make_server(max_queued_bytes=64 * 1024 * 1024)
    from websockets.asyncio.client import connect

    token = await server.token("alice")
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    async with connect(url, max_queue=1, compression=None, ping_interval=None) as slow:
        assert str(await slow.recv()).startswith("0{")  # engine.io open
        await slow.send("40" + json.dumps({"token": token}))
        accepted = str(await slow.recv())
        assert accepted.startswith("40{")
        sid = json.loads(accepted[2:])["sid"]
        body = "x" * 65_536
        count = 300  # ~20 MB: more than the loopback socket buffers hold
        emits = asyncio.ensure_future(
            asyncio.gather(
                *(
                    server.app.router.emit_to_sid(sid, "ephemeral", {"n": i, "body": body})
                    for i in range(count)
                )
            )
        )
        protocols = [
            c
            for c in server.protocols()
            if isinstance(c, WebSocketsSansIOProtocol) and c.scope.get("query_string", b"")
        ]
        paused = False
        for _ in range(200):
            await asyncio.sleep(0.02)
            if any(not c.writable.is_set() for c in protocols):
                paused = True
                break
        assert paused, "the server never had to wait for the slow socket"
        bob = await server.client("bob")  # the server still serves everyone else
        assert await bob.call("ping", {}) is not None
        received = []
        while len(received) < count:
            frame = str(await asyncio.wait_for(slow.recv(), 10))
            if frame == "2":  # engine.io ping
                await slow.send("3")
                continue
            event, data = json.loads(frame[2:])
            assert event == "ephemeral" and data["body"] == body
            received.append(data["n"])
        assert received == list(range(count))
        await emits


async def test_polling_upgrades_to_websocket_through_the_lean_queues(server: ServerHarness) -> None:
    """engine.io's upgrade parks the polling request with a NOOP on the send queue."""
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        server.url,
        socketio_path=server.app.settings.socketio_path,
        auth={"token": await server.token("alice")},
        transports=["polling", "websocket"],
        wait_timeout=5,
    )
    try:
        for _ in range(100):
            if client.transport() == "websocket":
                break
            await asyncio.sleep(0.05)
        assert client.transport() == "websocket"
        assert await client.call("ping", {}, timeout=5) is not None
        (eio_socket,) = server.app.sio.eio.sockets.values()
        assert eio_socket.upgraded and type(eio_socket.queue) is SendQueue
    finally:
        await client.disconnect()
