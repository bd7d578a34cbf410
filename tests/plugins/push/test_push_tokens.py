"""/v1/push-tokens: upsert on (account, token), newest first, URL-decoded delete that always
succeeds, bounds, scoping and the PushTokens service, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from happy_socket_push import PushToken, PushTokens
from happy_socket_push import service as push_service

from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import FakeClock, make_app

EXPO = "ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]"
OTHER = "ExponentPushToken[yyyyyyyyyyyyyyyyyyyyyy]"


def invalid(message: str) -> dict[str, Any]:
    return {"error": "Error", "message": message, "statusCode": 400}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def srv(make_server: Any, db_url: str, clock: FakeClock) -> ServerHarness:
    return await make_server(app=make_app(db_url, clock))  # type: ignore[no-any-return]


async def client_of(srv: ServerHarness, user: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {await srv.token(user)}"}
    return httpx.AsyncClient(base_url=srv.url, headers=headers)


@pytest.fixture
async def http(srv: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_of(srv, "alice") as client:
        yield client


async def register(http: httpx.AsyncClient, token: str) -> None:
    resp = await http.post("/v1/push-tokens", json={"token": token})
    assert (resp.status_code, resp.json()) == (200, {"success": True})


async def test_register_list_delete_exact_json(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    assert (await http.get("/v1/push-tokens")).json() == {"tokens": []}
    first_at = clock.now
    await register(http, EXPO)
    clock.advance(1000)
    await register(http, OTHER)
    clock.advance(1000)
    await register(http, EXPO)  # a repeat only bumps updatedAt
    tokens = (await http.get("/v1/push-tokens")).json()["tokens"]
    assert tokens == [
        {
            "id": tokens[0]["id"],
            "token": OTHER,
            "createdAt": first_at + 1000,
            "updatedAt": first_at + 1000,
        },
        {"id": tokens[1]["id"], "token": EXPO, "createdAt": first_at, "updatedAt": clock.now},
    ]
    assert tokens[0]["id"] != tokens[1]["id"] and all(t["id"] for t in tokens)
    # the service a delivery plugin reads
    service = srv.app.service(PushTokens)
    assert [t.token for t in await service.tokens("alice")] == [OTHER, EXPO]
    assert isinstance((await service.tokens("alice"))[0], PushToken)

    # the app sends the token URL-encoded (and a JSON content type without a body)
    resp = await http.delete(
        f"/v1/push-tokens/{quote(EXPO, safe='')}", headers={"Content-Type": "application/json"}
    )
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    assert [t["token"] for t in (await http.get("/v1/push-tokens")).json()["tokens"]] == [OTHER]
    for path in (quote(EXPO, safe=""), "never-registered", "x" * 600, "%00"):
        resp = await http.delete(f"/v1/push-tokens/{path}")
        assert (resp.status_code, resp.json()) == (200, {"success": True}), path
    await http.delete(f"/v1/push-tokens/{OTHER}")  # unencoded brackets work as well
    assert (await http.get("/v1/push-tokens")).json() == {"tokens": []}


async def test_tokens_are_per_account(srv: ServerHarness, http: httpx.AsyncClient) -> None:
    await register(http, EXPO)
    async with await client_of(srv, "bob") as bob:
        assert (await bob.get("/v1/push-tokens")).json() == {"tokens": []}
        assert (await bob.delete(f"/v1/push-tokens/{quote(EXPO, safe='')}")).json() == {
            "success": True
        }
        await register(bob, EXPO)  # the same device token may belong to two accounts
        assert [t["token"] for t in (await bob.get("/v1/push-tokens")).json()["tokens"]] == [EXPO]
        await bob.delete(f"/v1/push-tokens/{quote(EXPO, safe='')}")
    assert [t["token"] for t in (await http.get("/v1/push-tokens")).json()["tokens"]] == [EXPO]


async def test_bad_bodies_are_400(srv: ServerHarness, http: httpx.AsyncClient) -> None:
    for body in (
        {},
        {"token": ""},
        {"token": 5},
        {"token": None},
        {"token": "x" * 513},
    ):
        resp = await http.post("/v1/push-tokens", json=body)
        assert (resp.status_code, resp.json()) == (400, invalid("Invalid token")), body
    resp = await http.post("/v1/push-tokens", json={"token": "a\x00"})  # refused by the core
    assert (resp.status_code, resp.json()) == (400, invalid("NUL characters are not accepted"))
    resp = await http.post("/v1/push-tokens")
    assert (resp.status_code, resp.json()) == (400, invalid("Invalid token"))
    await register(http, "x" * 512)
    assert len((await http.get("/v1/push-tokens")).json()["tokens"]) == 1
    async with httpx.AsyncClient(base_url=srv.url) as anonymous:
        for method, path in (
            ("GET", "/v1/push-tokens"),
            ("POST", "/v1/push-tokens"),
            ("DELETE", "/v1/push-tokens/x"),
        ):
            resp = await anonymous.request(method, path)
            assert (resp.status_code, resp.json()) == (
                401,
                {"error": "Missing authorization header"},
            ), path


async def test_least_recently_registered_tokens_are_dropped_past_the_cap(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push_service, "MAX_TOKENS_PER_ACCOUNT", 3)
    for token in ("t1", "t2", "t3"):
        clock.advance(10)
        await register(http, token)
    clock.advance(10)
    await register(http, "t1")  # t1 is registered again: t2 is now the stalest
    clock.advance(10)
    await register(http, "t4")
    tokens = [t["token"] for t in (await http.get("/v1/push-tokens")).json()["tokens"]]
    assert tokens == ["t4", "t3", "t1"]
    async with await client_of(srv, "bob") as bob:
        await register(bob, "b1")  # bob's tokens do not count against alice's
    assert len((await http.get("/v1/push-tokens")).json()["tokens"]) == 3
