"""access-key-get, the /v1/access-keys routes and the library API (docs/events.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import happy_socket_usage
import httpx
import pytest
from click.testing import CliRunner

from happy_socket import ConfigError, Settings, create_app
from happy_socket.cli import cli
from happy_socket.testing import ServerHarness

from .support import new_machine, new_session

INVALID = {"ok": False, "error": "Invalid parameters: sessionId and machineId are required"}
FOREIGN = {"ok": False, "error": "Session or machine not found"}


@pytest.fixture
async def server(make_server: Any) -> ServerHarness:
    return await make_server()  # type: ignore[no-any-return]


async def http(
    server: ServerHarness, method: str, path: str, user: str | None = "alice", **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {await server.token(user)}"} if user else {}
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.request(method, path, headers=headers, **kw)


def key_json(data: str, version: int, created: int, updated: int) -> dict[str, Any]:
    return {"data": data, "dataVersion": version, "createdAt": created, "updatedAt": updated}


async def test_socket_and_http_lifecycle(make_server: Any, db_url: str) -> None:
    server: ServerHarness = await make_server(db=db_url)
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
    server: ServerHarness = await make_server(db=db_url)
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
        assert (res.status_code, res.json()) == (401, {"error": "Missing authorization header"})
        async with httpx.AsyncClient(base_url=server.url) as client:
            res = await client.request(method, path, headers={"Authorization": "Bearer bad"})
        assert (res.status_code, res.json()) == (401, {"error": "Invalid token"})
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
    server: ServerHarness = await make_server(db=db_url)
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


@pytest.mark.parametrize(
    ("without", "message"),
    [
        (
            ("sessions",),
            "Plugins 'access-keys', 'usage' need plugin 'sessions', which is not enabled.",
        ),
        (("machines",), "Plugin 'access-keys' needs plugin 'machines', which is not enabled."),
    ],
)
def test_startup_without_sessions_or_machines_fails_in_one_sentence(
    without: tuple[str, ...], message: str
) -> None:
    settings = Settings(db="sqlite:///:memory:", secret="s" * 32, without=without)
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    assert str(info.value) == message


def test_usage_without_sessions_fails_in_one_sentence() -> None:
    settings = Settings(db="sqlite:///:memory:", secret="s" * 32)
    with pytest.raises(ConfigError) as info:
        create_app(settings, plugins=[("usage", happy_socket_usage)], load_entry_points=False)
    assert str(info.value) == "Plugin 'usage' needs plugin 'sessions', which is not enabled."


def test_cli_access_keys_set_and_get(tmp_path: Path) -> None:
    secret = "cli-secret-0123456789abcdef0123456789"
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    async def prepare() -> tuple[str, str]:
        app = create_app(Settings(db=db, secret=secret))
        await app.startup()
        try:
            return await new_session(app, "alice"), await new_machine(app, "alice")
        finally:
            await app.shutdown()

    sid, mid = asyncio.run(prepare())
    common = ["--user", "alice", "--session", sid, "--machine", mid, "--db", db, "--secret", secret]
    runner = CliRunner()

    def run(*args: str) -> tuple[int, Any]:
        result = runner.invoke(cli, ["access-keys", *args, *common])
        try:
            return result.exit_code, json.loads(result.stdout)
        except ValueError:
            return result.exit_code, result.output.strip()

    code, out = run("get")
    assert (code, out) == (0, {"accessKey": None})
    code, out = run("set", "--data", "D1")
    assert code == 0
    assert out == {
        "success": True,
        "accessKey": {
            "data": "D1",
            "dataVersion": 1,
            "createdAt": out["accessKey"]["createdAt"],
            "updatedAt": out["accessKey"]["createdAt"],
        },
    }
    assert run("set", "--data", "again") == (1, "Error: Access key already exists")
    assert run("set", "--data", "D2", "--expected-version", "1") == (
        0,
        {"success": True, "version": 2},
    )
    assert run("set", "--data", "D3", "--expected-version", "1") == (
        1,
        {"success": False, "error": "version-mismatch", "currentVersion": 2, "currentData": "D2"},
    )
    code, out = run("get")
    assert (code, out["accessKey"]["data"], out["accessKey"]["dataVersion"]) == (0, "D2", 2)
    result = runner.invoke(
        cli,
        [
            "access-keys",
            "set",
            "--user",
            "bob",
            "--session",
            sid,
            "--machine",
            mid,
            "--data",
            "x",
            "--db",
            db,
            "--secret",
            secret,
        ],
    )
    assert (result.exit_code, result.output.strip()) == (1, "Error: Session or machine not found")
