"""happy_socket.transport: engine.io's websocket loop without a task per frame.

Installed on one server's engine.io (``compat.engineio.install_websocket_driver``), it must
serve exactly what engine.io's own loop serves: acks, per-socket order, backpressure to a
socket that stops reading, the send-queue cap, and the fallback to engine.io's loop for
upgrades from polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from engineio import packet as engineio_packet
from engineio.async_drivers import asgi as engineio_asgi

from happy_socket import transport
from happy_socket.compat import engineio as engineio_compat
from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory


@pytest.fixture
async def fast(make_server: ServerFactory) -> Any:
    """``await fast(**settings)``: a started server whose websockets use the transport."""

    async def make(**settings: Any) -> ServerHarness:
        server = await make_server(**settings)
        engineio_compat.install_websocket_driver(server.app.sio.eio, transport.FastWebSocket)
        return server

    return make


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The sockets served by the fast loop (engine.io's own loop adds nothing here)."""
    seen: list[Any] = []
    real = transport.run

    async def counting(socket: Any, proto: Any) -> None:
        seen.append(socket)
        await real(socket, proto)

    monkeypatch.setattr(transport, "run", counting)
    return seen


def test_the_driver_table_of_other_servers_is_untouched() -> None:
    """engine.io's driver table is a module-level dict: installing copies it."""
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi")
    engineio_compat.install_websocket_driver(sio.eio, transport.FastWebSocket)
    assert sio.eio._async["websocket"] is transport.FastWebSocket
    assert engineio_asgi._async["websocket"] is engineio_asgi.WebSocket
    assert engineio_compat.asgi_websocket_driver() is engineio_asgi.WebSocket


async def test_acks_and_order_over_the_fast_loop(fast: Any, runs: list[Any]) -> None:
    server = await fast()
    sock = await server.client("alice")
    other = await server.client("alice")
    assert len(runs) == 2
    answers = await asyncio.gather(*(sock.call("ping", {}) for _ in range(200)))
    assert answers == [{}] * 200
    # 300 emits to one socket in one loop turn: coalesced writes keep their order
    for i in range(300):
        await server.app.router.emit_to_sid(other.sid, "ephemeral", {"n": i})
    got = [(await other.next("ephemeral"))["n"] for _ in range(300)]
    assert got == list(range(300))


async def test_polling_upgrades_take_engineios_own_loop(fast: Any, runs: list[Any]) -> None:
    server = await fast()
    sock = await server.client("alice", transport="polling")
    assert await sock.call("ping", {}) == {}
    assert runs == []


@contextlib.asynccontextmanager
async def slow_reader(server: ServerHarness, user: str) -> AsyncIterator[tuple[Any, str]]:
    """A raw websocket of ``user`` that reads one frame at a time when told to; its sid."""
    token = await server.token(user)
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    # a short close_timeout: closing a socket that stopped reading waits for a close frame
    # its own full buffers hold back (10 s by default); the tests close it to clean up
    connect = websockets.connect(
        url, max_queue=1, compression=None, ping_interval=None, close_timeout=0.5
    )
    async with connect as ws:
        assert str(await ws.recv()).startswith("0{")
        await ws.send("40" + json.dumps({"token": token}))
        yield ws, json.loads(str(await ws.recv())[2:])["sid"]


async def numbers_read(ws: Any, count: int) -> list[int]:
    """The ``n`` of the next ``count`` events read from raw websocket ``ws``."""
    seen = []
    while len(seen) < count:
        frame = str(await asyncio.wait_for(ws.recv(), 10))
        if frame.startswith("42"):
            seen.append(json.loads(frame[2:])[1]["n"])
    return seen


async def test_a_socket_that_stops_reading_pauses_only_itself(fast: Any, runs: list[Any]) -> None:
    """20 MB to a socket that does not read: the others are served, nothing is lost."""
    server = await fast(max_queued_bytes=64 * 1024 * 1024)
    async with slow_reader(server, "alice") as (slow, sid):
        body = "x" * 65_536
        emits = asyncio.gather(
            *(
                server.app.router.emit_to_sid(sid, "ephemeral", {"n": i, "body": body})
                for i in range(300)
            )
        )
        other = await server.client("bob")
        assert await other.call("ping", {}) == {}  # served while alice's socket is stalled
        await emits
        assert await numbers_read(slow, 300) == list(range(300))
    assert len(runs) == 2


async def test_the_send_queue_cap_holds(fast: Any, runs: list[Any]) -> None:
    server = await fast(max_queued_bytes=1_000_000, write_stall_s=300)
    token = await server.token("alice")
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    stalled = await websockets.connect(url, max_size=None, max_queue=1, close_timeout=0.5)
    assert str(await stalled.recv()).startswith("0")
    await stalled.send("40" + json.dumps({"token": token}))
    sid = json.loads(str(await stalled.recv())[2:])["sid"]
    body = "m" * 100_000
    for i in range(400):  # 40 MB for a socket that reads nothing
        await server.app.router.emit_to_sid(sid, "ephemeral", {"n": i, "body": body})
        if server.app.metrics.registry.get_sample_value("happy_socket_send_overflows_total"):
            break
        await asyncio.sleep(0)
    deadline = asyncio.get_running_loop().time() + 20
    while any(c.sid == sid for c in server.app.connections()):
        assert asyncio.get_running_loop().time() < deadline, "the stalled socket stayed"
        await asyncio.sleep(0.05)
    assert server.app.metrics.registry.get_sample_value("happy_socket_send_overflows_total") == 1
    await stalled.close()
    assert len(runs) == 1


async def test_a_binary_frame_closes_the_socket(fast: Any, runs: list[Any]) -> None:
    server = await fast()
    token = await server.token("alice")
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws:
        assert str(await ws.recv()).startswith("0")
        await ws.send("40" + json.dumps({"token": token}))
        assert str(await ws.recv()).startswith("40")
        await ws.send(b"\x04binary")
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:  # engine.io's CLOSE packet, or the websocket closing
                if str(await asyncio.wait_for(ws.recv(), 5)) == "1":
                    break
    assert server.app.connections() == []
    assert len(runs) == 1


async def test_a_silent_socket_is_closed_by_the_read_timeout(fast: Any, runs: list[Any]) -> None:
    """No frame for ping interval + ping timeout: the loop's watchdog ends the socket."""
    server = await fast(ping_interval=0.2, ping_timeout=0.3)
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    async with websockets.connect(url, ping_interval=None) as ws:
        assert str(await ws.recv()).startswith("0")
        with pytest.raises(websockets.ConnectionClosed):
            while True:  # engine.io's PINGs arrive; we never answer
                await asyncio.wait_for(ws.recv(), 5)
    assert len(runs) == 1


async def test_pings_come_from_a_timer_and_keep_an_answering_socket(
    fast: Any, runs: list[Any]
) -> None:
    """engine.io's ping cycle without its task per socket: PINGs every interval, the socket
    that answers them stays, and no ``_send_ping`` task exists."""
    server = await fast(ping_interval=0.2, ping_timeout=0.5)
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    token = await server.token("alice")
    async with websockets.connect(url, ping_interval=None) as ws:
        assert str(await ws.recv()).startswith("0")
        await ws.send("40" + json.dumps({"token": token}))
        assert str(await ws.recv()).startswith("40")
        pings = 0
        deadline = asyncio.get_running_loop().time() + 1.5
        while asyncio.get_running_loop().time() < deadline:
            frame = str(await asyncio.wait_for(ws.recv(), 2))
            if frame == "2":
                pings += 1
                await ws.send("3")
        assert pings >= 4
        tasks = [t.get_coro() for t in asyncio.all_tasks()]
        assert not [c for c in tasks if "_send_ping" in getattr(c, "__qualname__", "")]
        await ws.send('42["ping"]')  # still served
        await ws.send('4217["ping"]')
        while (frame := str(await asyncio.wait_for(ws.recv(), 2))) == "2":
            await ws.send("3")
        assert frame == "4317[{}]"
    assert len(runs) == 1


def test_the_uvicorn_internals_the_protocol_overrides_are_there() -> None:
    """happy_socket.websocket overrides and reads these; a uvicorn release that renames them
    must fail here (the override would silently stop applying)."""
    import inspect as inspect_

    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    assert callable(getattr(WebSocketsSansIOProtocol, "send_receive_event_to_app", None))
    assert callable(getattr(WebSocketsSansIOProtocol, "data_received", None))
    init = inspect_.getsource(WebSocketsSansIOProtocol.__init__)
    for name in ("read_paused", "handshake_complete", "close_sent", "initial_response", "conn"):
        assert f"self.{name}" in init, name
    source = inspect_.getsource(WebSocketsSansIOProtocol.send_receive_event_to_app)
    assert "self.read_paused" in source and "pause_reading" in source


async def test_reading_pauses_only_when_the_app_is_behind(
    fast: Any, runs: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn paused and resumed reading for every frame; now only when a read arrives
    while the previous one's messages are still queued."""
    server = await fast()
    sock = await server.client("alice")
    pauses = 0
    for proto in server.protocols():
        transport = getattr(proto, "transport", None)
        if transport is None or not hasattr(proto, "accept_with"):
            continue
        real = transport.pause_reading

        def counting(real: Any = real) -> None:
            nonlocal pauses
            pauses += 1
            real()

        monkeypatch.setattr(transport, "pause_reading", counting)
    for _ in range(100):
        assert await sock.call("ping", {}) == {}
    assert pauses < 10  # one frame at a time: never behind


def _writer_tasks() -> list[str]:
    names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
    return [n for n in names if n in ("write_loop", "Writer._when_writable")]


async def test_the_writer_has_a_task_only_while_the_transport_is_full(
    fast: Any, runs: list[Any]
) -> None:
    """An idle socket keeps no writer task (the send queue wakes the writer); a socket whose
    peer stops reading waits in one task, and gets everything in order once it reads."""
    server = await fast(max_queued_bytes=64 * 1024 * 1024)
    idle = await server.client("bob")
    assert await idle.call("ping", {}) == {}
    assert _writer_tasks() == []
    async with slow_reader(server, "alice") as (slow, sid):
        body = "x" * 65_536
        for i in range(300):
            await server.app.router.emit_to_sid(sid, "ephemeral", {"n": i, "body": body})
        for _ in range(200):
            if _writer_tasks():
                break
            await asyncio.sleep(0.01)
        assert _writer_tasks() == ["Writer._when_writable"]
        queue = runs[-1].queue  # alice's (bob's socket was served first)
        assert queue.qsize() > 0  # waiting, still queued and counted
        assert await numbers_read(slow, 300) == list(range(300))
        assert _writer_tasks() == []
        assert await idle.call("ping", {}) == {}
    assert len(runs) == 2


async def test_the_writer_ends_at_the_end_mark_and_closes(fast: Any, runs: list[Any]) -> None:
    """engine.io's end mark (``None``) ends the writer after what was queued before it, and
    the websocket closes; nothing queued after it is written."""
    server = await fast()
    sock = await server.client("alice")
    (socket,) = runs
    socket.queue.put_nowait(
        engineio_packet.Packet(engineio_packet.MESSAGE, data='2["ephemeral",{"n":1}]')
    )
    socket.queue.put_nowait(None)
    socket.queue.put_nowait(
        engineio_packet.Packet(engineio_packet.MESSAGE, data='2["ephemeral",{"n":2}]')
    )
    assert (await sock.next("ephemeral"))["n"] == 1
    for _ in range(200):
        if not server.app.connections():
            break
        await asyncio.sleep(0.01)
    assert server.app.connections() == []
    assert await sock.nothing("ephemeral")
    assert _writer_tasks() == []


async def test_a_send_queue_without_watch_keeps_a_writer_task(fast: Any, runs: list[Any]) -> None:
    """A send queue that cannot call the writer (engine.io's own ``asyncio.Queue``): the
    writer task per socket, as before, and the socket works the same."""
    server = await fast()
    server.app.sio.eio.create_queue = lambda *args, **kwargs: asyncio.Queue()
    sock = await server.client("alice")
    assert isinstance(runs[0].queue, asyncio.Queue)
    answers = await asyncio.gather(*(sock.call("ping", {}) for _ in range(50)))
    assert answers == [{}] * 50
    assert _writer_tasks() == ["write_loop"]
    await sock.disconnect()
    for _ in range(200):
        if not _writer_tasks():
            break
        await asyncio.sleep(0.01)
    assert _writer_tasks() == []
