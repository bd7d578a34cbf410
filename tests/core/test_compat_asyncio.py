"""Tripwire for the asyncio internal happy-socket relies on (happy_socket.compat.asyncio)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from happy_socket.compat.asyncio import set_read_size
from happy_socket.testing import ServerHarness


async def test_socket_transports_read_what_max_size_says() -> None:
    received: list[int] = []
    done = asyncio.Event()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert set_read_size(transport, 1000)

        def data_received(self, data: bytes) -> None:
            received.append(len(data))
            if sum(received) >= 50_000:
                done.set()

    server = await asyncio.get_running_loop().create_server(Probe, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x" * 50_000)  # one write; the server reads it 1,000 bytes at a time
    await writer.drain()
    await asyncio.wait_for(done.wait(), 5)
    assert max(received) <= 1000 and sum(received) == 50_000
    writer.close()
    server.close()


def test_other_transports_keep_their_read_size(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="happy_socket.websocket")

    class Foreign(asyncio.BaseTransport):
        pass

    assert set_read_size(Foreign(), 1000) is False


async def test_served_websockets_read_small_slices(server: ServerHarness) -> None:
    from happy_socket.websocket import READ_SLICE

    sock = await server.client("alice")
    assert await sock.call("ping") == {}
    protocols = [o for o in gc.get_objects() if type(o).__name__ == "LeanWebSocketsProtocol"]
    live = [p.transport for p in protocols if not p.transport.is_closing()]
    assert live and all(t.max_size == READ_SLICE for t in live)
