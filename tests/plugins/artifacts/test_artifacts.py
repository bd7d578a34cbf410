"""artifact-read / -create / -update / -delete (docs/events.md): exact acks and updates."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from happy_socket.testing import ServerHarness, TestSocket


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


H, B, K = b64(b"header-1"), b64(b"body-1"), b64(b"\x00\x01key\xff")


def create_payload(artifact_id: str = "art-1") -> dict[str, Any]:
    return {"id": artifact_id, "header": H, "body": B, "dataEncryptionKey": K}


async def create(sock: TestSocket, artifact_id: str = "art-1") -> dict[str, Any]:
    ack = await sock.call("artifact-create", create_payload(artifact_id))
    assert ack["result"] == "success", ack
    return dict(ack["artifact"])


@pytest.fixture
async def app_server(make_server: Any, db_url: str) -> ServerHarness:
    return await make_server(db=db_url)  # type: ignore[no-any-return]


async def test_lifecycle_exact_json(app_server: ServerHarness) -> None:
    alice = await app_server.client("alice")
    ack = await alice.call("artifact-create", create_payload())
    art = ack["artifact"]
    assert ack == {
        "result": "success",
        "artifact": {
            "id": "art-1",
            "header": H,
            "headerVersion": 1,
            "body": B,
            "bodyVersion": 1,
            "seq": 0,
            "createdAt": art["createdAt"],
            "updatedAt": art["createdAt"],
        },
    }
    assert isinstance(art["createdAt"], int) and art["createdAt"] > 1_600_000_000_000
    update = await alice.next("update")
    assert update == {
        "id": update["id"],
        "seq": update["seq"],
        "createdAt": update["createdAt"],
        "body": {
            "t": "new-artifact",
            "artifactId": "art-1",
            "seq": 0,
            "header": H,
            "headerVersion": 1,
            "body": B,
            "bodyVersion": 1,
            "dataEncryptionKey": K,
            "createdAt": art["createdAt"],
            "updatedAt": art["createdAt"],
        },
    }
    assert len(update["id"]) == 12
    first_seq = update["seq"]

    assert await alice.call("artifact-read", {"artifactId": "art-1"}) == ack

    h2 = b64(b"header-2")
    ack = await alice.call(
        "artifact-update", {"artifactId": "art-1", "header": {"data": h2, "expectedVersion": 1}}
    )
    assert ack == {"result": "success", "header": {"version": 2, "data": h2}}
    update = await alice.next("update")
    assert update["seq"] == first_seq + 1
    assert update["body"] == {
        "t": "update-artifact",
        "artifactId": "art-1",
        "header": {"value": h2, "version": 2},
    }

    b2 = b64(b"body-2")
    ack = await alice.call(
        "artifact-update", {"artifactId": "art-1", "body": {"data": b2, "expectedVersion": 1}}
    )
    assert ack == {"result": "success", "body": {"version": 2, "data": b2}}
    update = await alice.next("update")
    assert update["body"] == {
        "t": "update-artifact",
        "artifactId": "art-1",
        "body": {"value": b2, "version": 2},
    }

    h3, b3 = b64(b"header-3"), b64(b"")
    ack = await alice.call(
        "artifact-update",
        {
            "artifactId": "art-1",
            "header": {"data": h3, "expectedVersion": 2},
            "body": {"data": b3, "expectedVersion": 2},
        },
    )
    assert ack == {
        "result": "success",
        "header": {"version": 3, "data": h3},
        "body": {"version": 3, "data": b3},
    }
    update = await alice.next("update")
    assert update["seq"] == first_seq + 3
    assert update["body"] == {
        "t": "update-artifact",
        "artifactId": "art-1",
        "header": {"value": h3, "version": 3},
        "body": {"value": b3, "version": 3},
    }

    read = await alice.call("artifact-read", {"artifactId": "art-1"})
    assert read["artifact"]["headerVersion"] == 3
    assert read["artifact"]["bodyVersion"] == 3
    assert read["artifact"]["seq"] == 3
    assert read["artifact"]["header"] == h3 and read["artifact"]["body"] == b3
    assert read["artifact"]["updatedAt"] >= read["artifact"]["createdAt"]

    assert await alice.call("artifact-delete", {"artifactId": "art-1"}) == {"result": "success"}
    update = await alice.next("update")
    assert update["seq"] == first_seq + 4
    assert update["body"] == {"t": "delete-artifact", "artifactId": "art-1"}
    assert await alice.call("artifact-read", {"artifactId": "art-1"}) == {
        "result": "error",
        "message": "Artifact not found",
    }
    assert await alice.call("artifact-delete", {"artifactId": "art-1"}) == {
        "result": "error",
        "message": "Artifact not found",
    }


async def test_create_is_idempotent_for_the_same_user(app_server: ServerHarness) -> None:
    alice = await app_server.client("alice")
    first = await alice.call("artifact-create", create_payload())
    await alice.next("update")
    again = await alice.call(
        "artifact-create",
        {"id": "art-1", "header": b64(b"x"), "body": b64(b"y"), "dataEncryptionKey": b64(b"z")},
    )
    assert again == first
    assert await alice.nothing("update")


async def test_create_refused_when_another_user_owns_the_id(app_server: ServerHarness) -> None:
    alice = await app_server.client("alice")
    bob = await app_server.client("bob")
    await create(alice)
    assert await bob.call("artifact-create", create_payload()) == {
        "result": "error",
        "message": "Artifact with this ID already exists for another account",
    }
    assert await bob.nothing("update", within=0.1)
    # and bob cannot see, change or delete it
    for event, payload in [
        ("artifact-read", {"artifactId": "art-1"}),
        ("artifact-update", {"artifactId": "art-1", "header": {"data": H, "expectedVersion": 1}}),
        ("artifact-delete", {"artifactId": "art-1"}),
    ]:
        assert await bob.call(event, payload) == {
            "result": "error",
            "message": "Artifact not found",
        }
    read = await alice.call("artifact-read", {"artifactId": "art-1"})
    assert read["artifact"]["headerVersion"] == 1 and read["artifact"]["seq"] == 0


async def test_version_mismatch_names_only_the_stale_parts(
    app_server: ServerHarness,
) -> None:
    alice = await app_server.client("alice")
    await create(alice)
    ack = await alice.call(
        "artifact-update", {"artifactId": "art-1", "header": {"data": H, "expectedVersion": 5}}
    )
    assert ack == {"result": "version-mismatch", "header": {"currentVersion": 1, "currentData": H}}
    # body matches but header does not: nothing is written, only the stale header is named
    ack = await alice.call(
        "artifact-update",
        {
            "artifactId": "art-1",
            "header": {"data": b64(b"new"), "expectedVersion": 0},
            "body": {"data": b64(b"new"), "expectedVersion": 1},
        },
    )
    assert ack == {"result": "version-mismatch", "header": {"currentVersion": 1, "currentData": H}}
    ack = await alice.call(
        "artifact-update", {"artifactId": "art-1", "body": {"data": B, "expectedVersion": 1.5}}
    )
    assert ack == {"result": "version-mismatch", "body": {"currentVersion": 1, "currentData": B}}
    ack = await alice.call(
        "artifact-update", {"artifactId": "art-1", "body": {"data": B, "expectedVersion": 2**70}}
    )
    assert ack == {"result": "version-mismatch", "body": {"currentVersion": 1, "currentData": B}}
    read = await alice.call("artifact-read", {"artifactId": "art-1"})
    assert read["artifact"]["seq"] == 0 and read["artifact"]["body"] == B
    await alice.next("update")  # new-artifact
    assert await alice.nothing("update", within=0.1)


async def test_updates_go_to_user_scoped_sockets_only(server: ServerHarness) -> None:
    app = await server.client("alice")
    other_app = await server.client("alice")
    session = await server.client("alice", client_type="session-scoped", session_id="S1")
    machine = await server.client("alice", client_type="machine-scoped", machine_id="M1")
    bob = await server.client("bob")
    await create(session)
    assert (await app.next("update"))["body"]["t"] == "new-artifact"
    assert (await other_app.next("update"))["body"]["t"] == "new-artifact"
    await session.call(
        "artifact-update", {"artifactId": "art-1", "header": {"data": H, "expectedVersion": 1}}
    )
    await session.call("artifact-delete", {"artifactId": "art-1"})
    assert [(await app.next("update"))["body"]["t"] for _ in range(2)] == [
        "update-artifact",
        "delete-artifact",
    ]
    for sock in (session, machine, bob):
        assert await sock.nothing("update", within=0.1)


def _err(message: str) -> dict[str, Any]:
    return {"result": "error", "message": message}


BAD_INPUTS: list[tuple[str, Any, dict[str, Any]]] = [
    ("artifact-read", None, _err("Invalid parameters")),
    ("artifact-read", [], _err("Invalid parameters")),
    ("artifact-read", "art-1", _err("Invalid parameters")),
    ("artifact-read", {}, _err("Invalid parameters")),
    ("artifact-read", {"artifactId": ""}, _err("Invalid parameters")),
    ("artifact-read", {"artifactId": 7}, _err("Invalid parameters")),
    ("artifact-read", {"artifactId": "x" * 100_000}, _err("Invalid parameters")),
    ("artifact-read", {"artifactId": "nope"}, _err("Artifact not found")),
    ("artifact-delete", None, _err("Invalid parameters")),
    ("artifact-delete", {"artifactId": ["a"]}, _err("Invalid parameters")),
    ("artifact-delete", {"artifactId": "nope"}, _err("Artifact not found")),
    ("artifact-create", None, _err("Invalid parameters")),
    ("artifact-create", 5, _err("Invalid parameters")),
    (
        "artifact-create",
        {"header": H, "body": B, "dataEncryptionKey": K},
        _err("Invalid parameters"),
    ),
    (
        "artifact-create",
        {"id": "a", "body": B, "dataEncryptionKey": K},
        _err("Invalid parameters"),
    ),
    (
        "artifact-create",
        {"id": "a", "header": H, "body": None, "dataEncryptionKey": K},
        _err("Invalid parameters"),
    ),
    (
        "artifact-create",
        {"id": "a", "header": H, "body": B, "dataEncryptionKey": 3},
        _err("Invalid parameters"),
    ),
    (
        "artifact-create",
        {"id": "a", "header": "not base64!", "body": B, "dataEncryptionKey": K},
        _err("Invalid parameters"),
    ),
    (
        "artifact-create",
        {"id": "a", "header": H, "body": "QQ", "dataEncryptionKey": K},
        _err("Invalid parameters"),
    ),
    (
        "artifact-create",
        {"id": "a", "header": H, "body": B, "dataEncryptionKey": "Q Q=="},
        _err("Invalid parameters"),
    ),
    ("artifact-update", None, _err("Invalid parameters")),
    (
        "artifact-update",
        {"header": {"data": H, "expectedVersion": 1}},
        _err("Invalid parameters"),
    ),
    ("artifact-update", {"artifactId": "art-1"}, _err("No updates provided")),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": None, "body": None},
        _err("No updates provided"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": 0, "body": ""},
        _err("No updates provided"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": 5},
        _err("Invalid header parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": []},
        _err("Invalid header parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": {"data": H}},
        _err("Invalid header parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": {"data": 1, "expectedVersion": 1}},
        _err("Invalid header parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": {"data": H, "expectedVersion": "1"}},
        _err("Invalid header parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": {"data": H, "expectedVersion": True}},
        _err("Invalid header parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "body": {"data": B}},
        _err("Invalid body parameters"),
    ),
    ("artifact-update", {"artifactId": "art-1", "body": "x"}, _err("Invalid body parameters")),
    (
        "artifact-update",
        {
            "artifactId": "art-1",
            "header": {"data": H, "expectedVersion": 1},
            "body": {"expectedVersion": 1},
        },
        _err("Invalid body parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "art-1", "header": {"data": "**", "expectedVersion": 1}},
        _err("Invalid parameters"),
    ),
    (
        "artifact-update",
        {"artifactId": "nope", "header": {"data": H, "expectedVersion": 1}},
        _err("Artifact not found"),
    ),
    (
        "artifact-update",
        {"artifactId": "nope", "body": {"data": B, "expectedVersion": 1.5}},
        _err("Artifact not found"),
    ),
]


async def test_bad_input_gets_the_documented_error(server: ServerHarness) -> None:
    alice = await server.client("alice")
    await create(alice)
    for event, payload, reply in BAD_INPUTS:
        assert await alice.call(event, payload) == reply, (event, payload)
    read = await alice.call("artifact-read", {"artifactId": "art-1"})
    assert read["artifact"]["seq"] == 0 and read["artifact"]["header"] == H
    await alice.next("update")  # new-artifact; the bad inputs emitted nothing
    assert await alice.nothing("update", within=0.1)


async def test_event_without_data_is_answered(server: ServerHarness) -> None:
    alice = await server.client("alice")
    for event in ("artifact-read", "artifact-create", "artifact-update", "artifact-delete"):
        assert await alice.call(event) == _err("Invalid parameters")


async def test_large_binary_roundtrip(server: ServerHarness) -> None:
    alice = await server.client("alice")
    blob = bytes(range(256)) * 2000
    ack = await alice.call(
        "artifact-create",
        {"id": "big", "header": b64(blob[:1000]), "body": b64(blob), "dataEncryptionKey": K},
    )
    assert ack["result"] == "success"
    read = await alice.call("artifact-read", {"artifactId": "big"})
    assert base64.b64decode(read["artifact"]["body"]) == blob
