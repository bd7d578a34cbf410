"""A socket that stops reading cannot make the server hold unbounded data for it.

Its unsent frames are capped (``max_queued_bytes``; past it the socket is closed and counted),
and a websocket whose client takes no data at all for ``write_stall_s`` is dropped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory

from .support import create_resources

BIG = "m" * 100_000


async def never_reads(server: ServerHarness, user: str) -> Any:
    """A websocket of ``user`` that completes the handshake and then reads nothing more."""
    url = server.url.replace("http://", "ws://") + "/v1/updates/?EIO=4&transport=websocket"
    # close_timeout: closing a socket that stopped reading waits for a close frame that its
    # own full buffers hold back (10 s each by default); the tests only close to clean up
    ws = await websockets.connect(url, max_size=None, max_queue=1, close_timeout=0.5)
    assert str(await ws.recv()).startswith("0")
    await ws.send("40" + json.dumps({"token": await server.token(user)}))
    assert str(await ws.recv()).startswith("40")
    return ws  # from here on nothing calls recv(): the library stops reading once full


async def until(condition: Any, within: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def sockets_of(server: ServerHarness, user: str) -> int:
    return sum(1 for c in server.app.connections() if c.user_id == user)


async def test_unsent_data_for_a_socket_that_stops_reading_is_capped(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_queued_bytes=1_000_000, write_stall_s=300)
    writer = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", writer)
    stalled = await never_reads(server, "alice")
    assert sockets_of(server, "alice") == 2
    version = 0
    for _ in range(300):  # 30 MB of update-session frames for the app socket that never reads
        ack = await writer.call(
            "update-metadata",
            {"sid": own.session_id, "metadata": BIG, "expectedVersion": version},
        )
        assert ack["result"] == "success", ack
        version = ack["version"]
        if server.app.metrics.registry.get_sample_value("happy_socket_send_overflows_total"):
            break
    assert await until(lambda: sockets_of(server, "alice") == 1)  # the stalled one is gone
    assert server.app.metrics.registry.get_sample_value("happy_socket_send_overflows_total") == 1
    assert await writer.call("ping") == {}  # the writer was never held up
    await stalled.close()


async def test_a_websocket_that_takes_no_data_is_dropped_after_the_write_stall(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_queued_bytes=100_000_000, write_stall_s=1.0)
    writer = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", writer)
    stalled = await never_reads(server, "alice")
    version = 0
    for _ in range(150):  # enough to fill the kernel's buffers and then some
        ack = await writer.call(
            "update-metadata",
            {"sid": own.session_id, "metadata": BIG, "expectedVersion": version},
        )
        version = ack["version"]
    assert await until(lambda: sockets_of(server, "alice") == 1, within=15)
    assert server.app.metrics.registry.get_sample_value("happy_socket_send_overflows_total") == 0
    assert await writer.call("ping") == {}
    await stalled.close()


async def test_a_connection_that_never_finishes_its_request_headers_is_closed(
    make_server: ServerFactory,
) -> None:
    server = await make_server(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    # a whole request in time is answered as usual
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_the_header_deadline_never_touches_an_upgraded_websocket(
    make_server: ServerFactory,
) -> None:
    server = await make_server(header_timeout_s=0.3)
    sock = await server.client("alice")
    await asyncio.sleep(1.0)  # three header deadlines
    assert await sock.call("ping") == {}


async def test_the_unsent_data_of_an_account_and_of_the_process_is_capped_too(
    make_server: ServerFactory,
) -> None:
    """Many slow sockets cannot add up past the account's budget (or the process's): the
    largest queue of a full budget is closed, the sockets that read are never touched."""
    server = await make_server(
        max_queued_bytes=50_000_000,  # each socket alone could hold 50 MB
        max_queued_bytes_per_user=3_000_000,
        max_queued_bytes_total=5_000_000,
        write_stall_s=300,
    )
    writer = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", writer)
    stalled = [await never_reads(server, "alice") for _ in range(3)]
    overflows = "happy_socket_send_overflows_total"
    version = 0
    for _ in range(300):  # 30 MB of update-session frames, each to every alice socket
        ack = await writer.call(
            "update-metadata",
            {"sid": own.session_id, "metadata": BIG, "expectedVersion": version},
        )
        assert ack["result"] == "success", ack
        version = ack["version"]
        assert server.app.queue_budgets.used_by("alice") <= 3_000_000
        if (server.app.metrics.registry.get_sample_value(overflows) or 0) >= 3:
            break
    assert await until(lambda: sockets_of(server, "alice") == 1)  # only the writer is left
    assert await writer.call("ping") == {}
    # bob's slow sockets and alice's share the process's 5 MB: the largest queue goes first
    bob = await server.client("bob")
    bobs = await create_resources(server.url, server.app, "bob", bob)
    bob_stalled = [await never_reads(server, "bob") for _ in range(2)]
    alice_stalled = await never_reads(server, "alice")
    before = server.app.metrics.registry.get_sample_value(overflows)
    versions = {"alice": version, "bob": 0}
    for _ in range(100):
        for name, sock, sid in (("alice", writer, own.session_id), ("bob", bob, bobs.session_id)):
            ack = await sock.call(
                "update-metadata", {"sid": sid, "metadata": BIG, "expectedVersion": versions[name]}
            )
            versions[name] = ack["version"]
        assert server.app.queue_budgets.total.used <= 5_000_000
        if server.app.metrics.registry.get_sample_value(overflows) > before:
            break
    assert server.app.metrics.registry.get_sample_value(overflows) > before
    assert await bob.call("ping") == {} and await writer.call("ping") == {}
    for ws in [*stalled, *bob_stalled, alice_stalled]:
        await ws.close()
