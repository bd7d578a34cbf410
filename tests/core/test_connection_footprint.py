"""What an accepted socket keeps: lean queues on both layers, a trimmed environ."""

from __future__ import annotations

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from happy_socket.dispatch import KEPT_HEADERS
from happy_socket.queues import LeanQueue
from happy_socket.testing import ServerHarness
from happy_socket.websocket import websocket_protocol


def test_websocket_protocol_is_uvicorns_with_a_lean_queue() -> None:
    protocol = websocket_protocol()
    assert issubclass(protocol, WebSocketsSansIOProtocol)


async def test_both_per_connection_queues_are_lean(server: ServerHarness) -> None:
    sock = await server.client("alice")
    assert await sock.call("ping", {}) is not None  # the queues carried traffic
    connections = server._server.server_state.connections
    websockets = [c for c in connections if isinstance(c, WebSocketsSansIOProtocol)]
    assert websockets and all(type(c.queue) is LeanQueue for c in websockets)
    eio_sockets = list(server.app.sio.eio.sockets.values())
    assert eio_sockets and all(type(s.queue) is LeanQueue for s in eio_sockets)


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
