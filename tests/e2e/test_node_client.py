"""The stock Node ``socket.io-client`` against a real server: handshake refusals and ping."""

from __future__ import annotations

from typing import Any

from happy_socket.testing import ServerHarness

from .node import results, run_scenario

REFUSALS: list[tuple[dict[str, Any] | None, str]] = [
    (None, "Missing authentication token"),
    ({"token": ""}, "Missing authentication token"),
    ({"clientType": "session-scoped"}, "Missing authentication token"),
    (
        {"token": "x", "clientType": "session-scoped"},
        "Session ID required for session-scoped clients",
    ),
    (
        {"token": "x", "clientType": "machine-scoped", "sessionId": "S"},
        "Machine ID required for machine-scoped clients",
    ),
    ({"token": "not-a-token"}, "Invalid authentication token"),
]


async def test_refusals_reach_the_js_client_as_connect_error(server: ServerHarness) -> None:
    steps: list[dict[str, Any]] = []
    for auth, _ in REFUSALS:
        steps.append({"op": "connect"} if auth is None else {"op": "connect", "auth": auth})
    assert await results(server.url, steps) == [{"connect_error": m} for _, m in REFUSALS]


async def test_valid_token_of_other_server_is_invalid(server: ServerHarness) -> None:
    from happy_socket.auth import Tokens

    await server.app.accounts.ensure("alice")
    foreign = Tokens("another-secret-0123456789abcdef0123").issue("alice")
    assert await results(server.url, [{"op": "connect", "auth": {"token": foreign}}]) == [
        {"connect_error": "Invalid authentication token"}
    ]


async def test_connect_and_ping_with_only_a_callback(server: ServerHarness) -> None:
    token = await server.token("alice")
    out = await run_scenario(
        server.url,
        [
            {"op": "connect", "auth": {"token": token, "happyClient": "e2e/1"}},
            {"op": "emit", "event": "ping", "ack": True},
            {"op": "emit", "event": "ping", "args": [{"x": [1, None]}], "ack": True},
        ],
    )
    connected, bare, with_data = out["results"]
    assert connected["connected"] is True
    assert bare == {"ack": {}, "ackArgs": [{}]}
    assert with_data == {"ack": {}, "ackArgs": [{}]}


async def test_scoped_js_clients_connect_and_ping(server: ServerHarness) -> None:
    token = await server.token("alice")
    steps: list[dict[str, Any]] = []
    for auth in (
        {"clientType": "session-scoped", "sessionId": "S1"},
        {"clientType": "machine-scoped", "machineId": "M1"},
        {"clientType": "no-such-type"},
    ):
        steps.append({"op": "connect", "auth": {"token": token, **auth}})
        steps.append({"op": "emit", "event": "ping", "ack": True})
    out = await results(server.url, steps)
    assert [r.get("connected") for r in out[::2]] == [True, True, True]
    assert out[1::2] == [{"ack": {}, "ackArgs": [{}]}] * 3


async def test_ping_over_polling(server: ServerHarness) -> None:
    token = await server.token("alice")
    connected, pong = await results(
        server.url,
        [
            {"op": "connect", "auth": {"token": token}, "transports": ["polling"]},
            {"op": "emit", "event": "ping", "ack": True},
        ],
    )
    assert connected["connected"] is True
    assert pong == {"ack": {}, "ackArgs": [{}]}


async def test_unknown_event_with_callback_is_answered_unknown_event(
    server: ServerHarness,
) -> None:
    """A call of an event nobody serves is answered at once, readable in every envelope."""
    token = await server.token("alice")
    _, answer = await results(
        server.url,
        [
            {"op": "connect", "auth": {"token": token}},
            {"op": "emit", "event": "no-such-event", "args": [1], "ack": True, "timeoutMs": 3000},
        ],
    )
    assert answer["ack"] == {
        "result": "error",
        "ok": False,
        "success": False,
        "error": "Unknown event",
        "message": "Unknown event",
    }
