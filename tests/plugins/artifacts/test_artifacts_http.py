"""/v1/artifacts HTTP routes: exact JSON, errors, scoping, emits, and the rows the socket
events share, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from happy_socket_artifacts import ArtifactsService

from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import FakeClock, body_of, make_app


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


H, B, K = b64(b"header-1"), b64(b"body-1"), b64(b"\x00\x01key\xff")
A1 = "0a1b2c3d-0000-4000-8000-00000000a001"
A2 = "0a1b2c3d-0000-4000-8000-00000000a002"


def invalid(message: str) -> dict[str, Any]:
    return {"error": "Error", "message": message, "statusCode": 400}


NOT_FOUND = {"error": "Artifact not found"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def srv(make_server: Any, db_url: str, clock: FakeClock) -> ServerHarness:
    return await make_server(app=make_app(db_url, clock))  # type: ignore[no-any-return]


@pytest.fixture
async def http(srv: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    """Alice's HTTP client."""
    headers = {"Authorization": f"Bearer {await srv.token('alice')}"}
    async with httpx.AsyncClient(base_url=srv.url, headers=headers) as client:
        yield client


async def client_of(srv: ServerHarness, user: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {await srv.token(user)}"}
    return httpx.AsyncClient(base_url=srv.url, headers=headers)


def artifact(now: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": A1,
        "header": H,
        "headerVersion": 1,
        "body": B,
        "bodyVersion": 1,
        "dataEncryptionKey": K,
        "seq": 0,
        "createdAt": now,
        "updatedAt": now,
        **changes,
    }


CREATE = {"id": A1, "header": H, "body": B, "dataEncryptionKey": K}


async def test_lifecycle_exact_json_and_updates(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    app = await srv.client("alice")
    created_at = clock.now
    resp = await http.post("/v1/artifacts", json=CREATE)
    assert (resp.status_code, resp.json()) == (200, artifact(created_at))
    update = await app.next("update")
    first = update["seq"]
    assert body_of(update) == {
        "t": "new-artifact",
        "artifactId": A1,
        "seq": 0,
        "header": H,
        "headerVersion": 1,
        "body": B,
        "bodyVersion": 1,
        "dataEncryptionKey": K,
        "createdAt": created_at,
        "updatedAt": created_at,
    }
    assert (await http.get(f"/v1/artifacts/{A1}")).json() == artifact(created_at)

    clock.advance(10)
    h2 = b64(b"header-2")
    resp = await http.post(f"/v1/artifacts/{A1}", json={"header": h2, "expectedHeaderVersion": 1})
    assert (resp.status_code, resp.json()) == (200, {"success": True, "headerVersion": 2})
    assert body_of(await app.next("update"), first + 1) == {
        "t": "update-artifact",
        "artifactId": A1,
        "header": {"value": h2, "version": 2},
    }

    clock.advance(10)
    h3, b2 = b64(b"header-3"), b64(b"")
    both = {"header": h3, "expectedHeaderVersion": 2, "body": b2, "expectedBodyVersion": 1}
    resp = await http.post(f"/v1/artifacts/{A1}", json=both)
    assert resp.json() == {"success": True, "headerVersion": 3, "bodyVersion": 2}
    assert body_of(await app.next("update"), first + 2) == {
        "t": "update-artifact",
        "artifactId": A1,
        "header": {"value": h3, "version": 3},
        "body": {"value": b2, "version": 2},
    }

    # nothing counted (a part without its expected version, or no part): seq + 1 all the same
    clock.advance(10)
    for payload in ({}, {"header": H}, {"expectedBodyVersion": 2}):
        resp = await http.post(f"/v1/artifacts/{A1}", json=payload)
        assert resp.json() == {"success": True}
        assert body_of(await app.next("update")) == {"t": "update-artifact", "artifactId": A1}
    # no body at all (and a JSON content type with no body) counts as {}
    resp = await http.post(f"/v1/artifacts/{A1}")
    assert resp.json() == {"success": True}
    await app.next("update")
    now = artifact(created_at, header=h3, headerVersion=3, body=b2, bodyVersion=2, seq=6)
    now["updatedAt"] = clock.now
    assert (await http.get(f"/v1/artifacts/{A1}")).json() == now
    listed = await http.get("/v1/artifacts", headers={"Content-Type": "application/json"})
    assert listed.json() == [{k: v for k, v in now.items() if k not in ("body", "bodyVersion")}]

    resp = await http.delete(f"/v1/artifacts/{A1}")
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    assert body_of(await app.next("update"), first + 7) == {
        "t": "delete-artifact",
        "artifactId": A1,
    }
    for method in ("GET", "DELETE"):
        resp = await http.request(method, f"/v1/artifacts/{A1}")
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    resp = await http.post(f"/v1/artifacts/{A1}", json={"header": H, "expectedHeaderVersion": 3})
    assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
    assert (await http.get("/v1/artifacts")).json() == []
    assert await app.nothing("update", 0.1)


async def test_create_is_idempotent_and_refuses_another_accounts_id(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    app = await srv.client("alice")
    first = (await http.post("/v1/artifacts", json=CREATE)).json()
    await app.next("update")
    clock.advance(50)
    other = {"id": A1, "header": b64(b"x"), "body": b64(b"y"), "dataEncryptionKey": b64(b"z")}
    again = await http.post("/v1/artifacts", json=other)
    assert (again.status_code, again.json()) == (200, first)
    assert await app.nothing("update", 0.1)
    bob_app = await srv.client("bob")
    async with await client_of(srv, "bob") as bob:
        resp = await bob.post("/v1/artifacts", json=other)
        assert (resp.status_code, resp.json()) == (
            409,
            {"error": "Artifact with this ID already exists for another account"},
        )
    assert await bob_app.nothing("update", 0.1)
    assert (await http.get(f"/v1/artifacts/{A1}")).json() == first


async def test_users_never_see_each_others_artifacts(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    await http.post("/v1/artifacts", json=CREATE)
    async with await client_of(srv, "bob") as bob:
        assert (await bob.get("/v1/artifacts")).json() == []
        for method, payload in (
            ("GET", None),
            ("POST", {"header": H, "expectedHeaderVersion": 1}),
            ("POST", {}),
            ("DELETE", None),
        ):
            resp = await bob.request(method, f"/v1/artifacts/{A1}", json=payload)
            assert (resp.status_code, resp.json()) == (404, NOT_FOUND), method
    stored = (await http.get(f"/v1/artifacts/{A1}")).json()
    assert (stored["headerVersion"], stored["seq"]) == (1, 0)


async def test_update_mismatch_reports_only_stale_parts(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    await http.post("/v1/artifacts", json=CREATE)
    await app.next("update")
    new = b64(b"new")
    cases = [
        (
            {"header": new, "expectedHeaderVersion": 5, "body": new, "expectedBodyVersion": 1},
            {"currentHeaderVersion": 1, "currentHeader": H},
        ),
        (
            {"header": new, "expectedHeaderVersion": 1, "body": new, "expectedBodyVersion": 0},
            {"currentBodyVersion": 1, "currentBody": B},
        ),
        (
            {"header": new, "expectedHeaderVersion": 0, "body": new, "expectedBodyVersion": 7},
            {
                "currentHeaderVersion": 1,
                "currentHeader": H,
                "currentBodyVersion": 1,
                "currentBody": B,
            },
        ),
        (  # a version no artifact can reach
            {"body": new, "expectedBodyVersion": 2**62},
            {"currentBodyVersion": 1, "currentBody": B},
        ),
    ]
    for payload, current in cases:
        resp = await http.post(f"/v1/artifacts/{A1}", json=payload)
        assert (resp.status_code, resp.json()) == (
            200,
            {"success": False, "error": "version-mismatch", **current},
        ), payload
    stored = (await http.get(f"/v1/artifacts/{A1}")).json()
    assert (stored["header"], stored["body"], stored["seq"]) == (H, B, 0)
    assert await app.nothing("update", 0.1)


BAD_CREATES: list[tuple[Any, str]] = [
    ({**CREATE, "id": "art-1"}, "Invalid id"),
    ({**CREATE, "id": A1 + "0"}, "Invalid id"),
    ({**CREATE, "id": 7}, "Invalid id"),
    ({k: v for k, v in CREATE.items() if k != "id"}, "Invalid id"),
    ({k: v for k, v in CREATE.items() if k != "header"}, "Invalid header"),
    ({**CREATE, "body": None}, "Invalid body"),
    ({**CREATE, "header": "not base64!"}, "Invalid header"),
    ({**CREATE, "body": "QQ"}, "Invalid body"),
    ({**CREATE, "dataEncryptionKey": 3}, "Invalid dataEncryptionKey"),
    ([CREATE], "Request body must be a JSON object"),
]

BAD_UPDATES: list[tuple[Any, str]] = [
    ({"header": "**", "expectedHeaderVersion": 1}, "Invalid header"),
    ({"header": 5}, "Invalid header"),
    ({"body": "QQ", "expectedBodyVersion": 1}, "Invalid body"),
    ({"header": H, "expectedHeaderVersion": -1}, "Invalid expectedHeaderVersion"),
    ({"header": H, "expectedHeaderVersion": 1.5}, "Invalid expectedHeaderVersion"),
    ({"header": H, "expectedHeaderVersion": "1"}, "Invalid expectedHeaderVersion"),
    ({"body": B, "expectedBodyVersion": True}, "Invalid expectedBodyVersion"),
    ("x", "Request body must be a JSON object"),
]


async def test_bad_input_is_400_and_writes_nothing(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    await http.post("/v1/artifacts", json={**CREATE, "id": A2})
    await app.next("update")
    for payload, message in BAD_CREATES:
        resp = await http.post("/v1/artifacts", json=payload)
        assert (resp.status_code, resp.json()) == (400, invalid(message)), payload
    for payload, message in BAD_UPDATES:
        resp = await http.post(f"/v1/artifacts/{A2}", json=payload)
        assert (resp.status_code, resp.json()) == (400, invalid(message)), payload
    resp = await http.post("/v1/artifacts", content=b"{nope", headers={"Content-Type": "x"})
    assert (resp.status_code, resp.json()) == (400, invalid("Invalid JSON body"))
    assert (await http.get("/v1/artifacts")).json()[0]["seq"] == 0
    assert len((await http.get("/v1/artifacts")).json()) == 1
    for odd in ("x" * 300, "%00"):  # ids no artifact can have (PostgreSQL refuses NUL)
        for method in ("GET", "POST", "DELETE"):
            resp = await http.request(method, f"/v1/artifacts/{odd}")
            assert (resp.status_code, resp.json()) == (404, NOT_FOUND), (method, odd)
    assert await app.nothing("update", 0.1)
    async with httpx.AsyncClient(base_url=srv.url) as anonymous:
        for method, path in (("GET", "/v1/artifacts"), ("DELETE", f"/v1/artifacts/{A2}")):
            resp = await anonymous.request(method, path)
            assert (resp.status_code, resp.json()) == (
                401,
                {"error": "Missing authorization header"},
            )


async def test_list_is_newest_first_and_capped_at_200(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    artifacts = srv.app.service(ArtifactsService)
    ids = [str(uuid.UUID(int=i)) for i in range(205)]
    for artifact_id in ids:
        clock.advance(1)
        await artifacts.create("alice", artifact_id, b"h", b"b", b"k")
    clock.advance(1)
    resp = await http.post(f"/v1/artifacts/{ids[0]}", json={})  # the oldest becomes the newest
    assert resp.json() == {"success": True}
    listed = (await http.get("/v1/artifacts")).json()
    assert len(listed) == 200
    assert [a["id"] for a in listed] == [ids[0], *reversed(ids[6:])]
    assert listed[0]["seq"] == 1 and listed[0]["updatedAt"] == clock.now
    assert set(listed[1]) == {
        "id",
        "header",
        "headerVersion",
        "dataEncryptionKey",
        "seq",
        "createdAt",
        "updatedAt",
    }


async def test_socket_events_and_http_routes_share_rows(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    ack = await app.call("artifact-create", {**CREATE, "id": A2})
    assert ack["result"] == "success"
    await app.next("update")
    assert (await http.get(f"/v1/artifacts/{A2}")).json() == {
        **ack["artifact"],
        "dataEncryptionKey": K,
    }
    # HTTP writes -> socket reads and updates
    h2 = b64(b"over http")
    resp = await http.post(f"/v1/artifacts/{A2}", json={"header": h2, "expectedHeaderVersion": 1})
    assert resp.json() == {"success": True, "headerVersion": 2}
    assert body_of(await app.next("update"))["header"] == {"value": h2, "version": 2}
    read = await app.call("artifact-read", {"artifactId": A2})
    assert (read["artifact"]["header"], read["artifact"]["seq"]) == (h2, 1)
    # socket writes -> HTTP reads
    b2 = b64(b"over socket")
    ack = await app.call(
        "artifact-update", {"artifactId": A2, "body": {"data": b2, "expectedVersion": 1}}
    )
    assert ack == {"result": "success", "body": {"version": 2, "data": b2}}
    await app.next("update")
    stored = (await http.get(f"/v1/artifacts/{A2}")).json()
    assert (stored["body"], stored["bodyVersion"], stored["seq"]) == (b2, 2, 2)
    # a stale HTTP write sees the socket's write
    resp = await http.post(f"/v1/artifacts/{A2}", json={"body": B, "expectedBodyVersion": 1})
    assert resp.json() == {
        "success": False,
        "error": "version-mismatch",
        "currentBodyVersion": 2,
        "currentBody": b2,
    }
    # an HTTP delete is seen by the socket
    assert (await http.delete(f"/v1/artifacts/{A2}")).json() == {"success": True}
    assert body_of(await app.next("update")) == {"t": "delete-artifact", "artifactId": A2}
    assert await app.call("artifact-read", {"artifactId": A2}) == {
        "result": "error",
        "message": "Artifact not found",
    }


async def test_http_updates_go_to_user_scoped_sockets_only(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    session = await srv.client("alice", client_type="session-scoped", session_id="S1")
    machine = await srv.client("alice", client_type="machine-scoped", machine_id="M1")
    bob = await srv.client("bob")
    await http.post("/v1/artifacts", json=CREATE)
    await http.post(f"/v1/artifacts/{A1}", json={"body": B, "expectedBodyVersion": 1})
    await http.delete(f"/v1/artifacts/{A1}")
    kinds = [body_of(await app.next("update"))["t"] for _ in range(3)]
    assert kinds == ["new-artifact", "update-artifact", "delete-artifact"]
    for sock in (session, machine, bob):
        assert await sock.nothing("update", within=0.1)


async def test_racing_http_updates_exactly_one_wins(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    await http.post("/v1/artifacts", json=CREATE)
    await app.next("update")
    writers = 8
    payloads = [
        {"header": b64(f"h{i}".encode()), "expectedHeaderVersion": 1} for i in range(writers)
    ]
    replies = await asyncio.gather(*(http.post(f"/v1/artifacts/{A1}", json=p) for p in payloads))
    answers = [r.json() for r in replies]
    winners = [i for i, a in enumerate(answers) if a["success"]]
    assert len(winners) == 1, answers
    won = payloads[winners[0]]["header"]
    for i, answer in enumerate(answers):
        if i != winners[0]:
            assert answer == {
                "success": False,
                "error": "version-mismatch",
                "currentHeaderVersion": 2,
                "currentHeader": won,
            }
    assert body_of(await app.next("update"))["header"] == {"value": won, "version": 2}
    assert await app.nothing("update", 0.2)
    assert (await http.get(f"/v1/artifacts/{A1}")).json()["seq"] == 1
