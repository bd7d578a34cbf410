"""POST/GET /v1/sessions (docs/http/sessions.md), the library API (docs/events.md) and the CLI command."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from click.testing import CliRunner
from happy_socket_sessions.tables import session_messages

from happy_socket import Tx
from happy_socket.cli import cli
from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import SECRET, FakeClock, body_of

SESSION_KEYS = {
    "id",
    "seq",
    "metadata",
    "metadataVersion",
    "agentState",
    "agentStateVersion",
    "dataEncryptionKey",
    "active",
    "activeAt",
    "createdAt",
    "updatedAt",
    "lastMessage",
}


async def test_post_sessions_creates_once_and_announces(
    both: ServerHarness, clock: FakeClock
) -> None:
    app = await both.client("alice")
    daemon = await both.client("alice", client_type="machine-scoped", machine_id="m")
    key = base64.b64encode(b"\x00key\xff").decode()
    async with httpx.AsyncClient(base_url=both.url) as http:
        auth = {"Authorization": f"Bearer {await both.token('alice')}"}
        body = {"tag": "T", "metadata": "meta", "agentState": "st", "dataEncryptionKey": key}
        resp = await http.post("/v1/sessions", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        session = resp.json()["session"]
        assert session == {
            "id": session["id"],
            "seq": 0,
            "metadata": "meta",
            "metadataVersion": 0,
            "agentState": "st",
            "agentStateVersion": 0,
            "dataEncryptionKey": key,
            "active": True,
            "activeAt": clock.now,
            "createdAt": clock.now,
            "updatedAt": clock.now,
            "lastMessage": None,
        }
        update = await app.next("update")
        expected = {k: v for k, v in session.items() if k != "lastMessage"}
        assert body_of(update) == {"t": "new-session", **expected}
        assert await daemon.nothing("update", 0.1)
        # same tag: the existing session, no update
        clock.advance(5)
        again = await http.post("/v1/sessions", json={"tag": "T", "metadata": "x"}, headers=auth)
        assert again.json() == {"session": session}
        assert await app.nothing("update", 0.2)
        # minimal body
        resp = await http.post("/v1/sessions", json={"tag": "U", "metadata": "m"}, headers=auth)
        other = resp.json()["session"]
        assert (other["agentState"], other["dataEncryptionKey"]) == (None, None)
        assert set(other) == SESSION_KEYS
        # list: most recently updated first
        listed = (await http.get("/v1/sessions", headers=auth)).json()
        assert listed == {"sessions": [{**other}, {**session}]}
        bob = {"Authorization": f"Bearer {await both.token('bob')}"}
        assert (await http.get("/v1/sessions", headers=bob)).json() == {"sessions": []}
        for bad in (
            {},
            {"tag": "T"},
            {"metadata": "m"},
            {"tag": "", "metadata": "m"},
            {"tag": 1, "metadata": "m"},
            {"tag": "T", "metadata": None},
            {"tag": "T", "metadata": "m", "agentState": 5},
            {"tag": "T", "metadata": "m", "dataEncryptionKey": "***"},
            {"tag": "T", "metadata": "m", "dataEncryptionKey": 5},
        ):
            resp = await http.post("/v1/sessions", json=bad, headers=auth)
            assert resp.status_code == 400, bad
            assert isinstance(resp.json()["error"], str)
        resp = await http.post("/v1/sessions", content=b"[1]", headers=auth)
        assert resp.status_code == 400
        assert (
            await http.post("/v1/sessions", json={"tag": "T", "metadata": "m"})
        ).status_code == 401
        resp = await http.get("/v1/sessions", headers={"Authorization": "Bearer nope"})
        assert resp.status_code == 401


async def test_delete_session_runs_listeners_in_the_unit(both: ServerHarness) -> None:
    svc = both.app.service("sessions")
    seen: list[tuple[str, str]] = []

    async def listener(tx: Tx, user_id: str, session_id: str) -> None:
        assert isinstance(tx, Tx)
        left = await tx.fetch_val(
            sa.select(sa.func.count())
            .select_from(session_messages)
            .where(session_messages.c.session_id == session_id)
        )
        assert left == 0  # the messages are already gone inside the same unit
        seen.append((user_id, session_id))

    svc.add_delete_listener(listener)
    await both.app.accounts.ensure("alice")  # a write never creates the account
    session, _ = await svc.create_or_load("alice", "t", "m")
    sid = session["id"]
    sender = await both.client("alice", client_type="session-scoped", session_id=sid)
    await sender.call("message", {"sid": sid, "message": "x"})
    app = await both.client("alice")
    assert await svc.owns("alice", sid)
    assert await svc.delete("bob", sid) is False
    assert seen == []
    assert await svc.delete("alice", sid) is True
    assert seen == [("alice", sid)]
    assert body_of(await app.next("update")) == {"t": "delete-session", "sid": sid}
    assert await svc.owns("alice", sid) is False
    assert await svc.get("alice", sid) is None
    count = await both.app.db.fetch_val(sa.select(sa.func.count()).select_from(session_messages))
    assert count == 0
    assert await svc.delete("alice", sid) is False
    ack = await sender.call("message", {"sid": sid, "message": "y"})
    assert ack == {"result": "error", "message": "Session not found"}


async def test_failing_listener_rolls_the_delete_back(srv: ServerHarness) -> None:
    svc = srv.app.service("sessions")

    async def listener(tx: Tx, user_id: str, session_id: str) -> None:
        raise RuntimeError("boom")

    svc.add_delete_listener(listener)
    await srv.app.accounts.ensure("alice")  # a write never creates the account
    session, _ = await svc.create_or_load("alice", "t", "m")
    try:
        await svc.delete("alice", session["id"])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the listener's error must propagate")
    assert await svc.get("alice", session["id"]) is not None


async def test_library_get_and_list(srv: ServerHarness) -> None:
    svc = srv.app.service("sessions")
    await srv.app.accounts.ensure("alice")  # a write never creates the account
    a, created = await svc.create_or_load("alice", "a", "m", "s", b"\x01")
    assert created and a["dataEncryptionKey"] == "AQ=="
    assert await svc.get("alice", a["id"]) == a
    assert await svc.get("bob", a["id"]) is None
    for i in range(3):
        await svc.create_or_load("alice", f"x{i}", "m")
    assert len(await svc.list("alice")) == 4
    assert len(await svc.list("alice", limit=2)) == 2
    assert await svc.owns("alice", a["id"]) and not await svc.owns("bob", a["id"])


def test_cli_sessions_create(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    args = ["sessions", "create", "--user", "u1", "--tag", "T", "--metadata", "M"]
    args += ["--db", db, "--secret", SECRET]
    refused = runner.invoke(cli, args)  # a write never creates the account
    assert refused.exit_code == 1 and "Account not found" in refused.output
    assert runner.invoke(cli, ["token", "u1", "--db", db, "--secret", SECRET]).exit_code == 0
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    out: dict[str, Any] = json.loads(first.output)
    assert out["created"] is True
    assert out["session"]["metadata"] == "M" and out["session"]["seq"] == 0
    second = json.loads(runner.invoke(cli, args).output)
    assert second == {"created": False, "session": out["session"]}
    fresh = json.loads(runner.invoke(cli, [*args[:3], "u1", "--db", db, "--secret", SECRET]).output)
    assert fresh["created"] is True and fresh["session"]["metadata"] == ""
    missing = runner.invoke(cli, ["sessions", "create", "--db", db])
    assert missing.exit_code != 0
