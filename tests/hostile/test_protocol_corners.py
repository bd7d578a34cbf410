"""Frames no client library sends: reserved names, odd event names, binary, NUL, huge handshakes.

Each defends one promise: a client frame never reaches connect or disconnect handling, every
frame that asks for an ack gets one, a socket either works or is closed, nothing the protocol
never carries is buffered, and client text never forges a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from happy_socket.dispatch import UNKNOWN_EVENT_ACK
from happy_socket.testing import ServerHarness

from .raw import RawSocket

INVALID = {"result": "error", "message": "Invalid parameters"}


async def connected(server: ServerHarness, user: str = "alice", **auth: Any) -> RawSocket:
    raw = RawSocket(server.url)
    await raw.__aenter__()
    answer = await raw.connect({"token": await server.token(user), **auth})
    assert answer.startswith("0{"), answer
    return raw


async def closed_by_server(raw: RawSocket) -> bool:
    """True when the server closed ``raw``'s engine.io session (its CLOSE packet, or the
    websocket closing) and answers nothing on it any more."""
    packet = await raw.recv(timeout=2)
    if packet not in ("1", None):
        return False
    await raw.send('277["ping"]')
    return await raw.recv(timeout=0.5) is None


async def still_works(raw: RawSocket, ack_id: int = 99) -> bool:
    await raw.send(f'2{ack_id}["ping"]')
    try:
        return bool(await raw.ack(ack_id) == {})
    except TimeoutError:
        return False


async def test_a_client_event_named_connect_never_reaches_the_handshake(
    server: ServerHarness,
) -> None:
    raw = await connected(server)
    token = await server.token("mallory")
    gauge = server.app.metrics.registry.get_sample_value
    before = gauge("happy_socket_connections", {"client_type": "user-scoped"})
    await raw.send(f'21["connect",{{}},{{"token":"{token}"}}]')
    assert await raw.ack(1) == UNKNOWN_EVENT_ACK
    await raw.send('22["connect"]')  # no arguments at all
    assert await raw.ack(2) == UNKNOWN_EVENT_ACK
    assert gauge("happy_socket_connections", {"client_type": "user-scoped"}) == before
    conns = [c for c in server.app.connections() if c.user_id == "mallory"]
    assert conns == []
    assert await still_works(raw)
    await raw.__aexit__(None, None, None)


async def test_a_client_event_named_disconnect_changes_nothing(server: ServerHarness) -> None:
    daemon = await connected(server, clientType="machine-scoped", machineId="m1")
    await daemon.send('2["rpc-register",{"method":"m1:bash"}]')
    assert await daemon.recv() == '2["rpc-registered",{"method":"m1:bash"}]'
    await daemon.send('21["disconnect"]')
    assert await daemon.ack(1) == UNKNOWN_EVENT_ACK
    await daemon.send('2["disconnect","io client disconnect"]')  # no ack asked: still nothing
    await asyncio.sleep(0.2)
    machines = [c for c in server.app.connections() if c.machine_id == "m1"]
    assert len(machines) == 1
    app = await server.client("alice")
    call = asyncio.create_task(app.call("rpc-call", {"method": "m1:bash", "params": 1}))
    request = await daemon.recv()  # the daemon still serves its method
    assert request is not None and request.startswith("2") and "rpc-request" in request
    ack_id = request[1 : request.index("[")]
    await daemon.send(f'3{ack_id}["done"]')
    assert await call == {"ok": True, "result": "done"}
    await daemon.__aexit__(None, None, None)


@pytest.mark.parametrize(
    "packet",
    ['21[{"a":1},2]', "21[[1,2]]", "21[7]", "21[null]", '21["*"]', '21[ {"x":[]} ]'],
)
async def test_odd_event_names_are_answered_unknown_event(
    server: ServerHarness, packet: str
) -> None:
    raw = await connected(server)
    await raw.send(packet)
    assert await raw.ack(1) == UNKNOWN_EVENT_ACK
    assert await still_works(raw)
    await raw.__aexit__(None, None, None)


@pytest.mark.parametrize(
    "packet",
    [
        '451000000000-["ping",{"_placeholder":true,"num":0}]',
        '451-1["ping",{"_placeholder":true,"num":7}]',
        '450-7["ping"]',
        "4512345",
        '61-1[{"_placeholder":true,"num":0}]',
        "2not json",
        '21["ping",',
    ],
)
async def test_binary_and_broken_packets_close_the_socket_and_buffer_nothing(
    server: ServerHarness, packet: str
) -> None:
    other = await server.client("alice")
    raw = await connected(server)
    await raw.send(packet[1:] if packet.startswith("4") else packet)
    if packet.startswith(("45", "46")):
        for _ in range(3):  # the announced attachments: nothing may hold them
            with contextlib.suppress(Exception):
                await raw._ws.send(b"\x04" + b"x" * 100_000)
    assert await closed_by_server(raw)
    assert len(server.app.connections()) == 1  # only ``other`` is left
    assert server.app.sio._binary_packet == {}  # nothing held for it
    assert await other.call("ping") == {}  # the others are untouched


async def test_nul_in_any_string_is_refused_before_the_handler(server: ServerHarness) -> None:
    raw = await connected(server)
    await raw.send('21["ping",{"a":"x\\u0000y"}]')
    assert await raw.ack(1) == INVALID
    await raw.send('22["message",{"sid":"s\\u0000","message":"m"}]')
    assert await raw.ack(2) == INVALID
    await raw.send('23["ping",{"k\\u0000":"v"}]')
    assert await raw.ack(3) == INVALID
    assert await still_works(raw)
    await raw.__aexit__(None, None, None)


async def test_handshake_auth_is_bounded_and_trimmed(server: ServerHarness) -> None:
    token = await server.token("alice")
    assert await server.refusal({"token": token, "pad": "x" * 5000}) == (
        "Authentication data too large"
    )
    sock = await server.client("alice", happyClient="cli/1.2.5", extra={"big": ["x"] * 100})
    conn = server.app.connection(sock.sid)
    assert conn.auth == {"clientType": "user-scoped", "happyClient": "cli/1.2.5"} or conn.auth == {
        "happyClient": "cli/1.2.5"
    }
    assert "token" not in conn.auth and "extra" not in conn.auth


async def test_a_huge_connect_packet_is_refused_without_being_parsed(
    server: ServerHarness,
) -> None:
    token = await server.token("alice")
    refusals = server.app.metrics.registry.get_sample_value
    labels = {"reason": "Authentication data too large"}
    before = refusals("happy_socket_handshake_refusals_total", labels) or 0
    async with RawSocket(server.url) as raw:
        answer = await raw.connect({"token": token, "pad": "p" * 900_000})
        assert answer == '4{"message":"Authentication data too large"}'
        answer = await raw.connect({"token": token})  # the same session may try again
        assert answer.startswith("0{"), answer
        assert await still_works(raw)
    async with RawSocket(server.url) as raw:  # another namespace: the refusal names it
        await raw.send("0/admin," + '{"pad":"' + "p" * 20_000 + '"}')
        assert await raw.recv() == '4/admin,{"message":"Authentication data too large"}'
    after = refusals("happy_socket_handshake_refusals_total", labels)
    assert after == before + 2


async def test_sockets_per_user_are_limited(make_server: Any) -> None:
    server = await make_server(max_sockets_per_user=3)
    socks = [await server.client("alice") for _ in range(3)]
    token = await server.token("alice")
    assert await server.refusal({"token": token}) == "Too many connections"
    assert await server.refusal({"token": await server.token("bob")}) is None  # per user
    await socks[0].disconnect()
    for _ in range(50):
        if len([c for c in server.app.connections() if c.user_id == "alice"]) < 3:
            break
        await asyncio.sleep(0.02)
    assert await server.refusal({"token": token}) is None  # a place is free again


async def test_client_text_cannot_forge_log_lines(
    server: ServerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    from happy_socket.logs import TextFormatter

    caplog.set_level(logging.DEBUG, logger="happy_socket")
    await server.client(
        "alice", happyClient="web/1\n12:00:00 INFO happy_socket: connect user=admin"
    )
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    lines = [formatter.format(r) for r in caplog.records if "connect user=alice" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    assert any("web/1\\n12:00:00 INFO" in line for line in lines)


async def test_a_session_that_never_joins_socketio_is_closed_after_the_deadline(
    make_server: Any,
) -> None:
    server = await make_server(handshake_timeout_s=0.5)
    lurker = RawSocket(server.url)
    await lurker.__aenter__()  # engine.io open, but no Socket.IO CONNECT ever
    joined = await connected(server)  # joins at once: not affected
    await asyncio.sleep(1.5)
    assert await lurker.recv(timeout=2) in ("1", None)  # closed by the server
    assert await still_works(joined)
    refusals = server.app.metrics.registry.get_sample_value(
        "happy_socket_handshake_refusals_total", {"reason": "handshake timeout"}
    )
    assert refusals == 1
    await joined.__aexit__(None, None, None)
    await lurker.__aexit__(None, None, None)


async def test_no_ack_events_answer_only_input_the_core_refuses(server: ServerHarness) -> None:
    """As docs/events.md says: ``session-alive`` and ``rpc-register`` never ack from their
    handler, but a payload the core refuses is answered like for any event."""
    sock = await server.client("alice")
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    refused = {
        "session-alive": INVALID,
        "rpc-register": {"ok": False, "error": "Invalid parameters"},
    }
    for event, answer in refused.items():
        assert await sock.call(event, {"sid": deep}) == answer
        assert await sock.call(event, {"sid": "s\x00"}) == answer
    valid = {"sid": "no-such-session", "time": 1}
    assert await sock.call("session-alive", valid) is None  # a callback without data
