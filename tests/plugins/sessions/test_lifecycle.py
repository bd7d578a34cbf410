"""Archive, delete, the v2 lists, push-event, and the sessions list/delete commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from happy_socket_access_keys.tables import access_keys
from happy_socket_sessions.tables import session_messages, sessions
from happy_socket_usage.tables import usage_reports

from happy_socket.cli import cli
from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import MIN, SECRET, FakeClock, body_of

INVALID = {"error": "Error", "statusCode": 400}
NOT_FOUND = {"error": "Session not found"}
DELETE_NOT_FOUND = {"error": "Session not found or not owned by user"}
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
}


async def anonymous(server: ServerHarness, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request without a token."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.request(method, path, **kwargs)


async def new_session(server: ServerHarness, user: str = "alice", tag: str = "t1") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    session, _ = await server.app.service("sessions").create_or_load(user, tag, "meta0")
    return str(session["id"])


def activity(sid: str, active: bool, at: int) -> dict[str, object]:
    return {"type": "activity", "id": sid, "active": active, "activeAt": at, "thinking": False}


def is_invalid(resp: httpx.Response) -> bool:
    body = resp.json()
    return resp.status_code == 400 and {k: body.get(k) for k in INVALID} == INVALID


@pytest.fixture
async def http(both: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``both`` with alice's token."""
    headers = {"Authorization": f"Bearer {await both.token('alice')}"}
    async with httpx.AsyncClient(base_url=both.url, headers=headers, timeout=30) as client:
        yield client


async def count(server: ServerHarness, table: sa.Table, **where: str) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    return int(await server.app.db.fetch_val(query))


async def test_archive(both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock) -> None:
    sid = await new_session(both)
    bobs = await new_session(both, "bob")
    app = await both.client("alice")
    sess = await both.client("alice", client_type="session-scoped", session_id=sid)
    svc = both.app.service("sessions")
    before = await svc.get("alice", sid)
    now = clock.advance(5000)
    # no body, a body with the JSON content type, and a body that is not even JSON
    for content in (None, b"", b"{not json"):
        headers = {"Content-Type": "application/json"} if content is not None else {}
        resp = await http.post(f"/v1/sessions/{sid}/archive", content=content, headers=headers)
        assert (resp.status_code, resp.json()) == (200, {"success": True})
        assert await app.next("ephemeral") == activity(sid, False, now)  # a repeat emits again
    assert await sess.nothing("ephemeral", 0.2)  # user-scoped only
    assert await app.nothing("update", 0.1)  # no update
    after = await svc.get("alice", sid)
    assert after == {**before, "active": False, "activeAt": now}  # metadata etc. untouched
    # heartbeats are ignored for a minute ...
    clock.advance(59_000)
    await sess.emit("session-alive", {"sid": sid, "time": clock.now})
    assert await app.nothing("ephemeral", 0.3)
    # ... unless POST /v1/sessions with the same tag brings it back
    resp = await http.post("/v1/sessions", json={"tag": "t1", "metadata": "x"})
    assert resp.json()["session"]["id"] == sid
    await sess.emit("session-alive", {"sid": sid, "time": clock.now})
    assert (await app.next("ephemeral"))["active"] is True
    for target in ("nope", bobs):
        resp = await http.post(f"/v1/sessions/{target}/archive")
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    assert (await svc.get("bob", bobs))["active"] is True
    assert await app.nothing("ephemeral", 0.2)
    resp = await anonymous(both, "POST", f"/v1/sessions/{sid}/archive")
    assert resp.status_code == 401


async def test_delete_takes_messages_usage_and_keys(
    both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sid = await new_session(both)
    keep = await new_session(both, tag="keep")
    bobs = await new_session(both, "bob")
    await both.app.service("machines").create_or_load("alice", "m1", "meta")
    app = await both.client("alice")
    sess = await both.client("alice", client_type="session-scoped", session_id=sid)
    for target in (sid, keep):
        await sess.call("message", {"sid": target, "message": "m", "localId": "l"})
        await sess.call(
            "usage-report",
            {"key": "k", "tokens": {"total": 1}, "cost": {"total": 1}, "sessionId": target},
        )
        resp = await http.post(f"/v1/access-keys/{target}/m1", json={"data": "key"})
        assert resp.status_code == 200, resp.text
    for event in ("update", "ephemeral"):  # new-message and usage: not what is tested here
        while not await app.nothing(event, 0.2):
            pass
    for table in (session_messages, usage_reports, access_keys):
        assert await count(both, table, session_id=sid) == 1
    resp = await http.delete(f"/v1/sessions/{sid}")
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    assert body_of(await app.next("update")) == {"t": "delete-session", "sid": sid}
    assert await sess.nothing("update", 0.2)  # user-scoped only
    for table in (session_messages, usage_reports, access_keys):
        assert await count(both, table, session_id=sid) == 0
        assert await count(both, table, session_id=keep) == 1
    assert await count(both, sessions, id=sid) == 0
    # a repeat, an unknown id and bob's id: 404, nothing emitted, bob's session untouched
    for target in (sid, "nope", bobs):
        resp = await http.delete(f"/v1/sessions/{target}")
        assert (resp.status_code, resp.json()) == (404, DELETE_NOT_FOUND)
    assert await both.app.service("sessions").get("bob", bobs) is not None
    assert await app.nothing("update", 0.2)
    # the session's socket stays connected; its events now find no session
    ack = await sess.call("message", {"sid": sid, "message": "late"})
    assert ack == {"result": "error", "message": "Session not found"}
    await sess.emit("session-alive", {"sid": sid, "time": clock.now})
    assert await app.nothing("ephemeral", 0.3)
    for path in (f"/v1/sessions/{sid}/messages", f"/v3/sessions/{sid}/messages"):
        resp = await http.get(path)
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    resp = await anonymous(both, "DELETE", f"/v1/sessions/{keep}")
    assert resp.status_code == 401


async def test_v2_active(both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock) -> None:
    svc = both.app.service("sessions")
    stale = await new_session(both, tag="stale")
    clock.advance(16 * MIN)
    older = await new_session(both, tag="older")
    clock.advance(1000)
    newer = await new_session(both, tag="newer")
    ended = await new_session(both, tag="ended")
    await svc.archive("alice", ended)
    bobs = await new_session(both, "bob", tag="bobs")
    resp = await http.get("/v2/sessions/active", headers={"Content-Type": "application/json"})
    listed = resp.json()["sessions"]
    assert [s["id"] for s in listed] == [newer, older]
    assert listed[0] == await svc.get("alice", newer) and set(listed[0]) == SESSION_KEYS
    assert stale not in {s["id"] for s in listed}
    one = (await http.get("/v2/sessions/active?limit=1")).json()
    assert [s["id"] for s in one["sessions"]] == [newer]
    assert len((await http.get("/v2/sessions/active?limit=500")).json()["sessions"]) == 2
    for query in ("limit=0", "limit=501", "limit=", "limit=x", "limit=1.5"):
        assert is_invalid(await http.get(f"/v2/sessions/active?{query}")), query
    bob = {"Authorization": f"Bearer {await both.token('bob')}"}
    resp = await http.get("/v2/sessions/active", headers=bob)
    assert [s["id"] for s in resp.json()["sessions"]] == [bobs]
    assert (await anonymous(both, "GET", "/v2/sessions/active")).status_code == 401


async def test_v2_cursor_pages(
    both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    svc = both.app.service("sessions")
    ids = []
    for i in range(7):
        clock.advance(10)
        ids.append(await new_session(both, tag=f"t{i}"))
    await new_session(both, "bob", tag="bobs")
    t = sessions
    ordered = [
        r["id"]
        for r in await both.app.db.fetch_all(
            sa.select(t.c.id).where(t.c.account_id == "alice").order_by(t.c.id.desc())
        )
    ]
    assert sorted(ordered) == sorted(ids)
    pages = []
    cursor = None
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await http.get(f"/v2/sessions?{query}")).json()
        pages.append([s["id"] for s in page["sessions"]])
        if not page["hasNext"]:
            assert page["nextCursor"] is None
            break
        assert page["nextCursor"] == f"cursor_v1_{page['sessions'][-1]['id']}"
        cursor = page["nextCursor"]
    assert pages == [ordered[0:3], ordered[3:6], ordered[6:7]]
    first = (await http.get("/v2/sessions")).json()
    assert first == {
        "sessions": [await svc.get("alice", sid) for sid in ordered],
        "nextCursor": None,
        "hasNext": False,
    }
    # changedSince keeps updatedAt > changedSince; an empty cursor (or bare prefix) is no cursor
    changed = await svc.get("alice", ids[4])
    since = (await http.get(f"/v2/sessions?changedSince={changed['updatedAt']}")).json()
    assert sorted(s["id"] for s in since["sessions"]) == sorted(ids[5:])
    for query in ("cursor=", "cursor=cursor_v1_"):
        assert [
            s["id"] for s in (await http.get(f"/v2/sessions?{query}")).json()["sessions"]
        ] == ordered
    exact = (await http.get("/v2/sessions?limit=7")).json()
    assert (len(exact["sessions"]), exact["hasNext"], exact["nextCursor"]) == (7, False, None)
    for cursor in ("abc", "cursor_v2_x", "CURSOR_V1_x"):
        resp = await http.get(f"/v2/sessions?cursor={cursor}")
        assert (resp.status_code, resp.json()) == (400, {"error": "Invalid cursor format"})
    for query in ("limit=0", "limit=201", "changedSince=0", "changedSince=-1", "changedSince=1.5"):
        assert is_invalid(await http.get(f"/v2/sessions?{query}")), query
    bob = {"Authorization": f"Bearer {await both.token('bob')}"}
    bobs = (await http.get("/v2/sessions", headers=bob)).json()["sessions"]
    assert len(bobs) == 1 and bobs[0]["id"] not in ids
    assert (await anonymous(both, "GET", "/v2/sessions")).status_code == 401


async def test_push_event(both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock) -> None:
    sid = await new_session(both)
    bobs = await new_session(both, "bob")
    app = await both.client("alice", appState="background")
    sess = await both.client("alice", client_type="session-scoped", session_id=sid)
    other = await both.client("alice", client_type="session-scoped", session_id="other")
    bob = await both.client("bob")
    url = f"/v1/sessions/{sid}/push-event"
    good = {"kind": "done", "title": "T", "body": "B"}
    for bad in (
        {},
        {**good, "kind": "other"},
        {**good, "kind": None},
        {**good, "title": ""},
        {**good, "title": 5},
        {**good, "title": "t" * 201},
        {**good, "title": "\U0001f600" * 101},  # 202 UTF-16 code units
        {**good, "body": ""},
        {**good, "body": "b" * 501},
        {**good, "data": None},
        {**good, "data": [1]},
        {**good, "data": "x"},
        {"title": "T", "body": "B"},
    ):
        assert is_invalid(await http.post(url, json=bad)), bad
    for target in ("nope", bobs):
        resp = await http.post(f"/v1/sessions/{target}/push-event", json=good)
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    assert all(await asyncio.gather(*(s.nothing("ephemeral", 0.2) for s in (app, sess, bob))))
    now = clock.advance(77)
    for kind in ("done", "permission", "question"):
        body = {
            "kind": kind,
            "title": "t" * 200,
            "body": "\U0001f600" * 250,
            "data": {"sessionId": sid, "kind": kind, "url": "x"},
            "extra": 1,
        }
        resp = await http.post(url, json=body)
        assert (resp.status_code, resp.json()) == (200, {"success": True, "result": "no_tokens"})
        event = {
            "type": "session-event",
            "sessionId": sid,
            "kind": kind,
            "title": "t" * 200,
            "body": "\U0001f600" * 250,
            "timestamp": now,
        }
        for sock in (app, sess):
            assert await sock.next("ephemeral") == event
    assert all(await asyncio.gather(*(s.nothing("ephemeral", 0.2) for s in (other, bob))))
    # an app in the foreground: the push would be suppressed
    await both.client("alice", appState="active")
    resp = await http.post(url, json=good)
    assert resp.json() == {"success": True, "result": "suppressed", "reason": "active-ui-client"}
    assert (await sess.next("ephemeral"))["type"] == "session-event"
    assert (await anonymous(both, "POST", url, json=good)).status_code == 401


def test_cli_sessions_list_and_delete(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    common = ["--db", db, "--secret", SECRET]

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["sessions", *args, *common])

    for user in ("u1", "u2"):  # the accounts exist (a write never creates one)
        assert runner.invoke(cli, ["token", user, *common]).exit_code == 0
    empty = run("list", "--user", "u1")
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.output) == {"sessions": []}
    created = [json.loads(run("create", "--user", "u1", "--tag", t).output) for t in ("a", "b")]
    run("create", "--user", "u2", "--tag", "c")
    listed = json.loads(run("list", "--user", "u1").output)
    assert {s["id"] for s in listed["sessions"]} == {c["session"]["id"] for c in created}
    assert len(json.loads(run("list", "--user", "u1", "--limit", "1").output)["sessions"]) == 1
    first = created[0]["session"]["id"]
    foreign = run("delete", "--user", "u2", first)
    assert foreign.exit_code == 1
    assert "Error: Session not found or not owned by user" in foreign.output
    deleted = run("delete", "--user", "u1", first)
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.output) == {"success": True}
    again = run("delete", "--user", "u1", first)
    assert again.exit_code == 1 and "not found" in again.output
    remaining = json.loads(run("list", "--user", "u1").output)["sessions"]
    assert [s["id"] for s in remaining] == [created[1]["session"]["id"]]
    assert run("delete", "--user", "u1").exit_code == 2  # SESSION_ID is required
