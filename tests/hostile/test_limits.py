"""Limits: packet size, bounded field lengths, nesting depth, and the per-socket ordered lane."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import socketio

from happy_socket import Context, Registry, hookimpl
from happy_socket.testing import ServerHarness, TestSocket
from tests.conftest import ServerFactory

from .payloads import deep
from .raw import RawSocket
from .support import FRESH, Resources, b64, create_resources, row_counts

INVALID = {"result": "error", "message": "Invalid parameters"}
S256, S257 = "s" * 256, "s" * 257


async def disconnected(sock: TestSocket, within: float = 5.0) -> bool:
    """True once the server closed ``sock``."""
    deadline = asyncio.get_running_loop().time() + within
    while sock.client.connected:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``condition()`` holds (fails the test after ``within`` seconds)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


# -- packet size -------------------------------------------------------------------


def message_packet_size(sid: str, text: str) -> int:
    """Bytes of the Socket.IO packet ``42["message",{"sid":..,"message":..}]``."""
    body = json.dumps(["message", {"sid": sid, "message": text}], separators=(",", ":"))
    return len("42" + body)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_packet_limit_default_is_1_000_000_bytes(
    server: ServerHarness, transport: str
) -> None:
    app = server.app
    sock = await server.client("alice", transport=transport)
    own = await create_resources(server.url, app, "alice", sock)
    bystander = await server.client("bob")
    assert app.settings.max_packet_bytes == 1_000_000
    overhead = message_packet_size(own.session_id, "")
    fits = "f" * (1_000_000 - overhead - 10)  # 10 bytes for the ack id and the engine.io type
    ack = await sock.call("message", {"sid": own.session_id, "message": fits}, timeout=10)
    assert ack["result"] == "success", ack

    before = await row_counts(app)
    too_big = "t" * (1_000_000 - overhead + 10)
    await sock.emit("message", {"sid": own.session_id, "message": too_big})
    assert await disconnected(sock), "the server kept a socket that sent more than the limit"
    assert await row_counts(app) == before
    assert await bystander.call("ping") == {}


async def test_packet_limit_is_tunable(make_server: ServerFactory) -> None:
    server = await make_server(max_packet_bytes=20_000)
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    ack = await sock.call("message", {"sid": own.session_id, "message": "x" * 15_000})
    assert ack["result"] == "success"
    await sock.emit("message", {"sid": own.session_id, "message": "x" * 25_000})
    assert await disconnected(sock)
    again = await server.client("alice")
    assert await again.call("ping") == {}


async def test_http_body_limit_refuses_declared_and_streamed_bodies(
    make_server: Any,
) -> None:
    server = await make_server(max_body_bytes=1_000_000)
    token = await server.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    too_large = (413, {"error": "Request body too large"})
    async with httpx.AsyncClient(limits=FRESH, base_url=server.url, headers=headers) as http:
        big = {"tag": "t", "metadata": "m" * 1_000_001}
        reply = await http.post("/v1/sessions", json=big)
        assert (reply.status_code, reply.json()) == too_large

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            yield b'{"tag": "t", "metadata": "'
            for _ in range(20):
                yield b"m" * 100_000
            yield b'"}'

        reply = await http.post("/v1/sessions", content=chunks())
        assert (reply.status_code, reply.json()) == too_large
        fine = await http.post("/v1/sessions", json={"tag": "t", "metadata": "m" * 900_000})
        assert fine.status_code == 200


async def test_routes_without_a_token_take_small_bodies_and_drop_the_rest(
    server: ServerHarness,
) -> None:
    from happy_socket.compat.uvicorn import LINGER_S
    from happy_socket.http import UNAUTHENTICATED_MAX_BODY

    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16_384
    sent = 0
    while sent <= UNAUTHENTICATED_MAX_BODY:  # an undeclared body, past the small limit
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413"), head
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(20):  # the client keeps sending: dropped, and the answer stays readable
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    rest = await asyncio.wait_for(reader.read(), LINGER_S + 5)  # our side ends at once
    assert b"Request body too large" in rest
    assert loop.time() - started < LINGER_S
    writer.close()
    async with httpx.AsyncClient(limits=FRESH, base_url=server.url) as http:
        reply = await http.post("/v1/auth", content=b"{" * (UNAUTHENTICATED_MAX_BODY + 1))
        assert reply.status_code == 413  # declared: refused before the body is read
        token = await server.token("alice")  # routes behind a token keep the 32 MiB limit
        bearer = {"Authorization": f"Bearer {token}"}
        big = {"tag": "t", "metadata": "m" * (UNAUTHENTICATED_MAX_BODY * 2)}
        reply = await http.post("/v1/sessions", json=big, headers=bearer)
        assert reply.status_code == 200


# -- bounded fields ----------------------------------------------------------------


def bounded_cases(own: Resources) -> list[tuple[str, Any, Any]]:
    """(event, payload, exact ack or "success") at and just over each bound."""
    blob = b64(b"x")
    totals = {"total": 1}
    pair_invalid = {
        "ok": False,
        "error": "Invalid parameters: sessionId and machineId are required",
    }
    return [
        (
            "message",
            {"sid": S256, "message": "m"},
            {"result": "error", "message": "Session not found"},
        ),
        ("message", {"sid": S257, "message": "m"}, INVALID),
        ("message", {"sid": own.session_id, "message": "m", "localId": "l" * 256}, "success"),
        ("message", {"sid": own.session_id, "message": "m", "localId": "l" * 257}, INVALID),
        (
            "update-metadata",
            {"sid": S257, "metadata": "m", "expectedVersion": 0},
            {"result": "error"},
        ),
        (
            "machine-update-metadata",
            {"machineId": S256, "metadata": "m", "expectedVersion": 1},
            {"result": "error", "message": "Machine not found"},
        ),
        (
            "machine-update-metadata",
            {"machineId": S257, "metadata": "m", "expectedVersion": 1},
            INVALID,
        ),
        (
            "artifact-read",
            {"artifactId": S256},
            {"result": "error", "message": "Artifact not found"},
        ),
        ("artifact-read", {"artifactId": S257}, INVALID),
        (
            "artifact-create",
            {"id": S257, "header": blob, "body": blob, "dataEncryptionKey": blob},
            INVALID,
        ),
        (
            "artifact-create",
            {"id": S256, "header": blob, "body": blob, "dataEncryptionKey": blob},
            "success",
        ),
        (
            "access-key-get",
            {"sessionId": S256, "machineId": S256},
            {"ok": False, "error": "Session or machine not found"},
        ),
        ("access-key-get", {"sessionId": S257, "machineId": own.machine_id}, pair_invalid),
        ("usage-report", {"key": "k" * 256, "tokens": totals, "cost": totals}, "success"),
        (
            "usage-report",
            {"key": "k" * 257, "tokens": totals, "cost": totals},
            {"success": False, "error": "Invalid key"},
        ),
        (
            "usage-report",
            {"key": "k", "sessionId": S257, "tokens": totals, "cost": totals},
            {"success": False, "error": "Session not found"},
        ),
        (
            "rpc-call",
            {"method": "m" * 256},  # rpc.max_method_length
            {"ok": False, "error": "RPC method not available"},
        ),
        (
            "rpc-call",
            {"method": "m" * 257},
            {"ok": False, "error": "Invalid parameters: method is required"},
        ),
    ]


async def test_field_bounds_of_socket_events(make_server: ServerFactory) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0}})
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    failures = []
    for event, payload, expected in bounded_cases(own):
        if event not in server.app.registry:
            continue
        ack = await sock.call(event, payload)
        envelope = server.app.registry.get(event).envelope.value  # type: ignore[union-attr]
        ok = ack.get(envelope) in ("success", True) if expected == "success" else ack == expected
        if not ok:
            failures.append(f"{event} {str(payload)[:80]}: {ack} != {expected}")
    assert not failures, "\n".join(failures)


async def test_rpc_method_name_bound(server: ServerHarness) -> None:
    sock = await server.client("alice")
    await sock.emit("rpc-register", {"method": "m" * 256})
    assert await sock.next("rpc-registered") == {"method": "m" * 256}
    await sock.emit("rpc-register", {"method": "m" * 257})
    assert await sock.next("rpc-error") == {"type": "register", "error": "Invalid method name"}


async def test_http_field_bounds(server: ServerHarness) -> None:
    token = await server.token("alice")
    async with httpx.AsyncClient(
        limits=FRESH, base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        cases = [
            ("/v1/sessions", {"tag": "t" * 1024, "metadata": "m"}, 200, None),
            ("/v1/sessions", {"tag": "t" * 1025, "metadata": "m"}, 400, {"error": "Invalid tag"}),
            ("/v1/machines", {"id": "i" * 256, "metadata": "m"}, 200, None),
            ("/v1/machines", {"id": "i" * 257, "metadata": "m"}, 400, {"error": "Invalid id"}),
            (
                "/v1/auth",
                {"publicKey": "A" * 4100, "challenge": "AAAA", "signature": "AAAA"},
                400,
                {"error": "Invalid request"},
            ),
        ]
        for path, body, status, expected in cases:
            reply = await http.post(path, json=body)
            assert reply.status_code == status, (path, reply.text)
            if expected is not None:
                assert reply.json() == expected


async def test_handshake_field_bounds(server: ServerHarness) -> None:
    token = await server.token("alice")
    assert await server.refusal({"token": "t" * 4000}) == "Invalid authentication token"
    # the whole auth object is bounded too (4 KB as JSON), before the token is looked at
    assert await server.refusal({"token": "t" * 4097}) == "Authentication data too large"
    session_required = "Session ID required for session-scoped clients"
    long_id = {"token": token, "clientType": "session-scoped", "sessionId": "s" * 513}
    assert await server.refusal(long_id) == session_required
    assert await server.refusal({**long_id, "sessionId": "s" * 512}) is None
    machine = {"token": token, "clientType": "machine-scoped", "machineId": "m" * 513}
    assert await server.refusal(machine) == "Machine ID required for machine-scoped clients"


async def test_opaque_values_are_bounded_by_the_packet_only(server: ServerHarness) -> None:
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    big = "o" * 900_000
    payload = {"sid": own.session_id, "metadata": big, "expectedVersion": 0}
    ack = await sock.call("update-metadata", payload, timeout=10)
    assert ack == {"result": "success", "version": 1, "metadata": big}


# -- nesting and JSON the parser refuses ---------------------------------------------


async def test_nesting_deeper_than_32_levels_is_refused_before_any_handler(
    server: ServerHarness,
) -> None:
    sock = await server.client("alice")
    assert await sock.call("ping", deep(32)) == {}
    assert await sock.call("ping", deep(33)) == INVALID
    assert await sock.call("usage-report", deep(40)) == {
        "success": False,
        "error": "Invalid parameters",
    }


REFUSED_ARGUMENTS = ["NaN", "Infinity", "1e400", "[" * 1025 + "]" * 1025, '{"sid":', "'x'"]


async def test_a_packet_the_parser_refuses_closes_its_socket_quietly(
    server: ServerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN, Infinity, overflowing numbers, > 1024 levels, truncated or non-JSON text: no ack can
    be addressed, so the socket is closed (it may reconnect) after one log line, no traceback."""
    token = await server.token("alice")
    other = await server.client("alice")
    for argument in REFUSED_ARGUMENTS:
        async with RawSocket(server.url) as raw:
            assert (await raw.connect({"token": token})).startswith("0{")
            await raw.send(f'21["ping",{argument}]')
            assert await raw.recv(2.0) in ("1", None), argument  # engine.io's CLOSE, or closed
            await raw.send('22["ping"]')
            assert await raw.recv(0.3) is None, argument  # nothing is read any more
    assert await other.call("ping") == {}
    assert not [r for r in caplog.records if r.exc_info], "a refused packet logged a traceback"


async def test_big_integers_become_floats(server: ServerHarness) -> None:
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    token = await server.token("alice")
    async with RawSocket(server.url) as raw:
        await raw.connect({"token": token})
        for ack_id, number in enumerate(["18446744073709551616", "-9223372036854775809"], 1):
            body = f'{{"sid":"{own.session_id}","metadata":"m","expectedVersion":{number}}}'
            await raw.send(f'2{ack_id}["update-metadata",{body}]')
            ack = await raw.ack(ack_id)
            assert ack["result"] == "version-mismatch", ack


# -- the ordered lane ----------------------------------------------------------------


class Gate:
    """Ordered events that wait until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.order: list[Any] = []

    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("hostile-gate", self.gate, ordered=True)
        registry.add("hostile-gate-ok", self.gate, ordered=True, envelope="ok")
        registry.add("hostile-gate-concurrent", self.gate, envelope="success")

    async def gate(self, ctx: Context, data: Any) -> dict[str, Any]:
        await self.opened.wait()
        self.order.append(data)
        return {"result": "success", "n": data}


async def test_a_full_ordered_lane_pauses_the_socket_and_refuses_nothing(
    make_server: ServerFactory,
) -> None:
    gate = Gate()
    server = await make_server(plugins=[("gate", gate)])
    assert server.app.dispatcher.max_pending == 1000
    flooder = await server.client("alice")
    other = await server.client("alice")
    stranger = await server.client("bob")
    own = await create_resources(server.url, server.app, "alice", other)

    def call(sock: TestSocket, event: str, data: Any) -> asyncio.Task[Any]:
        return asyncio.create_task(sock.client.call(event, (data,), timeout=30))

    queued = [call(flooder, "hostile-gate", i) for i in range(1000)]
    await until(lambda: server.app.dispatcher.paused(flooder.sid))
    # past the bound: nothing is refused, the socket's reader waits for room instead
    beyond = [
        call(flooder, "hostile-gate", 1000),
        call(flooder, "hostile-gate-ok", 1001),
        call(flooder, "message", {"sid": own.session_id, "message": "m", "localId": "x"}),
    ]
    assert await other.call("ping") == {}  # the same user's other socket is not held up
    assert await stranger.call("ping") == {}
    elsewhere = call(other, "hostile-gate", "other")  # another socket has its own lane
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in queued + beyond) and not elsewhere.done()

    gate.opened.set()
    answers = await asyncio.gather(*queued)
    assert answers == [{"result": "success", "n": i} for i in range(1000)]
    assert await beyond[0] == {"result": "success", "n": 1000}
    assert await beyond[1] == {"result": "success", "n": 1001}
    stored = await beyond[2]
    assert stored["result"] == "success" and stored["localId"] == "x"
    assert (await elsewhere)["result"] == "success"
    assert [n for n in gate.order if n != "other"] == list(range(1002))
    assert not server.app.dispatcher.paused(flooder.sid)
    assert await flooder.call("hostile-gate", "after") == {"result": "success", "n": "after"}
    rejected = server.app.metrics.registry.get_sample_value(
        "happy_socket_events_total", {"event": "hostile-gate", "outcome": "rejected"}
    )
    assert rejected is None


async def test_too_many_running_events_pause_the_socket_and_refuse_nothing(
    make_server: ServerFactory,
) -> None:
    gate = Gate()
    server = await make_server(plugins=[("gate", gate)])
    assert server.app.dispatcher.max_concurrent == 1000
    flooder = await server.client("alice")
    other = await server.client("alice")

    def call(sock: TestSocket, data: Any) -> asyncio.Task[Any]:
        return asyncio.create_task(sock.client.call("hostile-gate-concurrent", (data,), timeout=30))

    running = [call(flooder, i) for i in range(1000)]
    await until(lambda: server.app.dispatcher.paused(flooder.sid))
    later = call(flooder, 1000)
    ping = asyncio.create_task(flooder.call("ping"))
    assert await other.call("ping") == {}  # another socket of the same user is not held up
    await asyncio.sleep(0.2)
    assert not later.done() and not ping.done()
    gate.opened.set()
    answers = await asyncio.gather(*running, later)
    assert sorted(a["n"] for a in answers) == list(range(1001))
    assert await ping == {}
    assert not server.app.dispatcher.paused(flooder.sid)


async def test_lane_size_is_tunable(make_server: ServerFactory) -> None:
    gate = Gate()
    server = await make_server(plugins=[("gate", gate)])
    server.app.dispatcher.max_pending = 3
    sock = await server.client("alice")
    queued = [
        asyncio.create_task(sock.client.call("hostile-gate", (i,), timeout=10)) for i in range(4)
    ]
    await until(lambda: server.app.dispatcher.paused(sock.sid))
    await asyncio.sleep(0.1)
    assert not any(t.done() for t in queued)
    gate.opened.set()
    assert [a["n"] for a in await asyncio.gather(*queued)] == [0, 1, 2, 3]


async def test_a_socket_over_the_limit_does_not_disturb_others(server: ServerHarness) -> None:
    """Closing one oversized socket leaves the others of the same user connected."""
    first = await server.client("alice")
    second = await server.client("alice")
    await first.emit("ping", "x" * 1_100_000)
    assert await disconnected(first)
    assert second.client.connected and await second.call("ping") == {}
    with pytest.raises(socketio.exceptions.BadNamespaceError):
        await first.call("ping", timeout=1)


async def test_lone_surrogates_become_replacement_characters(make_server: ServerFactory) -> None:
    """JSON.stringify writes a broken UTF-16 string as a lone ``\\ud800`` escape: answered."""
    server = await make_server(plugin_options={"rpc": {"grace": 0}})
    sock = await server.client("alice")
    own = await create_resources(server.url, server.app, "alice", sock)
    token = await server.token("alice")
    async with RawSocket(server.url) as raw:
        await raw.connect({"token": token})
        await raw.send('21["ping","\\ud800"]')
        assert await raw.ack(1) == {}
        body = f'{{"sid":"{own.session_id}","message":"a\\udfffb\\ud83d\\ude00","localId":"x"}}'
        await raw.send(f'22["message",{body}]')
        assert (await raw.ack(2))["result"] == "success"
        await raw.send('23["rpc-call",{"method":"\\ud800"}]')
        assert await raw.ack(3) == {"ok": False, "error": "RPC method not available"}
    async with httpx.AsyncClient(
        limits=FRESH, base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        messages = (await http.get(f"/v1/sessions/{own.session_id}/messages")).json()["messages"]
    assert messages[0]["content"]["c"] == "a\ufffdb\U0001f600"
