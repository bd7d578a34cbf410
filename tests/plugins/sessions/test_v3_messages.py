"""GET/POST /v3/sessions/:sessionId/messages: paging, batches, one localId namespace, races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from happy_socket_sessions.tables import session_messages, sessions

from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import FakeClock, body_of, make_app

INVALID = {"error": "Error", "statusCode": 400}
NOT_FOUND = {"error": "Session not found"}


async def anonymous(server: ServerHarness, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request without a token."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.request(method, path, **kwargs)


async def new_session(server: ServerHarness, user: str = "alice", tag: str = "t1") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    session, _ = await server.app.service("sessions").create_or_load(user, tag, "meta0")
    return str(session["id"])


@pytest.fixture
async def http(both: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``both`` with alice's token."""
    headers = {"Authorization": f"Bearer {await both.token('alice')}"}
    async with httpx.AsyncClient(base_url=both.url, headers=headers, timeout=30) as client:
        yield client


def batch(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"localId": local, "content": content} for local, content in pairs]}


def is_invalid(resp: httpx.Response) -> bool:
    body = resp.json()
    return resp.status_code == 400 and {k: body.get(k) for k in INVALID} == INVALID


async def stored(server: ServerHarness, sid: str) -> list[dict[str, Any]]:
    m = session_messages
    query = sa.select(m).where(m.c.session_id == sid).order_by(m.c.seq)
    return await server.app.db.fetch_all(query)


async def test_post_batch_exact_json_updates_and_first_wins(
    both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sid = await new_session(both)
    await new_session(both, tag="later")  # newer than sid until sid gets a message
    app = await both.client("alice")
    cli = await both.client("alice", client_type="session-scoped", session_id=sid)
    other = await both.client("alice", client_type="session-scoped", session_id="other")
    machine = await both.client("alice", client_type="machine-scoped", machine_id="m1")
    bob = await both.client("bob")
    now = clock.advance(1000)
    resp = await http.post(
        f"/v3/sessions/{sid}/messages", json=batch(("L1", "c1"), ("L2", "c2"), ("L1", "dup"))
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    ids = [m["id"] for m in answer["messages"]]
    assert answer == {
        "messages": [
            {"id": ids[0], "seq": 1, "localId": "L1", "createdAt": now, "updatedAt": now},
            {"id": ids[1], "seq": 2, "localId": "L2", "createdAt": now, "updatedAt": now},
        ]
    }
    for sock in (app, cli):  # an HTTP request has no sender socket: both get both, in order
        first, second = await sock.next("update"), await sock.next("update")
        assert second["seq"] == first["seq"] + 1
        for update, (seq, local, content) in zip(
            (first, second), ((1, "L1", "c1"), (2, "L2", "c2")), strict=True
        ):
            assert body_of(update) == {
                "t": "new-message",
                "sid": sid,
                "message": {
                    "id": ids[seq - 1],
                    "seq": seq,
                    "content": {"t": "encrypted", "c": content},
                    "localId": local,
                    "createdAt": now,
                    "updatedAt": now,
                },
            }
    quiet = await asyncio.gather(*(s.nothing("update", 0.2) for s in (other, machine, bob)))
    assert all(quiet)
    # the counter and updatedAt moved: the session is first in GET /v1/sessions
    listed = (await http.get("/v1/sessions")).json()["sessions"]
    assert listed[0]["id"] == sid and (listed[0]["seq"], listed[0]["updatedAt"]) == (2, now)

    # a retry: the same answer, nothing stored or emitted, updatedAt unchanged
    clock.advance(1000)
    again = await http.post(
        f"/v3/sessions/{sid}/messages", json=batch(("L1", "x"), ("L2", "y"), ("L1", "z"))
    )
    assert again.json() == answer
    assert await app.nothing("update", 0.2)
    assert (await both.app.service("sessions").get("alice", sid))["updatedAt"] == now

    # the socket `message` event shares the namespace, both ways
    ack = await cli.call("message", {"sid": sid, "message": "s1", "localId": "S1"})
    assert ack == {"result": "success", "id": ack["id"], "seq": 3, "localId": "S1"}
    assert body_of(await app.next("update"))["message"]["seq"] == 3
    later = clock.advance(1000)
    mixed = await http.post(
        f"/v3/sessions/{sid}/messages", json=batch(("L3", "c3"), ("S1", "other"), ("L2", "no"))
    )
    entries = mixed.json()["messages"]
    assert [(m["seq"], m["localId"]) for m in entries] == [(2, "L2"), (3, "S1"), (4, "L3")]
    assert entries[1]["id"] == ack["id"] and entries[0] == answer["messages"][1]
    assert (entries[2]["createdAt"], entries[2]["updatedAt"]) == (later, later)
    for sock in (cli, app):
        update = body_of(await sock.next("update"))
        assert (update["message"]["localId"], update["message"]["seq"]) == ("L3", 4)
        assert await sock.nothing("update", 0.2)
    retry = await cli.call("message", {"sid": sid, "message": "again", "localId": "L3"})
    assert retry == {"result": "success", "id": entries[2]["id"], "seq": 4, "localId": "L3"}
    assert await app.nothing("update", 0.2)
    # GET /v1/sessions/:id/messages sees the same rows
    v1 = (await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]
    assert [(m["seq"], m["localId"], m["content"]["c"]) for m in v1] == [
        (4, "L3", "c3"),
        (3, "S1", "s1"),
        (2, "L2", "c2"),
        (1, "L1", "c1"),
    ]
    assert [r["seq"] for r in await stored(both, sid)] == [1, 2, 3, 4]


async def test_post_errors_and_scoping(both: ServerHarness, http: httpx.AsyncClient) -> None:
    sid = await new_session(both)
    bobs = await new_session(both, "bob")
    app = await both.client("alice")
    url = f"/v3/sessions/{sid}/messages"
    ok = {"localId": "l", "content": "c"}
    bad_bodies: list[dict[str, Any]] = [
        {},
        {"messages": None},
        {"messages": "x"},
        {"messages": {}},
        {"messages": []},
        {"messages": [ok] * 101},
        {"messages": [5]},
        {"messages": [ok, None]},
        {"messages": [{"content": "c"}]},
        {"messages": [{"localId": "", "content": "c"}]},
        {"messages": [{"localId": 5, "content": "c"}]},
        {"messages": [{"localId": "l" * 257, "content": "c"}]},
        {"messages": [{"localId": "l\x00", "content": "c"}]},
        {"messages": [{"localId": "l"}]},
        {"messages": [{"localId": "l", "content": None}]},
        {"messages": [{"localId": "l", "content": 1}]},
        {"messages": [{"localId": "l", "content": "nul\x00"}]},
    ]
    for bad in bad_bodies:
        resp = await http.post(url, json=bad)
        assert is_invalid(resp), (bad, resp.text)
    assert is_invalid(await http.post(url, content=b"[1]"))
    assert is_invalid(await http.post(url, content=b"{nope"))
    for target in ("nope", bobs):
        resp = await http.post(f"/v3/sessions/{target}/messages", json=batch(("l", "c")))
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    resp = await anonymous(both, "POST", url, json=batch(("l", "c")))
    assert (resp.status_code, resp.json()) == (401, {"error": "Missing authorization header"})
    assert await stored(both, sid) == [] and await stored(both, bobs) == []
    assert await app.nothing("update", 0.2)
    # limits that pass: 100 items, a 256-character localId, empty content, unknown fields
    items = [{"localId": f"k{i}", "content": "", "extra": True} for i in range(99)]
    items.append({"localId": "l" * 256, "content": "c"})
    resp = await http.post(url, json={"messages": items, "more": 1})
    assert resp.status_code == 200 and len(resp.json()["messages"]) == 100
    assert [r["seq"] for r in await stored(both, sid)] == list(range(1, 101))
    assert (await stored(both, sid))[0]["content"] == ""


async def test_get_pages_forward_and_backward_exactly(
    both: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sid = await new_session(both)
    url = f"/v3/sessions/{sid}/messages"
    assert (await http.get(url)).json() == {"messages": [], "hasMore": False}
    now = clock.advance(10)
    for start, count in ((1, 100), (101, 100), (201, 50)):
        pairs = [(f"L{n}", f"c{n}") for n in range(start, start + count)]
        assert (await http.post(url, json=batch(*pairs))).status_code == 200
    forward: list[int] = []
    flags = []
    after = 0
    while True:
        page = (await http.get(url, params={"after_seq": after, "limit": 100})).json()
        forward += [m["seq"] for m in page["messages"]]
        flags.append(page["hasMore"])
        if not page["hasMore"]:
            break
        after = page["messages"][-1]["seq"]
    assert forward == list(range(1, 251)) and flags == [True, True, False]
    backward: list[int] = []
    flags = []
    before = 2147483647
    while True:
        page = (await http.get(url, params={"before_seq": before, "limit": 100})).json()
        backward += [m["seq"] for m in page["messages"]]
        flags.append(page["hasMore"])
        if not page["hasMore"]:
            break
        before = page["messages"][-1]["seq"]
    assert backward == list(range(250, 0, -1)) and flags == [True, True, False]
    # exact JSON of a row; no cursor = after_seq=0, ascending, default limit 100
    page = (await http.get(url)).json()
    assert page["hasMore"] is True and len(page["messages"]) == 100
    first = page["messages"][0]
    assert first == {
        "id": first["id"],
        "seq": 1,
        "content": {"t": "encrypted", "c": "c1"},
        "localId": "L1",
        "createdAt": now,
        "updatedAt": now,
    }
    cases: list[tuple[str, list[int], bool]] = [
        ("after_seq=250", [], False),
        ("after_seq=249", [250], False),
        ("after_seq=9999999999999", [], False),
        ("after_seq=", list(range(1, 101)), True),  # empty counts as 0
        ("after_seq=1e2&limit=2", [101, 102], True),
        ("before_seq=9007199254740991&limit=2", [250, 249], True),
        ("before_seq=1e300&limit=1", [250], True),
        ("before_seq=2&limit=5", [1], False),
        ("before_seq=1", [], False),
        ("limit=500", list(range(1, 251)), False),
        ("limit=250", list(range(1, 251)), False),
        ("limit=249", list(range(1, 250)), True),
        ("after_seq=0x10&limit=1", [17], True),
    ]
    for query, seqs, more in cases:
        got = (await http.get(f"{url}?{query}")).json()
        assert ([m["seq"] for m in got["messages"]], got["hasMore"]) == (seqs, more), query
    for query in (
        "limit=0",
        "limit=501",
        "limit=",
        "limit=1.5",
        "after_seq=-1",
        "after_seq=abc",
        "after_seq=1.5",
        "before_seq=0",
        "before_seq=",
        "before_seq=-5",
    ):
        assert is_invalid(await http.get(f"{url}?{query}")), query
    both_cursors = await http.get(f"{url}?after_seq=1&before_seq=5")
    assert (both_cursors.status_code, both_cursors.json()) == (
        400,
        {"error": "Cannot specify both after_seq and before_seq"},
    )
    bobs = await new_session(both, "bob")
    for target in ("nope", bobs):
        resp = await http.get(f"/v3/sessions/{target}/messages")
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    resp = await anonymous(both, "GET", url)
    assert resp.status_code == 401


async def test_racing_batches_store_each_local_id_once_without_gaps(
    both: ServerHarness, http: httpx.AsyncClient
) -> None:
    sid = await new_session(both)
    app = await both.client("alice")
    cli = await both.client("alice", client_type="session-scoped", session_id=sid)
    url = f"/v3/sessions/{sid}/messages"
    # 8 batches over 40 localIds, each overlapping its neighbours, and socket messages racing
    posts = [
        http.post(url, json=batch(*[(f"L{n}", f"from-{i}") for n in range(i * 4, i * 4 + 12)]))
        for i in range(8)
    ]
    socket_msgs = [
        cli.call("message", {"sid": sid, "message": "sock", "localId": f"L{n}"}, timeout=15)
        for n in range(0, 40, 5)
    ]
    replies = await asyncio.gather(*posts, *socket_msgs)
    answers = [r.json()["messages"] for r in replies[:8]]  # type: ignore[union-attr]
    assert all(r.status_code == 200 for r in replies[:8])  # type: ignore[union-attr]
    rows = await stored(both, sid)
    local_ids = sorted({f"L{n}" for n in range(40)})
    assert sorted(r["local_id"] for r in rows) == local_ids  # each once
    assert [r["seq"] for r in rows] == list(range(1, 41))  # gapless
    by_local = {r["local_id"]: (r["id"], int(r["seq"])) for r in rows}
    for answer in answers:
        assert [m["seq"] for m in answer] == sorted(m["seq"] for m in answer)
        for m in answer:
            assert (m["id"], m["seq"]) == by_local[m["localId"]]
    for ack in replies[8:]:
        assert (ack["id"], ack["seq"]) == by_local[ack["localId"]]  # type: ignore[index]
    session = await both.app.service("sessions").get("alice", sid)
    assert session["seq"] == 40
    # every message announced once to the app; the v3 ones of one process in seq order
    seen = [body_of(await app.next("update"))["message"] for _ in range(40)]
    assert sorted(m["seq"] for m in seen) == list(range(1, 41))
    assert await app.nothing("update", 0.3)


async def test_same_new_local_id_racing_gets_the_winners_row(
    both: ServerHarness, http: httpx.AsyncClient
) -> None:
    sid = await new_session(both)
    url = f"/v3/sessions/{sid}/messages"
    for round_ in range(5):
        replies = await asyncio.gather(
            *(http.post(url, json=batch((f"X{round_}", f"c{i}"))) for i in range(6))
        )
        assert {r.status_code for r in replies} == {200}
        assert len({str(r.json()) for r in replies}) == 1, [r.json() for r in replies]
    assert [r["seq"] for r in await stored(both, sid)] == [1, 2, 3, 4, 5]


async def test_two_apps_on_one_database_race_without_gaps(
    make_server: Any, db_url: str, clock: FakeClock
) -> None:
    servers = [await make_server(app=make_app(db_url, clock)) for _ in range(2)]
    sid = await new_session(servers[0])
    token = await servers[0].token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=servers[0].url, headers=headers, timeout=30) as one,
        httpx.AsyncClient(base_url=servers[1].url, headers=headers, timeout=30) as two,
    ):
        url = f"/v3/sessions/{sid}/messages"
        posts = [
            client.post(url, json=batch(*[(f"L{n}", "c") for n in range(i * 5, i * 5 + 15)]))
            for i in range(6)
            for client in (one, two)
        ]
        replies = await asyncio.gather(*posts)
    assert {r.status_code for r in replies} == {200}
    rows = await stored(servers[0], sid)
    assert [r["seq"] for r in rows] == list(range(1, 41))
    assert len({r["local_id"] for r in rows}) == 40
    by_local = {r["local_id"]: r["id"] for r in rows}
    for reply in replies:
        assert all(by_local[m["localId"]] == m["id"] for m in reply.json()["messages"])
    seq = await servers[0].app.db.fetch_val(sa.select(sessions.c.seq).where(sessions.c.id == sid))
    assert seq == 40


async def test_a_users_batches_wait_for_a_turn_then_get_too_busy(
    make_server: Any, sqlite_url: str, clock: FakeClock
) -> None:
    options = {"sessions": {"post_concurrency": 1, "post_wait": 0.3}}
    server = await make_server(app=make_app(sqlite_url, clock, plugin_options=options))
    sid = await new_session(server)
    headers = {"Authorization": f"Bearer {await server.token('alice')}"}
    slots = server.app.service("sessions").batches.slots
    url = f"/v3/sessions/{sid}/messages"
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        async with slots.take("alice"):
            busy = await http.post(url, json=batch(("a", "c")))
            assert (busy.status_code, busy.json()) == (429, {"error": "Too many requests"})
            assert busy.headers["retry-after"] == "1"
            # another user is not held up
            bob_sid = await new_session(server, "bob")
            bob = {"Authorization": f"Bearer {await server.token('bob')}"}
            resp = await http.post(
                f"/v3/sessions/{bob_sid}/messages", json=batch(("a", "c")), headers=bob
            )
            assert resp.status_code == 200
        # a short wait is absorbed
        async with slots.take("alice"):
            waiting = asyncio.create_task(http.post(url, json=batch(("b", "c"))))
            await asyncio.sleep(0.1)
        assert (await waiting).status_code == 200
    assert [r["local_id"] for r in await stored(server, sid)] == ["b"]
    # nothing is left behind per user or per session once the requests are done
    batches = server.app.service("sessions").batches
    assert batches.slots._slots == {} and batches._sessions._locks == {}
