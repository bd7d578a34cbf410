"""Tripwires for the uvicorn internals happy-socket relies on (happy_socket.compat.uvicorn):
the websockets-sansio protocol the lean websocket protocol subclasses, and the signals
``uvicorn.Server`` re-raises. The header deadline and lingering close are tested in
tests/hostile/ (test_slow_readers.py, test_protocol_corners.py)."""

from __future__ import annotations

import inspect
import logging
import signal
import sys
from typing import Any

import pytest
import uvicorn

from happy_socket.compat import uvicorn as uvicorn_compat
from happy_socket.websocket import websocket_protocol

SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never run
    pass


def test_the_installed_release_has_the_sansio_protocol(caplog: pytest.LogCaptureFixture) -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    caplog.set_level(logging.WARNING)
    assert uvicorn_compat.sansio_protocol() is WebSocketsSansIOProtocol
    protocol = websocket_protocol()
    assert isinstance(protocol, type) and issubclass(protocol, WebSocketsSansIOProtocol)
    assert not caplog.records


async def test_the_attributes_replaced_are_the_ones_uvicorn_uses() -> None:
    from happy_socket.lean import LeanEvent, LeanQueue

    config = uvicorn.Config(_app, ws="websockets-sansio")
    config.load()
    protocol = websocket_protocol()
    state: dict[str, Any] = {"config": config, "server_state": uvicorn.server.ServerState()}
    if "app_state" in inspect.signature(protocol.__mro__[1].__init__).parameters:  # 0.36+
        state["app_state"] = {}
    ws = protocol(**state)
    assert isinstance(ws.queue, LeanQueue) and isinstance(ws.writable, LeanEvent)
    for name in ("conn", "handshake_complete", "close_sent", "disconnected", "initial_response"):
        assert hasattr(ws, name), name
    assert callable(ws.conn.send_text) and callable(ws.conn.data_to_send)


def test_without_sansio_websockets_take_auto_and_say_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, SANSIO, None)  # import fails, as on uvicorn < 0.35
    caplog.set_level(logging.WARNING, logger="happy_socket.websocket")
    assert websocket_protocol() == "auto"
    assert "websockets-sansio" in caplog.text and "'auto'" in caplog.text


def test_a_changed_sansio_protocol_takes_auto(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attributes = dict(uvicorn_compat.SANSIO_ATTRIBUTES, __init__=("self.renamed_queue",))
    monkeypatch.setattr(uvicorn_compat, "SANSIO_ATTRIBUTES", attributes)
    caplog.set_level(logging.WARNING, logger="happy_socket.websocket")
    assert websocket_protocol() == "auto"
    assert "self.renamed_queue" in caplog.text


@pytest.fixture
def sigterm_caught() -> Any:
    """SIGTERMs raised in this test, recorded instead of ending the process."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: caught.append(sig))
    yield caught
    signal.signal(signal.SIGTERM, previous)


def test_uvicorn_reraises_captured_signals_unless_forgotten(sigterm_caught: list[int]) -> None:
    server = uvicorn.Server(uvicorn.Config(_app))
    with server.capture_signals():
        server.handle_exit(signal.SIGTERM, None)
    assert sigterm_caught == [signal.SIGTERM]  # why `serve` clears the list

    sigterm_caught.clear()
    server = uvicorn.Server(uvicorn.Config(_app))
    with server.capture_signals():
        server.handle_exit(signal.SIGTERM, None)
        uvicorn_compat.forget_captured_signals(server)
    assert sigterm_caught == []


def test_a_server_without_the_list_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(uvicorn_compat, "_warned_signals", False)
    caplog.set_level(logging.WARNING, logger="happy_socket.http")
    uvicorn_compat.forget_captured_signals(object())
    uvicorn_compat.forget_captured_signals(object())
    assert caplog.text.count("_captured_signals") == 1
