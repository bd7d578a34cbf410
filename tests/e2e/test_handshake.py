"""docs/events.md, "Handshake": the handshake refusals, clientType defaulting, ping — python-socketio client."""

from __future__ import annotations

import pytest

from happy_socket.handshake import INVALID_TOKEN, MISSING_MACHINE, MISSING_SESSION, MISSING_TOKEN
from happy_socket.testing import ServerHarness


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "Missing authentication token"),
        ({}, "Missing authentication token"),
        ({"token": ""}, "Missing authentication token"),
        ({"token": 42}, "Missing authentication token"),
        ({"token": "x.y.z"}, "Invalid authentication token"),
        ({"token": "garbage"}, "Invalid authentication token"),
    ],
)
async def test_refusals_without_a_valid_token(
    server: ServerHarness, auth: object, message: str
) -> None:
    assert await server.refusal(auth) == message


async def test_refusal_messages_are_the_protocol_strings() -> None:
    assert (MISSING_TOKEN, MISSING_SESSION, MISSING_MACHINE, INVALID_TOKEN) == (
        "Missing authentication token",
        "Session ID required for session-scoped clients",
        "Machine ID required for machine-scoped clients",
        "Invalid authentication token",
    )


async def test_scoped_clients_need_their_id(server: ServerHarness) -> None:
    token = await server.token("alice")
    assert await server.refusal({"token": token, "clientType": "session-scoped"}) == (
        "Session ID required for session-scoped clients"
    )
    assert await server.refusal(
        {"token": token, "clientType": "session-scoped", "sessionId": ""}
    ) == ("Session ID required for session-scoped clients")
    assert await server.refusal({"token": token, "clientType": "machine-scoped"}) == (
        "Machine ID required for machine-scoped clients"
    )
    # the id checks come before token verification, as in the reference server
    assert await server.refusal({"token": "bad", "clientType": "machine-scoped"}) == (
        "Machine ID required for machine-scoped clients"
    )


async def test_token_of_unknown_account_is_invalid(server: ServerHarness) -> None:
    token = server.app.tokens.issue("nobody-created-me")
    assert await server.refusal({"token": token}) == "Invalid authentication token"


async def test_token_signed_with_another_secret_is_invalid(server: ServerHarness) -> None:
    from happy_socket.auth import Tokens

    await server.app.accounts.ensure("alice")
    assert await server.refusal({"token": Tokens("other").issue("alice")}) == INVALID_TOKEN


@pytest.mark.parametrize("client_type", [None, "user-scoped", "bogus", 7])
async def test_unknown_client_type_is_user_scoped(
    server: ServerHarness, client_type: object
) -> None:
    extra = {} if client_type is None else {"clientType": client_type}
    sock = await server.client("alice", **extra)
    conn = server.app.connection(sock.sid)
    assert conn.client_type.value == "user-scoped"
    rooms = set(server.app.sio.rooms(sock.sid))
    assert {"user:alice", "user:alice:user-scoped"} <= rooms


async def test_rooms_of_scoped_clients(server: ServerHarness) -> None:
    s = await server.client("alice", client_type="session-scoped", session_id="S1")
    m = await server.client("alice", client_type="machine-scoped", machine_id="M1")
    assert set(server.app.sio.rooms(s.sid)) == {s.sid, "user:alice", "user:alice:session:S1"}
    assert set(server.app.sio.rooms(m.sid)) == {m.sid, "user:alice", "user:alice:machine:M1"}


async def test_ping_with_only_a_callback(server: ServerHarness) -> None:
    sock = await server.client("alice")
    assert await sock.call("ping") == {}
    assert await sock.call("ping", {"anything": [1, 2]}) == {}


async def test_ping_over_long_polling(server: ServerHarness) -> None:
    sock = await server.client("alice", transport="polling")
    assert await sock.call("ping") == {}


async def test_unknown_events_are_answered_and_change_nothing(server: ServerHarness) -> None:
    sock = await server.client("alice")
    unknown = {
        "result": "error",
        "ok": False,
        "success": False,
        "error": "Unknown event",
        "message": "Unknown event",
    }
    assert await sock.call("no-such-event", {"sid": "x"}) == unknown
    assert await sock.call("no-such-event") == unknown  # only a callback
    await sock.emit("no-such-event", 1)  # no ack asked: nothing is sent back
    assert await sock.call("ping") == {}
