"""Artifact compare-and-set under contention: 8 concurrent writers per round, SQLite and PostgreSQL.

Each round sends 8 updates with the same expected version(s) from 8 sockets at once:
exactly one wins, the other 7 get version-mismatch with the winner's (fresh) values,
the artifact seq rises by exactly one and exactly one update-artifact is emitted.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from happy_socket.testing import ServerHarness, TestSocket

WRITERS = 8


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def part(tag: str, i: int, expected: int) -> dict[str, Any]:
    return {"data": b64(f"{tag}-{i}".encode()), "expectedVersion": expected}


async def race(writers: list[TestSocket], payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    acks = await asyncio.gather(
        *(w.call("artifact-update", p, timeout=15) for w, p in zip(writers, payloads, strict=True))
    )
    return list(acks)


def winner_of(acks: list[dict[str, Any]]) -> int:
    winners = [i for i, ack in enumerate(acks) if ack["result"] == "success"]
    assert len(winners) == 1, acks
    return winners[0]


async def test_eight_writers_header_body_both(make_server: Any, db_url: str) -> None:
    server: ServerHarness = await make_server(db=db_url)
    watcher = await server.client("alice")
    writers = [
        await server.client("alice", client_type="session-scoped", session_id=f"S{i}")
        for i in range(WRITERS)
    ]
    created = await writers[0].call(
        "artifact-create",
        {"id": "race", "header": b64(b"h"), "body": b64(b"b"), "dataEncryptionKey": b64(b"k")},
    )
    assert created["result"] == "success"
    first = await watcher.next("update")
    seqs = [first["seq"]]

    def ids(acks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"artifactId": "race", **a} for a in acks]

    # round 1: header only
    acks = await race(writers, ids([{"header": part("h", i, 1)} for i in range(WRITERS)]))
    w = winner_of(acks)
    won = part("h", w, 1)["data"]
    assert acks[w] == {"result": "success", "header": {"version": 2, "data": won}}
    for i, ack in enumerate(acks):
        if i != w:
            assert ack == {
                "result": "version-mismatch",
                "header": {"currentVersion": 2, "currentData": won},
            }
    update = await watcher.next("update")
    assert update["body"] == {
        "t": "update-artifact",
        "artifactId": "race",
        "header": {"value": won, "version": 2},
    }
    seqs.append(update["seq"])

    # round 2: body only
    acks = await race(writers, ids([{"body": part("b", i, 1)} for i in range(WRITERS)]))
    w = winner_of(acks)
    won_body = part("b", w, 1)["data"]
    assert acks[w] == {"result": "success", "body": {"version": 2, "data": won_body}}
    assert all(
        a == {"result": "version-mismatch", "body": {"currentVersion": 2, "currentData": won_body}}
        for i, a in enumerate(acks)
        if i != w
    )
    update = await watcher.next("update")
    assert update["body"]["body"] == {"value": won_body, "version": 2}
    seqs.append(update["seq"])

    # round 3: both parts
    acks = await race(
        writers,
        ids([{"header": part("H", i, 2), "body": part("B", i, 2)} for i in range(WRITERS)]),
    )
    w = winner_of(acks)
    wh, wb = part("H", w, 2)["data"], part("B", w, 2)["data"]
    assert acks[w] == {
        "result": "success",
        "header": {"version": 3, "data": wh},
        "body": {"version": 3, "data": wb},
    }
    for i, ack in enumerate(acks):
        if i != w:
            assert ack == {
                "result": "version-mismatch",
                "header": {"currentVersion": 3, "currentData": wh},
                "body": {"currentVersion": 3, "currentData": wb},
            }
    update = await watcher.next("update")
    assert update["body"] == {
        "t": "update-artifact",
        "artifactId": "race",
        "header": {"value": wh, "version": 3},
        "body": {"value": wb, "version": 3},
    }
    seqs.append(update["seq"])

    # round 4: header-only writers against both-part writers, same expected versions:
    # whoever wins, every other one must lose (the header check is shared)
    payloads = [
        {"header": part("x", i, 3)}
        if i % 2
        else {"header": part("x", i, 3), "body": part("y", i, 3)}
        for i in range(WRITERS)
    ]
    acks = await race(writers, ids(payloads))
    w = winner_of(acks)
    assert all(a["result"] == "version-mismatch" for i, a in enumerate(acks) if i != w)
    update = await watcher.next("update")
    seqs.append(update["seq"])

    # exactly one update per winner, user seqs strictly consecutive, nothing else emitted
    assert await watcher.nothing("update", within=0.3)
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    final = (await watcher.call("artifact-read", {"artifactId": "race"}))["artifact"]
    assert final["seq"] == 4
    assert final["headerVersion"] == 4
    assert final["header"] == part("x", w, 3)["data"]
    assert final["bodyVersion"] == (4 if w % 2 == 0 else 3)
    assert final["body"] == (part("y", w, 3)["data"] if w % 2 == 0 else wb)


async def test_concurrent_creates_of_one_id(make_server: Any, db_url: str) -> None:
    server: ServerHarness = await make_server(db=db_url)
    watcher = await server.client("alice")
    alices = [await server.client("alice") for _ in range(4)]
    bobs = [await server.client("bob") for _ in range(4)]
    payload = {
        "id": "contested",
        "header": b64(b"h"),
        "body": b64(b"b"),
        "dataEncryptionKey": b64(b"k"),
    }
    acks = await asyncio.gather(
        *(s.call("artifact-create", payload, timeout=15) for s in alices + bobs)
    )
    # who owns the id according to each ack: all eight must agree
    seen = {"alice" if a["result"] == "success" else "bob" for a in acks[:4]}
    seen |= {"bob" if a["result"] == "success" else "alice" for a in acks[4:]}
    assert seen in ({"alice"}, {"bob"}), acks
    owners = seen
    winners = [a for a in acks if a["result"] == "success"]
    assert all(a == winners[0] for a in winners) and len(winners) == 4
    refused = [a for a in acks if a["result"] != "success"]
    assert (
        refused
        == [
            {
                "result": "error",
                "message": "Artifact with this ID already exists for another account",
            }
        ]
        * 4
    )
    if owners == {"alice"}:
        assert (await watcher.next("update"))["body"]["t"] == "new-artifact"
    assert await watcher.nothing("update", within=0.3)
