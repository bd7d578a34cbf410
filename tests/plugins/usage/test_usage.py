"""usage-report (docs/events.md): validation strings, upsert by (user, session-or-none, key),
the usage ephemeral, per-socket order, and no duplicate session-less rows under concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from happy_socket.testing import ServerHarness

from ..access_keys.support import new_session


def err(message: str) -> dict[str, Any]:
    return {"success": False, "error": message}


def report(key: str = "k1", **extra: Any) -> dict[str, Any]:
    return {"key": key, "tokens": {"total": 10, "input": 7}, "cost": {"total": 0.5}, **extra}


async def rows(server: ServerHarness) -> list[dict[str, Any]]:
    (table,) = [t for t in server.app.tables["usage"] if t.name == "usage_reports"]
    return await server.app.db.fetch_all(sa.select(table).order_by(table.c.key))


@pytest.fixture
async def server(make_server: Any) -> ServerHarness:
    return await make_server()  # type: ignore[no-any-return]


async def test_report_without_session_exact_ack_and_upsert(server: ServerHarness) -> None:
    alice = await server.client("alice")
    ack = await alice.call("usage-report", report())
    assert ack == {
        "success": True,
        "reportId": ack["reportId"],
        "createdAt": ack["createdAt"],
        "updatedAt": ack["createdAt"],
    }
    assert isinstance(ack["reportId"], str) and ack["reportId"]
    again = await alice.call(
        "usage-report", {"key": "k1", "tokens": {"total": 99}, "cost": {"total": 2}}
    )
    assert again["success"] is True
    assert (again["reportId"], again["createdAt"]) == (ack["reportId"], ack["createdAt"])
    assert again["updatedAt"] >= ack["updatedAt"]
    # "" / null / 0 / false sessionId mean "no session" (as in the reference): same row
    for none in ("", None, 0, False):
        same = await alice.call("usage-report", report(sessionId=none))
        assert same["reportId"] == ack["reportId"]
    stored = await rows(server)
    assert len(stored) == 1
    assert stored[0]["session_id"] == "" and stored[0]["account_id"] == "alice"
    assert await alice.nothing("ephemeral", within=0.1)


async def test_report_with_session_emits_usage_to_user_scoped_only(server: ServerHarness) -> None:
    sid = await new_session(server.app, "alice")
    app = await server.client("alice")
    session = await server.client("alice", client_type="session-scoped", session_id=sid)
    bob = await server.client("bob")
    payload = report(sessionId=sid)
    ack = await session.call("usage-report", payload)
    assert ack["success"] is True
    usage = await app.next("ephemeral")
    assert usage == {
        "type": "usage",
        "id": sid,
        "key": "k1",
        "tokens": {"total": 10, "input": 7},
        "cost": {"total": 0.5},
        "timestamp": usage["timestamp"],
    }
    assert isinstance(usage["timestamp"], int) and usage["timestamp"] > 1_600_000_000_000
    assert await session.nothing("ephemeral", within=0.1)
    assert await bob.nothing("ephemeral", within=0.1)
    # the same key without a session is a different report; with the session it is the same
    other = await app.call("usage-report", report())
    assert other["reportId"] != ack["reportId"]
    same = await app.call("usage-report", report(sessionId=sid))
    assert same["reportId"] == ack["reportId"]
    assert len(await rows(server)) == 2


async def test_validation_strings(server: ServerHarness) -> None:
    alice = await server.client("alice")
    bob_sid = await new_session(server.app, "bob")
    cases: list[tuple[Any, dict[str, Any]]] = [
        (None, err("Invalid key")),
        ([], err("Invalid key")),
        ("k", err("Invalid key")),
        ({}, err("Invalid key")),
        ({"key": ""}, err("Invalid key")),
        ({"key": 5, "tokens": {"total": 1}, "cost": {"total": 1}}, err("Invalid key")),
        ({"key": "k" * 10_000, "tokens": {"total": 1}, "cost": {"total": 1}}, err("Invalid key")),
        ({"key": "k"}, err("Invalid tokens object - must include total")),
        ({"key": "k", "tokens": 5}, err("Invalid tokens object - must include total")),
        ({"key": "k", "tokens": [1]}, err("Invalid tokens object - must include total")),
        ({"key": "k", "tokens": {"input": 1}}, err("Invalid tokens object - must include total")),
        ({"key": "k", "tokens": {"total": "1"}}, err("Invalid tokens object - must include total")),
        (
            {"key": "k", "tokens": {"total": True}},
            err("Invalid tokens object - must include total"),
        ),
        (
            {"key": "k", "tokens": {"total": None}},
            err("Invalid tokens object - must include total"),
        ),
        ({"key": "k", "tokens": {"total": 1}}, err("Invalid cost object - must include total")),
        (
            {"key": "k", "tokens": {"total": 1}, "cost": {}},
            err("Invalid cost object - must include total"),
        ),
        (
            {"key": "k", "tokens": {"total": 1}, "cost": {"total": [1]}},
            err("Invalid cost object - must include total"),
        ),
        (report(sessionId=5), err("Invalid sessionId")),
        (report(sessionId=["s"]), err("Invalid sessionId")),
        (report(sessionId={"id": "s"}), err("Invalid sessionId")),
        (report(sessionId=True), err("Invalid sessionId")),
        (report(sessionId="nope"), err("Session not found")),
        (report(sessionId=bob_sid), err("Session not found")),
        (report(sessionId="s" * 10_000), err("Session not found")),
    ]
    for payload, reply in cases:
        assert await alice.call("usage-report", payload) == reply, payload
    assert await alice.call("usage-report") == err("Invalid key")
    assert await rows(server) == []


async def test_reports_of_one_socket_are_processed_in_order(
    server: ServerHarness, monkeypatch: Any
) -> None:
    service = server.app.service("usage")
    real_save = service.save
    order: list[int] = []

    async def slow_save(user_id: str, session_id: Any, key: str, tokens: Any, cost: Any) -> Any:
        # later reports are faster: without per-socket ordering they would overtake
        await asyncio.sleep((40 - tokens["total"]) / 2000)
        order.append(tokens["total"])
        return await real_save(user_id, session_id, key, tokens, cost)

    monkeypatch.setattr(service, "save", slow_save)
    alice = await server.client("alice")
    acks = await asyncio.gather(
        *(
            alice.call("usage-report", {"key": "k", "tokens": {"total": i}, "cost": {"total": i}})
            for i in range(40)
        )
    )
    assert all(a["success"] for a in acks)
    assert order == list(range(40))
    (row,) = await rows(server)
    assert '"total":39' in row["data"]


async def test_store_failure_is_reported(server: ServerHarness, monkeypatch: Any) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(server.app.service("usage"), "save", broken)
    alice = await server.client("alice")
    assert await alice.call("usage-report", report()) == err("Failed to save usage report")


async def test_deleting_the_session_deletes_its_reports(server: ServerHarness) -> None:
    sid = await new_session(server.app, "alice")
    alice = await server.client("alice")
    await alice.call("usage-report", report(sessionId=sid))
    await alice.call("usage-report", report())
    assert len(await rows(server)) == 2
    assert await server.app.service("sessions").delete("alice", sid)
    remaining = await rows(server)
    assert [r["session_id"] for r in remaining] == [""]


async def test_twenty_concurrent_sessionless_reports_make_one_row(
    make_server: Any, db_url: str
) -> None:
    server: ServerHarness = await make_server(db=db_url)
    sid = await new_session(server.app, "alice")
    sockets = [await server.client("alice") for _ in range(20)]
    for extra in ({}, {"sessionId": sid}):
        acks = await asyncio.gather(
            *(
                s.call(
                    "usage-report",
                    {"key": "same", "tokens": {"total": i}, "cost": {"total": i}, **extra},
                    timeout=15,
                )
                for i, s in enumerate(sockets)
            )
        )
        assert all(a["success"] is True for a in acks), acks
        assert len({a["reportId"] for a in acks}) == 1
    stored = await rows(server)
    assert sorted(r["session_id"] for r in stored) == ["", sid]
    # and the database itself refuses a second session-less row with the same key
    (table,) = [t for t in server.app.tables["usage"] if t.name == "usage_reports"]
    dup = table.insert().values(
        id="dup",
        account_id="alice",
        session_id="",
        key="same",
        data="{}",
        created_at=1,
        updated_at=1,
    )
    with pytest.raises(Exception, match=r"(?i)unique"):
        await server.app.db.execute(dup)
    assert len(await rows(server)) == 2
