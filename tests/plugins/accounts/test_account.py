"""GET /v1/account/profile, GET and POST /v1/account/settings: exact JSON, errors, the
compare-and-set and its ``update-account`` update, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory

from .support import FakeClock, body_of, make_app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000_000)


@pytest.fixture
async def server(make_server: ServerFactory, db_url: str, clock: FakeClock) -> ServerHarness:
    return await make_server(app=make_app(db_url, clock))


@pytest.fixture
async def http(server: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def call(
    server: ServerHarness, http: httpx.AsyncClient, method: str, path: str, user: str, **kw: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {await server.token(user)}"}
    reply = await http.request(method, path, headers=headers, **kw)
    return reply.status_code, reply.json()


async def test_profile_exact_shape(
    server: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    assert await call(server, http, "GET", "/v1/account/profile", "alice") == (
        200,
        {
            "id": "alice",
            "timestamp": 1_800_000_000_000,
            "firstName": None,
            "lastName": None,
            "username": None,
            "avatar": None,
            "github": None,
            "connectedServices": [],
        },
    )
    clock.advance(5)
    code, body = await call(server, http, "GET", "/v1/account/profile", "bob")
    assert code == 200 and body["id"] == "bob" and body["timestamp"] == 1_800_000_000_005


async def test_get_routes_accept_an_empty_json_body(
    server: ServerHarness, http: httpx.AsyncClient
) -> None:
    headers = {
        "Authorization": f"Bearer {await server.token('alice')}",
        "Content-Type": "application/json",
    }
    for path in ("/v1/account/profile", "/v1/account/settings"):
        reply = await http.get(path, headers=headers)
        assert reply.status_code == 200, reply.text


async def test_routes_need_a_token(http: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/v1/account/profile"),
        ("GET", "/v1/account/settings"),
        ("POST", "/v1/account/settings"),
    ):
        reply = await http.request(method, path)
        assert (reply.status_code, reply.json()) == (
            401,
            {"error": "Missing authorization header"},
        )
        reply = await http.request(method, path, headers={"Authorization": "Bearer x.y.z"})
        assert (reply.status_code, reply.json()) == (401, {"error": "Invalid token"})


async def test_settings_compare_and_set(server: ServerHarness, http: httpx.AsyncClient) -> None:
    app_socket = await server.client("alice")
    session_socket = await server.client("alice", client_type="session-scoped", session_id="s1")
    machine_socket = await server.client("alice", client_type="machine-scoped", machine_id="m1")
    bob_socket = await server.client("bob")
    path = "/v1/account/settings"
    assert await call(server, http, "GET", path, "alice") == (
        200,
        {"settings": None, "settingsVersion": 0},
    )

    # a stale version on a fresh account: mismatch against version 0, nothing emitted
    reply = await call(
        server, http, "POST", path, "alice", json={"settings": "x", "expectedVersion": 3}
    )
    assert reply == (
        200,
        {
            "success": False,
            "error": "version-mismatch",
            "currentVersion": 0,
            "currentSettings": None,
        },
    )
    assert await app_socket.nothing("update")

    reply = await call(
        server, http, "POST", path, "alice", json={"settings": "enc-1", "expectedVersion": 0}
    )
    assert reply == (200, {"success": True, "version": 1})
    update = await app_socket.next("update")
    assert body_of(update) == {
        "t": "update-account",
        "id": "alice",
        "settings": {"value": "enc-1", "version": 1},
    }
    first_seq = update["seq"]
    assert await call(server, http, "GET", path, "alice") == (
        200,
        {"settings": "enc-1", "settingsVersion": 1},
    )

    reply = await call(
        server, http, "POST", path, "alice", json={"settings": "enc-2", "expectedVersion": 0}
    )
    assert reply == (
        200,
        {
            "success": False,
            "error": "version-mismatch",
            "currentVersion": 1,
            "currentSettings": "enc-1",
        },
    )
    reply = await call(
        server, http, "POST", path, "alice", json={"settings": None, "expectedVersion": 1}
    )
    assert reply == (200, {"success": True, "version": 2})
    update = await app_socket.next("update")
    assert update["seq"] == first_seq + 1
    assert body_of(update) == {
        "t": "update-account",
        "id": "alice",
        "settings": {"value": None, "version": 2},
    }
    reply = await call(
        server, http, "POST", path, "alice", json={"settings": "", "expectedVersion": 1}
    )
    assert reply == (
        200,
        {
            "success": False,
            "error": "version-mismatch",
            "currentVersion": 2,
            "currentSettings": None,
        },
    )
    # user-scoped sockets only, and only the owner's
    assert await session_socket.nothing("update")
    assert await machine_socket.nothing("update")
    assert await bob_socket.nothing("update")
    assert await app_socket.nothing("update")
    # another account's settings are its own
    assert await call(server, http, "GET", path, "bob") == (
        200,
        {"settings": None, "settingsVersion": 0},
    )


async def test_concurrent_writers_one_wins(server: ServerHarness, http: httpx.AsyncClient) -> None:
    """Racing first writes (the settings row does not exist yet), then racing later writes."""
    path = "/v1/account/settings"
    for user in ("alice", "bob", "carol"):
        token = await server.token(user)
        sock = await server.client(user)
        for version in (0, 1):

            async def write(
                i: int, user: str = user, version: int = version, token: str = token
            ) -> Any:
                reply = await http.post(
                    path,
                    json={"settings": f"{user}-{version}-{i}", "expectedVersion": version},
                    headers={"Authorization": f"Bearer {token}"},
                )
                return reply.json()

            replies = await asyncio.gather(*(write(i) for i in range(8)))
            winners = [r for r in replies if r["success"]]
            assert winners == [{"success": True, "version": version + 1}], replies
            stored = (await call(server, http, "GET", path, user))[1]["settings"]
            assert stored.startswith(f"{user}-{version}-")
            losers = [r for r in replies if not r["success"]]
            assert (
                losers
                == [
                    {
                        "success": False,
                        "error": "version-mismatch",
                        "currentVersion": version + 1,
                        "currentSettings": stored,
                    }
                ]
                * 7
            )
            update = await sock.next("update")
            assert update["body"]["settings"] == {"value": stored, "version": version + 1}
            assert await sock.nothing("update", within=0.1)


NUL_REFUSED = {
    "error": "Error",
    "message": "NUL characters are not accepted",
    "statusCode": 400,
}  # by the core, before the route


async def test_settings_validation(server: ServerHarness, http: httpx.AsyncClient) -> None:
    path = "/v1/account/settings"

    def invalid(field: str) -> tuple[int, Any]:
        return 400, {"error": "Error", "message": f"Invalid {field}", "statusCode": 400}

    cases: list[tuple[Any, tuple[int, Any]]] = [
        ({}, invalid("settings")),
        ({"expectedVersion": 0}, invalid("settings")),
        ({"settings": 5, "expectedVersion": 0}, invalid("settings")),
        ({"settings": "a\x00b", "expectedVersion": 0}, (400, NUL_REFUSED)),
        ({"settings": "s"}, invalid("expectedVersion")),
        ({"settings": "s", "expectedVersion": -1}, invalid("expectedVersion")),
        ({"settings": "s", "expectedVersion": 1.5}, invalid("expectedVersion")),
        ({"settings": "s", "expectedVersion": "0"}, invalid("expectedVersion")),
        ({"settings": "s", "expectedVersion": True}, invalid("expectedVersion")),
        ({"settings": "s", "expectedVersion": 2**63}, invalid("expectedVersion")),
    ]
    for body, expected in cases:
        assert await call(server, http, "POST", path, "alice", json=body) == expected, body
    reply = await call(server, http, "POST", path, "alice", content=b"[]")
    assert reply[0] == 400
    # the largest versions are valid input that simply never match
    reply = await call(
        server, http, "POST", path, "alice", json={"settings": "s", "expectedVersion": 2**63 - 1}
    )
    assert reply == (
        200,
        {
            "success": False,
            "error": "version-mismatch",
            "currentVersion": 0,
            "currentSettings": None,
        },
    )
    assert await call(server, http, "GET", path, "alice") == (
        200,
        {"settings": None, "settingsVersion": 0},
    )
