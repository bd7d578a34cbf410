"""The websocket handshake taken over from h11 (happy_socket.upgrade) and the transport loop
detached from the ASGI call (``detach`` in happy_socket.websocket), over real sockets.

A taken-over handshake must answer byte for byte what uvicorn's path (websockets parsing the
request again) answers, and every request websockets would refuse or negotiate must still take
that path. Tripwires for the uvicorn and websockets internals both rely on are at the end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from typing import Any

import pytest
import socketio
import websockets
from websockets.server import ServerProtocol

from happy_socket import upgrade
from happy_socket import websocket as websocket_module
from happy_socket.compat import uvicorn as uvicorn_compat
from happy_socket.compat import websockets as websockets_compat
from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
BASE = [
    (b"host", b"127.0.0.1"),
    (b"connection", b"Upgrade"),
    (b"upgrade", b"websocket"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", KEY),
]


def _request(headers: list[tuple[bytes, bytes]], method: bytes = b"GET") -> bytes:
    lines = [method + b" /v1/updates/?EIO=4&transport=websocket HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _replace(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = [(n, v) for n, v in BASE if n != name]
    return headers if value is None else [*headers, (name, value)]


async def _exchange(server: ServerHarness, request: bytes) -> bytes:
    """What the server answers to ``request`` on a raw connection, until it closes or 0.5 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < 200:
            chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    writer.close()
    return data


def _comparable(answer: bytes) -> bytes:
    """An answer without what differs between two servers: the date, engine.io's sid."""
    answer = re.sub(rb"(?i)(date): [^\r]*", rb"\1: *", answer)  # "date" or websockets' "Date"
    return re.sub(rb'"sid":"[^"]*"', b'"sid":"*"', answer)


def test_accept_key_is_websockets_answer() -> None:
    """The accept value is RFC 6455's, as websockets computes it for the same request."""
    from websockets.datastructures import Headers
    from websockets.http11 import Request

    accept = upgrade.accept_key(b"GET", b"/", BASE)
    assert accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455, section 1.3
    request = Request("/", Headers([(n.decode(), v.decode()) for n, v in BASE]))
    response = ServerProtocol().accept(request)
    assert response.status_code == 101
    assert response.headers["Sec-WebSocket-Accept"] == accept.decode()


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        (b"POST", BASE),
        (b"GET", _replace(b"sec-websocket-key", None)),
        (b"GET", _replace(b"sec-websocket-key", b"not base64!")),
        (b"GET", _replace(b"sec-websocket-key", base64.b64encode(b"15 bytes only..")[:-4])),
        (b"GET", _replace(b"sec-websocket-version", b"8")),
        (b"GET", _replace(b"sec-websocket-version", None)),
        (b"GET", [*BASE, (b"sec-websocket-key", KEY)]),
        (b"GET", [*BASE, (b"sec-websocket-version", b"13")]),
        (b"GET", _replace(b"upgrade", b"websocket, h2c")),
        (b"GET", _replace(b"connection", b"keep-alive")),
        (b"GET", _replace(b"connection", b"Upgrade, @bad")),
        (b"GET", [*BASE, (b"sec-websocket-protocol", b"chat")]),
        (b"GET", [*BASE, (b"content-length", b"0")]),
        (b"GET", [*BASE, (b"transfer-encoding", b"chunked")]),
        (b"GET", [*BASE, *[(b"x-h", b"v")] * upgrade.MAX_HEADERS]),
        (b"GET", [*BASE, (b"x-long", b"v" * upgrade.MAX_LINE)]),
    ],
)
def test_anything_unusual_takes_websockets_path(
    method: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert upgrade.accept_key(method, b"/", headers) is None


def test_a_list_of_connection_options_is_taken_over() -> None:
    headers = _replace(b"connection", b"keep-alive, Upgrade")
    assert upgrade.accept_key(b"GET", b"/", headers) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.fixture
def without_takeover(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``disable()``: servers started afterwards take uvicorn's path for every handshake."""

    def disable() -> None:
        monkeypatch.setattr(websocket_module, "upgrade_takeover_supported", lambda: False)

    return disable


VARIANTS = {
    "plain": _request(BASE),
    "firefox": _request(_replace(b"connection", b"keep-alive, Upgrade")),
    "subprotocol": _request([*BASE, (b"sec-websocket-protocol", b"chat")]),
    "version 8": _request(_replace(b"sec-websocket-version", b"8")),
    "no key": _request(_replace(b"sec-websocket-key", None)),
    "short key": _request(_replace(b"sec-websocket-key", b"c2hvcnQ=")),
    "POST": _request(BASE, method=b"POST"),
    "two keys": _request([*BASE, (b"sec-websocket-key", KEY)]),
}


async def test_the_answers_are_uvicorns_byte_for_byte(
    make_server: ServerFactory, without_takeover: Any
) -> None:
    taken = await make_server()
    answers = {name: await _exchange(taken, request) for name, request in VARIANTS.items()}
    without_takeover()
    plain = await make_server()
    for name, request in VARIANTS.items():
        mine, uvicorns = answers[name], await _exchange(plain, request)
        assert _comparable(mine) == _comparable(uvicorns), name
    assert answers["plain"].startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\n\r\n\x81" in answers["plain"]  # engine.io's OPEN in the same answer
    assert answers["version 8"].startswith(b"HTTP/1.1 400 ")
    assert answers["POST"].startswith(b"HTTP/1.1 405 ")


async def test_sockets_are_taken_over_and_detached(server: ServerHarness) -> None:
    """A socket.io client's handshake skips websockets' parse, and once accepted the ASGI
    call has returned: only the detached loop's task is left per socket."""
    sock = await server.client("alice")
    assert await sock.call("ping", {}) == {}
    websockets_ = [p for p in server.protocols() if hasattr(p, "accept_with")]
    assert len(websockets_) == 1
    proto = websockets_[0]
    assert proto.accept_value is not None  # taken over
    assert proto.detached is not None and not proto.detached.done()
    tasks = server._server.server_state.tasks  # type: ignore[union-attr]
    assert tasks == {proto.detached}  # the ASGI task has returned
    names = [t.get_coro().__qualname__ for t in tasks]  # type: ignore[union-attr]
    assert names == ["websocket_protocol.<locals>.LeanWebSocketsProtocol._run_detached"]
    await sock.disconnect()
    for _ in range(100):
        if not tasks and not server.app.sio.eio.sockets:
            break
        await asyncio.sleep(0.02)
    assert not tasks  # the loop ended and the connection closed
    assert not server.app.sio.eio.sockets  # engine.io's table forgets the closed socket


async def test_shutdown_closes_open_sockets_with_1012(make_server: ServerFactory) -> None:
    server = await make_server()
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws:
        assert str(await ws.recv()).startswith("0{")  # engine.io's OPEN
        token = await server.token("alice")
        await ws.send("40" + json.dumps({"token": token}))
        assert str(await ws.recv()).startswith("40{")
        assert server._server is not None
        server._server.should_exit = True
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


async def test_forwarded_for_from_a_trusted_proxy_reaches_the_scope(server: ServerHarness) -> None:
    """uvicorn's proxy headers (X-Forwarded-For from 127.0.0.1) still apply."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        server.url,
        socketio_path="/v1/updates",
        auth={"token": await server.token("alice")},
        transports=["websocket"],
        headers={"X-Forwarded-For": "203.0.113.9"},
        wait_timeout=5,
    )
    try:
        (eio_sid,) = server.app.sio.eio.sockets
        proto = next(p for p in server.protocols() if hasattr(p, "accept_with"))
        assert proto.accept_value is not None
        assert proto.scope["client"][0] == "203.0.113.9"
    finally:
        await client.disconnect()
    assert eio_sid


async def test_per_message_deflate_takes_websockets_path(make_server: ServerFactory) -> None:
    server = await make_server(per_message_deflate=True)
    url = f"ws://127.0.0.1:{server.port}/v1/updates/?EIO=4&transport=websocket"
    async with websockets.connect(url, compression="deflate") as ws:
        assert str(await ws.recv()).startswith("0{")
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        proto = next(p for p in server.protocols() if hasattr(p, "accept_with"))
        assert proto.accept_value is None  # websockets negotiated it


# -- tripwires ---------------------------------------------------------------------------


def test_the_installed_releases_support_takeover_and_detach(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    uvicorn_compat._takeover = None
    assert uvicorn_compat.upgrade_takeover_supported()
    assert uvicorn_compat.detach_supported()
    assert websockets_compat.open_protocol_supported()
    assert not caplog.records


def test_an_open_protocol_parses_frames_from_the_first_byte() -> None:
    conn = websockets_compat.open_protocol(1 << 20, logging.getLogger("test"))
    conn.receive_data(b"\x81\x83abcd" + bytes(b ^ m for b, m in zip(b"2{}", b"abc", strict=True)))
    (frame,) = conn.events_received()
    assert frame.data == b"2{}"
    conn.send_text(b"3")
    assert b"".join(conn.data_to_send()) == b"\x81\x013"


def test_changed_uvicorn_internals_take_uvicorns_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="happy_socket.websocket")
    sources = dict(uvicorn_compat.TAKEOVER_SOURCES)
    key = next(iter(sources))
    sources[key] = ("self.renamed_headers = ",)
    monkeypatch.setattr(uvicorn_compat, "TAKEOVER_SOURCES", sources)
    monkeypatch.setattr(uvicorn_compat, "_takeover", None)
    assert not uvicorn_compat.upgrade_takeover_supported()
    assert "self.renamed_headers" in caplog.text
    monkeypatch.setattr(uvicorn_compat, "RUN_ASGI_SOURCE", ("self.renamed_app(",))
    assert not uvicorn_compat.detach_supported()
    assert "self.renamed_app(" in caplog.text
    monkeypatch.setattr(uvicorn_compat, "_takeover", None)


async def test_without_them_sockets_still_work(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket_module, "upgrade_takeover_supported", lambda: False)
    monkeypatch.setattr(websocket_module, "detach_supported", lambda: False)
    server = await make_server()
    sock = await server.client("alice")
    assert await sock.call("ping", {}) == {}
    proto = next(p for p in server.protocols() if hasattr(p, "accept_with"))
    assert proto.accept_value is None and proto.detached is None
