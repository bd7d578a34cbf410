"""The message and update-metadata flows with the stock Node socket.io-client (docs/events.md)."""

from __future__ import annotations

from typing import Any

from happy_socket.testing import ServerHarness

from .node import run_scenario


async def new_session(server: ServerHarness, user: str = "alice") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    session, _ = await server.app.service("sessions").create_or_load(user, "node-e2e", "meta-0")
    return str(session["id"])


def received(out: dict[str, Any], socket: int, event: str) -> list[Any]:
    return [e["args"][0] for e in out["events"] if e["socket"] == socket and e["event"] == event]


async def test_message_flow_with_the_js_client(server: ServerHarness) -> None:
    sid = await new_session(server)
    token = await server.token("alice")
    out = await run_scenario(
        server.url,
        [
            {"op": "connect", "auth": {"token": token}},  # socket 0: the app
            {
                "op": "connect",
                "auth": {"token": token, "clientType": "session-scoped", "sessionId": sid},
            },
            {
                "op": "emit",
                "event": "message",
                "ack": True,
                "args": [{"sid": sid, "message": "ciphertext", "localId": "l-1"}],
            },
            {"op": "wait", "event": "update"},
            {
                "op": "emit",
                "event": "message",
                "ack": True,  # an idempotent retry
                "args": [{"sid": sid, "message": "ciphertext", "localId": "l-1"}],
            },
            {
                "op": "emit",
                "event": "message",
                "ack": False,
                "args": [{"sid": sid, "message": "no ack"}],
            },
            {"op": "wait", "event": "update"},
            {
                "op": "emit",
                "event": "message",
                "ack": True,
                "args": [{"sid": "nope", "message": "x"}],
            },
        ],
    )
    _, _, first, _, retry, _, _, unknown = out["results"]
    ack = first["ack"]
    assert ack == {"result": "success", "id": ack["id"], "seq": 1, "localId": "l-1"}
    assert retry["ack"] == ack
    assert unknown["ack"] == {"result": "error", "message": "Session not found"}
    updates = received(out, 0, "update")
    assert [u["body"]["t"] for u in updates] == ["new-message", "new-message"]
    body = updates[0]["body"]
    assert body["sid"] == sid
    message = body["message"]
    assert set(message) == {"id", "seq", "content", "localId", "createdAt", "updatedAt"}
    assert (message["id"], message["seq"], message["localId"]) == (ack["id"], 1, "l-1")
    assert message["content"] == {"t": "encrypted", "c": "ciphertext"}
    assert (
        updates[1]["body"]["message"]["seq"] == 2
        and updates[1]["body"]["message"]["localId"] is None
    )
    assert updates[1]["seq"] == updates[0]["seq"] + 1
    assert received(out, 1, "update") == []  # the sender is skipped


async def test_update_metadata_flow_with_the_js_client(server: ServerHarness) -> None:
    sid = await new_session(server)
    token = await server.token("alice")
    out = await run_scenario(
        server.url,
        [
            {
                "op": "connect",
                "auth": {"token": token, "clientType": "session-scoped", "sessionId": sid},
            },
            {"op": "connect", "auth": {"token": token}},  # socket 1: the app, sends the update
            {
                "op": "emit",
                "event": "update-metadata",
                "ack": True,
                "args": [{"sid": sid, "metadata": "meta-1", "expectedVersion": 0}],
            },
            {"op": "wait", "event": "update"},
            {"op": "wait", "event": "update"},
            {
                "op": "emit",
                "event": "update-metadata",
                "ack": True,
                "args": [{"sid": sid, "metadata": "stale", "expectedVersion": 0}],
            },
            {
                "op": "emit",
                "event": "update-metadata",
                "ack": True,
                "args": [{"sid": "unknown", "metadata": "x", "expectedVersion": 0}],
            },
            {"op": "emit", "event": "update-metadata", "ack": True, "args": [{"sid": sid}]},
        ],
    )
    _, _, success, _, _, mismatch, unknown, invalid = out["results"]
    assert success["ack"] == {"result": "success", "version": 1, "metadata": "meta-1"}
    assert mismatch["ack"] == {"result": "version-mismatch", "version": 1, "metadata": "meta-1"}
    assert unknown["ack"] == {"result": "error"}
    assert invalid["ack"] == {"result": "error"}
    for socket in (0, 1):  # session socket and the sender's app socket both get it
        [update] = received(out, socket, "update")
        assert update["body"] == {
            "t": "update-session",
            "id": sid,
            "metadata": {"value": "meta-1", "version": 1},
        }
        assert "agentState" not in update["body"]
