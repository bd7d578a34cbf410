"""access-key-get (§4.5), the /v1/access-keys routes (§10) and the library API (§8)."""

from __future__ import annotations

import asyncio
from typing import Any

import happy_socket_access_keys
import httpx
import pytest

from happy_socket import ConfigError, Settings, create_app
from happy_socket.plugins import entry_points
from happy_socket.testing import ServerHarness

from .support import (
    FakeMachinesPlugin,
    FakeSessionsPlugin,
    domain_plugins,
    new_machine,
    new_session,
)

INVALID = {"ok": False, "error": "Invalid parameters: sessionId and machineId are required"}
FOREIGN = {"ok": False, "error": "Session or machine not found"}


@pytest.fixture
async def server(make_server: Any) -> ServerHarness:
    return await make_server(plugins=domain_plugins())  # type: ignore[no-any-return]


async def http(
    server: ServerHarness, method: str, path: str, user: str | None = "alice", **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {await server.token(user)}"} if user else {}
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.request(method, path, headers=headers, **kw)


def key_json(data: str, version: int, created: int, updated: int) -> dict[str, Any]:
    return {"data": data, "dataVersion": version, "createdAt": created, "updatedAt": updated}


async def test_socket_and_http_lifecycle(make_server: Any, db_url: str) -> None:
    server: ServerHarness = await make_server(db=db_url, plugins=domain_plugins())
    app = server.app
    sid, mid = await new_session(app, "alice"), await new_machine(app, "alice")
    alice = await server.client("alice")
    payload = {"sessionId": sid, "machineId": mid}
    path = f"/v1/access-keys/{sid}/{mid}"

    assert await alice.call("access-key-get", payload) == {"ok": True, "accessKey": None}
    res = await http(server, "GET", path)
    assert (res.status_code, res.json()) == (200, {"accessKey": None})

    res = await http(server, "POST", path, json={"data": "secret-1"})
    assert res.status_code == 200
    created = res.json()["accessKey"]
    assert res.json() == {
        "success": True,
        "accessKey": key_json("secret-1", 1, created["createdAt"], created["createdAt"]),
    }
    assert await alice.call("access-key-get", payload) == {"ok": True, "accessKey": created}
    res = await http(server, "GET", path)
    assert res.json() == {"accessKey": created}

    res = await http(server, "POST", path, json={"data": "again"})
    assert (res.status_code, res.json()) == (409, {"error": "Access key already exists"})

    res = await http(server, "PUT", path, json={"data": "secret-2", "expectedVersion": 1})
    assert (res.status_code, res.json()) == (200, {"success": True, "version": 2})
    res = await http(server, "PUT", path, json={"data": "secret-x", "expectedVersion": 1})
    assert (res.status_code, res.json()) == (
        200,
        {
            "success": False,
            "error": "version-mismatch",
            "currentVersion": 2,
            "currentData": "secret-2",
        },
    )
    got = await alice.call("access-key-get", payload)
    assert got["accessKey"]["data"] == "secret-2" and got["accessKey"]["dataVersion"] == 2
    assert got["accessKey"]["createdAt"] == created["createdAt"]
    assert got["accessKey"]["updatedAt"] >= created["updatedAt"]

    res = await http(
        server, "PUT", f"/v1/access-keys/{sid}/other", json={"data": "d", "expectedVersion": 1}
    )
    assert (res.status_code, res.json()) == (404, {"error": "Access key not found"})
    # access keys cause no update
    assert await alice.nothing("update", within=0.1)


async def test_another_users_session_or_machine_is_not_found(make_server: Any, db_url: str) -> None:
    server: ServerHarness = await make_server(db=db_url, plugins=domain_plugins())
    app = server.app
    a_sid, a_mid = await new_session(app, "alice"), await new_machine(app, "alice")
    b_sid, b_mid = await new_session(app, "bob"), await new_machine(app, "bob")
    await app.service("access-keys").create("bob", b_sid, b_mid, "bobs-secret")
    alice = await server.client("alice")
    for sid, mid in [
        (b_sid, b_mid),
        (b_sid, a_mid),
        (a_sid, b_mid),
        ("nope", a_mid),
        (a_sid, "nope"),
    ]:
        assert await alice.call("access-key-get", {"sessionId": sid, "machineId": mid}) == FOREIGN
        path = f"/v1/access-keys/{sid}/{mid}"
        res = await http(server, "GET", path)
        assert (res.status_code, res.json()) == (404, {"error": "Session or machine not found"})
        res = await http(server, "POST", path, json={"data": "x"})
        assert (res.status_code, res.json()) == (404, {"error": "Session or machine not found"})
    # PUT is keyed by the caller: bob's key is "not found" for alice and stays unchanged
    res = await http(
        server, "PUT", f"/v1/access-keys/{b_sid}/{b_mid}", json={"data": "x", "expectedVersion": 1}
    )
    assert (res.status_code, res.json()) == (404, {"error": "Access key not found"})
    bob_key = await app.service("access-keys").get("bob", b_sid, b_mid)
    assert (bob_key["data"], bob_key["dataVersion"]) == ("bobs-secret", 1)


async def test_bad_socket_payloads(server: ServerHarness) -> None:
    alice = await server.client("alice")
    sid, mid = await new_session(server.app, "alice"), await new_machine(server.app, "alice")
    for payload in [
        None,
        [],
        "x",
        7,
        {},
        {"sessionId": sid},
        {"machineId": mid},
        {"sessionId": "", "machineId": mid},
        {"sessionId": sid, "machineId": ""},
        {"sessionId": 1, "machineId": mid},
        {"sessionId": sid, "machineId": ["m"]},
        {"sessionId": "s" * 10_000, "machineId": mid},
    ]:
        assert await alice.call("access-key-get", payload) == INVALID, payload
    assert await alice.call("access-key-get") == INVALID


async def test_http_validation_and_auth(server: ServerHarness) -> None:
    sid, mid = await new_session(server.app, "alice"), await new_machine(server.app, "alice")
    path = f"/v1/access-keys/{sid}/{mid}"
    for method in ("GET", "POST", "PUT"):
        res = await http(server, method, path, user=None, json={})
        assert res.status_code == 401 and "error" in res.json()
    for body in [{}, {"data": 5}, {"data": None}]:
        res = await http(server, "POST", path, json=body)
        assert (res.status_code, res.json()) == (400, {"error": "Invalid data"})
    res = await http(server, "POST", path, content=b"[1]")
    assert res.status_code == 400
    res = await http(server, "POST", path, content=b"{not json")
    assert res.status_code == 400
    await http(server, "POST", path, json={"data": "d"})
    for body, error in [
        ({"expectedVersion": 1}, "Invalid data"),
        ({"data": "x"}, "Invalid expectedVersion"),
        ({"data": "x", "expectedVersion": "1"}, "Invalid expectedVersion"),
        ({"data": "x", "expectedVersion": -1}, "Invalid expectedVersion"),
        ({"data": "x", "expectedVersion": 1.5}, "Invalid expectedVersion"),
        ({"data": "x", "expectedVersion": True}, "Invalid expectedVersion"),
    ]:
        res = await http(server, "PUT", path, json=body)
        assert (res.status_code, res.json()) == (400, {"error": error}), body
    res = await http(server, "PUT", path, json={"data": "x", "expectedVersion": 2**62 + 5})
    assert res.json() == {
        "success": False,
        "error": "version-mismatch",
        "currentVersion": 1,
        "currentData": "d",
    }


async def test_concurrent_puts_one_winner(make_server: Any, db_url: str) -> None:
    server: ServerHarness = await make_server(db=db_url, plugins=domain_plugins())
    service = server.app.service("access-keys")
    sid, mid = await new_session(server.app, "alice"), await new_machine(server.app, "alice")
    await service.create("alice", sid, mid, "v1")
    results = await asyncio.gather(
        *(service.update("alice", sid, mid, f"w{i}", 1) for i in range(8))
    )
    winners = [i for i, r in enumerate(results) if r["success"]]
    assert len(winners) == 1 and results[winners[0]] == {"success": True, "version": 2}
    for i, r in enumerate(results):
        if i != winners[0]:
            assert r == {
                "success": False,
                "error": "version-mismatch",
                "currentVersion": 2,
                "currentData": f"w{winners[0]}",
            }


async def test_library_api_errors(server: ServerHarness) -> None:
    from happy_socket import Conflict, NotFound

    service = server.app.service("access-keys")
    sid, mid = await new_session(server.app, "alice"), await new_machine(server.app, "alice")
    with pytest.raises(NotFound, match="Session or machine not found"):
        await service.create("bob", sid, mid, "d")
    with pytest.raises(NotFound, match="Session or machine not found"):
        await service.get("bob", sid, mid)
    with pytest.raises(NotFound, match="Access key not found"):
        await service.update("alice", sid, mid, "d", 1)
    key = await service.create("alice", sid, mid, "d")
    assert key["dataVersion"] == 1
    with pytest.raises(Conflict, match="Access key already exists"):
        await service.create("alice", sid, mid, "d")


async def test_deleting_the_session_deletes_its_keys(server: ServerHarness) -> None:
    app = server.app
    service = app.service("access-keys")
    sid, mid = await new_session(app, "alice"), await new_machine(app, "alice")
    other = await new_session(app, "alice", tag="other")
    await service.create("alice", sid, mid, "d")
    await service.create("alice", other, mid, "kept")
    assert await app.service("sessions").delete("alice", sid)
    assert await service.get("alice", sid, mid, check_owner=False) is None
    assert (await service.get("alice", other, mid))["data"] == "kept"


def test_startup_without_sessions_or_machines_fails_in_one_sentence() -> None:
    settings = Settings(db="sqlite:///:memory:", secret="s" * 32)
    ak = ("access-keys", happy_socket_access_keys)
    for plugins, missing in [
        ([ak], "sessions"),
        ([ak, ("sessions", FakeSessionsPlugin())], "machines"),
        ([ak, ("machines", FakeMachinesPlugin())], "sessions"),
    ]:
        with pytest.raises(ConfigError) as info:
            create_app(settings, plugins=plugins, load_entry_points=False)
        assert str(info.value) == (
            f"Plugin 'access-keys' needs plugin '{missing}', which is not enabled."
        )
    # and through --without on the installed plugins
    if {"sessions", "machines", "access-keys"} <= set(entry_points()):
        with pytest.raises(ConfigError, match="needs plugin 'machines'"):
            create_app(Settings(db="sqlite:///:memory:", secret="s" * 32, without=("machines",)))
