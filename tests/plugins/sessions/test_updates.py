"""update-metadata / update-state (docs/events.md): exact acks, updates, recipients, races."""

from __future__ import annotations

import asyncio
from typing import Any

from happy_socket.testing import ServerHarness, TestSocket
from tests.plugins.sessions.support import body_of


async def new_session(server: ServerHarness, user: str = "alice", tag: str = "t1") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    session, created = await server.app.service("sessions").create_or_load(user, tag, "meta0")
    assert created
    return str(session["id"])


async def sockets(server: ServerHarness, sid: str) -> dict[str, TestSocket]:
    """An app, a socket of the session, one of another session, a machine daemon."""
    return {
        "app": await server.client("alice"),
        "session": await server.client("alice", client_type="session-scoped", session_id=sid),
        "other_session": await server.client(
            "alice", client_type="session-scoped", session_id="other"
        ),
        "machine": await server.client("alice", client_type="machine-scoped", machine_id="m1"),
        "bob": await server.client("bob"),
    }


FIELDS = (("update-metadata", "metadata", "meta0"), ("update-state", "agentState", None))


async def test_success_reaches_the_session_and_apps_sender_included(both: ServerHarness) -> None:
    sid = await new_session(both)
    s = await sockets(both, sid)
    for event, field, _ in FIELDS:
        ack = await s["app"].call(event, {"sid": sid, field: "v1", "expectedVersion": 0})
        assert ack == {"result": "success", "version": 1, field: "v1"}
        expected = {"t": "update-session", "id": sid, field: {"value": "v1", "version": 1}}
        for name in ("app", "session"):
            assert body_of(await s[name].next("update")) == expected
        # a second change with the new version, from the session itself
        ack = await s["session"].call(event, {"sid": sid, field: "v2", "expectedVersion": 1})
        assert ack == {"result": "success", "version": 2, field: "v2"}
        expected = {"t": "update-session", "id": sid, field: {"value": "v2", "version": 2}}
        for name in ("app", "session"):
            assert body_of(await s[name].next("update")) == expected
    quiet = await asyncio.gather(
        *(s[n].nothing("update", 0.2) for n in ("other_session", "machine", "bob"))
    )
    assert all(quiet)
    seqs = [u["seq"] for u in s["app"].events["update"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


async def test_update_state_accepts_null(srv: ServerHarness) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    ack = await app.call("update-state", {"sid": sid, "agentState": None, "expectedVersion": 0})
    assert ack == {"result": "success", "version": 1, "agentState": None}
    assert body_of(await app.next("update"))["agentState"] == {"value": None, "version": 1}


async def test_version_mismatch_returns_current_and_not_found_is_answered(
    both: ServerHarness,
) -> None:
    sid = await new_session(both)
    bobs = await new_session(both, user="bob")
    app = await both.client("alice")
    app2 = await both.client("alice")
    for event, field, initial in FIELDS:
        ack = await app.call(event, {"sid": sid, field: "x", "expectedVersion": 5})
        assert ack == {"result": "version-mismatch", "version": 0, field: initial}
        assert await app.call(event, {"sid": sid, field: "new", "expectedVersion": 0}) == {
            "result": "success",
            "version": 1,
            field: "new",
        }
        ack = await app2.call(event, {"sid": sid, field: "late", "expectedVersion": 0})
        assert ack == {"result": "version-mismatch", "version": 1, field: "new"}
        ack = await app2.call(event, {"sid": sid, field: "late", "expectedVersion": 1.5})
        assert ack == {"result": "version-mismatch", "version": 1, field: "new"}
        for other in (bobs, "no-such-session"):
            ack = await app.call(event, {"sid": other, field: "x", "expectedVersion": 0})
            assert ack == {"result": "error"}
    for _ in range(2):  # the two successes, nothing else
        assert body_of(await app.next("update"))["t"] == "update-session"
    assert await app.nothing("update", 0.2)
    bob_session = await both.app.service("sessions").get("bob", bobs)
    assert (bob_session["metadata"], bob_session["metadataVersion"]) == ("meta0", 0)


BAD: list[Any] = [
    None,
    [],
    5,
    "text",
    {},
    {"sid": None, "metadata": "x", "expectedVersion": 0},
    {"sid": 7, "metadata": "x", "expectedVersion": 0},
    {"sid": "", "metadata": "x", "expectedVersion": 0},
    {"sid": "s" * 10_000, "metadata": "x", "expectedVersion": 0},
    {"sid": "S", "metadata": 1, "expectedVersion": 0},
    {"sid": "S", "metadata": None, "expectedVersion": 0},
    {"sid": "S", "metadata": "x"},
    {"sid": "S", "metadata": "x", "expectedVersion": "0"},
    {"sid": "S", "metadata": "x", "expectedVersion": True},
    {"sid": "S", "metadata": "x", "expectedVersion": None},
    {"sid": "S", "metadata": ["x"], "expectedVersion": 0},
]


async def test_invalid_input_is_answered(srv: ServerHarness) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    for payload in BAD:
        if isinstance(payload, dict) and payload.get("sid") == "S":
            payload = {**payload, "sid": sid}
        assert await app.call("update-metadata", payload) == {"result": "error"}, payload
        if isinstance(payload, dict) and "metadata" in payload:
            payload = dict(payload)
            payload["agentState"] = payload.pop("metadata")
            if payload["agentState"] is None:
                continue  # a null agentState is valid
        assert await app.call("update-state", payload) == {"result": "error"}, payload
    assert (await srv.app.service("sessions").get("alice", sid))["metadataVersion"] == 0


async def test_no_argument_at_all(srv: ServerHarness) -> None:
    app = await srv.client("alice")
    assert await app.call("update-metadata") == {"result": "error"}
    assert await app.call("update-state") == {"result": "error"}
    assert await app.call("update-metadata", 1, 2) == {"result": "error"}


async def test_huge_version_and_value(srv: ServerHarness) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    ack = await app.call("update-metadata", {"sid": sid, "metadata": "x", "expectedVersion": 2**80})
    assert ack == {"result": "version-mismatch", "version": 0, "metadata": "meta0"}
    big = "y" * 500_000
    ack = await app.call("update-metadata", {"sid": sid, "metadata": big, "expectedVersion": 0})
    assert ack == {"result": "success", "version": 1, "metadata": big}


async def test_eight_racing_writers_one_wins_the_rest_see_fresh_values(both: ServerHarness) -> None:
    sid = await new_session(both)
    writers = [await both.client("alice") for _ in range(8)]
    for event, field, _ in FIELDS:
        acks = await asyncio.gather(
            *(
                w.call(event, {"sid": sid, field: f"v{i}", "expectedVersion": 0})
                for i, w in enumerate(writers)
            )
        )
        wins = [a for a in acks if a["result"] == "success"]
        assert len(wins) == 1, acks
        winner = wins[0][field]
        assert wins[0] == {"result": "success", "version": 1, field: winner}
        losers = [a for a in acks if a["result"] != "success"]
        assert losers == [{"result": "version-mismatch", "version": 1, field: winner}] * 7
        stored = await both.app.service("sessions").get("alice", sid)
        assert stored[field] == winner
        assert stored[f"{field}Version"] == 1
