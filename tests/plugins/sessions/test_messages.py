"""message (docs/events.md): gapless seq, idempotent localId, sender skipped, ordering."""

from __future__ import annotations

import asyncio

import httpx
import sqlalchemy as sa
from happy_socket_sessions.tables import session_messages

from happy_socket import Tx, Unit
from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import body_of


async def new_session(server: ServerHarness, user: str = "alice", tag: str = "t1") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    session, _ = await server.app.service("sessions").create_or_load(user, tag, "meta0")
    return str(session["id"])


async def test_message_flow_exact_json(both: ServerHarness) -> None:
    sid = await new_session(both)
    app = await both.client("alice")
    sender = await both.client("alice", client_type="session-scoped", session_id=sid)
    twin = await both.client("alice", client_type="session-scoped", session_id=sid)
    other = await both.client("alice", client_type="session-scoped", session_id="other")
    machine = await both.client("alice", client_type="machine-scoped", machine_id="m1")
    bob = await both.client("bob")

    ack = await sender.call("message", {"sid": sid, "message": "c1", "localId": "L1"})
    assert set(ack) == {"result", "id", "seq", "localId"}
    assert ack["result"] == "success" and ack["seq"] == 1 and ack["localId"] == "L1"
    for sock in (app, twin):
        update = await sock.next("update")
        body = body_of(update)
        msg = body["message"]
        assert body == {
            "t": "new-message",
            "sid": sid,
            "message": {
                "id": ack["id"],
                "seq": 1,
                "content": {"t": "encrypted", "c": "c1"},
                "localId": "L1",
                "createdAt": msg["createdAt"],
                "updatedAt": msg["createdAt"],
            },
        }
        assert isinstance(msg["createdAt"], int)
    quiet = await asyncio.gather(*(s.nothing("update", 0.2) for s in (sender, other, machine, bob)))
    assert all(quiet)

    # a retry with the same localId: the same answer, nothing stored or emitted
    again = await sender.call("message", {"sid": sid, "message": "c1-retry", "localId": "L1"})
    assert again == ack
    # without localId (and with a non-string one): localId null, next seq
    ack2 = await sender.call("message", {"sid": sid, "message": "c2"})
    assert ack2 == {"result": "success", "id": ack2["id"], "seq": 2, "localId": None}
    ack3 = await sender.call("message", {"sid": sid, "message": "c3", "localId": 5})
    assert ack3["seq"] == 3 and ack3["localId"] is None
    bodies = [body_of(await app.next("update")) for _ in range(2)]
    assert [b["message"]["seq"] for b in bodies] == [2, 3]
    assert await app.nothing("update", 0.2)

    # an app can send too; the session sockets receive it
    await app.emit("message", {"sid": sid, "message": "from-app"})
    assert body_of(await sender.next("update"))["message"]["content"]["c"] == "from-app"

    async with httpx.AsyncClient(base_url=both.url) as http:
        auth = {"Authorization": f"Bearer {await both.token('alice')}"}
        resp = await http.get(f"/v1/sessions/{sid}/messages", headers=auth)
        assert resp.status_code == 200
        messages = resp.json()["messages"]
        assert [m["seq"] for m in messages] == [4, 3, 2, 1]
        assert messages[3] == {
            "id": ack["id"],
            "seq": 1,
            "content": {"t": "encrypted", "c": "c1"},
            "localId": "L1",
            "createdAt": messages[3]["createdAt"],
            "updatedAt": messages[3]["createdAt"],
        }
        resp = await http.get("/v1/sessions/nope/messages", headers=auth)
        assert (resp.status_code, resp.json()) == (404, {"error": "Session not found"})
        bob_auth = {"Authorization": f"Bearer {await both.token('bob')}"}
        resp = await http.get(f"/v1/sessions/{sid}/messages", headers=bob_auth)
        assert (resp.status_code, resp.json()) == (404, {"error": "Session not found"})
        resp = await http.get(f"/v1/sessions/{sid}/messages")
        assert resp.status_code == 401


async def test_message_errors_are_answered(srv: ServerHarness) -> None:
    sid = await new_session(srv)
    bobs = await new_session(srv, user="bob")
    app = await srv.client("alice")
    invalid = {"result": "error", "message": "Invalid parameters"}
    for payload in (
        None,
        [],
        "x",
        {},
        {"sid": sid},
        {"sid": sid, "message": None},
        {"sid": sid, "message": 5},
        {"sid": 5, "message": "x"},
        {"sid": "", "message": "x"},
        {"sid": sid, "message": "x", "localId": "L" * 1000},
    ):
        assert await app.call("message", payload) == invalid, payload
    assert await app.call("message") == invalid
    missing = {"result": "error", "message": "Session not found"}
    assert await app.call("message", {"sid": bobs, "message": "x"}) == missing
    assert await app.call("message", {"sid": "nope", "message": "x"}) == missing
    # without an ack nothing is stored either
    await app.emit("message", {"sid": bobs, "message": "x"})
    assert await srv.app.service("sessions").messages("bob", bobs) == []
    assert (await srv.app.service("sessions").get("bob", bobs))["seq"] == 0


async def test_racing_duplicate_local_ids_store_once_and_broadcast_once(
    both: ServerHarness,
) -> None:
    sid = await new_session(both)
    app = await both.client("alice")
    senders = [
        await both.client("alice", client_type="session-scoped", session_id=sid) for _ in range(8)
    ]
    acks = await asyncio.gather(
        *(s.call("message", {"sid": sid, "message": "m", "localId": "dup"}) for s in senders)
    )
    assert len({a["id"] for a in acks}) == 1
    assert {a["seq"] for a in acks} == {1}
    assert body_of(await app.next("update"))["message"]["localId"] == "dup"
    assert await app.nothing("update", 0.3)
    count = await both.app.db.fetch_val(sa.select(sa.func.count()).select_from(session_messages))
    assert count == 1
    # the seq has no hole: the next message is 2
    ack = await senders[0].call("message", {"sid": sid, "message": "n"})
    assert ack["seq"] == 2
    # concurrent distinct messages (with some duplicate localIds): seqs 3..20 without holes
    acks = await asyncio.gather(
        *(
            s.call("message", {"sid": sid, "message": f"{i}-{j}", "localId": f"{i}-{j % 3}"})
            for i, s in enumerate(senders[:6])
            for j in range(6)
        )
    )
    assert sorted({a["seq"] for a in acks}) == list(range(3, 21))


async def test_thousand_messages_from_one_socket_arrive_in_order(srv: ServerHarness) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    sender = await srv.client("alice", client_type="session-scoped", session_id=sid)
    for i in range(1000):
        await sender.emit("message", {"sid": sid, "message": f"m{i}"})
    seqs, contents = [], []
    for _ in range(1000):
        msg = body_of(await app.next("update", timeout=20))["message"]
        seqs.append(msg["seq"])
        contents.append(msg["content"]["c"])
    assert seqs == list(range(1, 1001))
    assert contents == [f"m{i}" for i in range(1000)]
    stored = await srv.app.service("sessions").messages("alice", sid, limit=2000)
    assert [m["seq"] for m in stored] == list(range(1000, 0, -1))
    updates = [u["seq"] for u in app.events["update"]]
    assert updates == sorted(updates) and len(set(updates)) == 1000


async def test_a_duplicate_on_sqlite_reruns_nothing_else_of_its_group_commit(
    srv: ServerHarness,
) -> None:
    """A duplicate localId is answered without an exception: the other units of the writer's
    batch run once (an exception would roll the batch back and run it all again)."""
    sid = await new_session(srv)
    svc = srv.app.service("sessions")
    first = await svc.add_message("alice", sid, "c1", "L1")
    db = srv.app.db
    gate = asyncio.Event()
    runs = [0, 0]

    async def hold(tx: Tx) -> None:  # keeps the writer busy while the next batch queues
        await gate.wait()

    def counted(index: int) -> Unit[None]:
        async def unit(tx: Tx) -> None:
            runs[index] += 1
            await tx.execute(sa.select(1))

        return unit

    held = db.submit(hold)
    await asyncio.sleep(0.05)  # the writer is inside ``hold``: what follows is one batch
    before = db.submit(counted(0))
    duplicate = asyncio.ensure_future(svc.add_message("alice", sid, "x", "L1", write=db.submit))
    fresh = asyncio.ensure_future(svc.add_message("alice", sid, "c2", "L2", write=db.submit))
    await asyncio.sleep(0)  # both messages queue their units
    after = db.submit(counted(1))
    gate.set()
    await asyncio.gather(held, before, after)
    again, second = await duplicate, await fresh
    assert db.batch_sizes[-1] == 4
    assert runs == [1, 1]
    assert again is not None and not again.created and again.seq is None
    assert first is not None and again.message == first.message
    assert second is not None and second.created and second.message["seq"] == 2
    assert (await svc.get("alice", sid))["seq"] == 2  # no hole, no extra step
    # a localId of someone else's session is "not the user's", not a duplicate
    assert await svc.add_message("bob", sid, "x", "L1") is None


async def test_a_local_id_is_unique_per_session_not_per_user(both: ServerHarness) -> None:
    """The same localIds in a second session of the same user are new messages there."""
    first = await new_session(both, tag="first")
    second = await new_session(both, tag="second")
    app = await both.client("alice")
    for sid in (first, second):
        sender = await both.client("alice", client_type="session-scoped", session_id=sid)
        for i in range(3):
            await sender.emit("message", {"sid": sid, "message": f"{sid}-{i}", "localId": f"f{i}"})
        ack = await sender.call("message", {"sid": sid, "message": "last", "localId": "f3"})
        assert ack["seq"] == 4
    got = [body_of(await app.next("update"))["message"] for _ in range(8)]
    assert [(m["localId"], m["seq"]) for m in got] == [(f"f{i}", i + 1) for i in range(4)] * 2
    for sid in (first, second):
        stored = await both.app.service("sessions").messages("alice", sid)
        assert sorted(m["localId"] for m in stored) == ["f0", "f1", "f2", "f3"]
