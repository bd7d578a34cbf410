"""Terminal and account linking: both flows end to end with the clients' crypto, the state
machine, first-approval-wins, key spellings, every documented error, and expiry."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from happy_socket_accounts import AccountsService
from happy_socket_accounts.links import ANSWERED_TTL_MS, REQUEST_TTL_MS
from happy_socket_accounts.tables import account_requests, terminal_requests

from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory

from .support import FakeClock, Phone, Requester, b64, content_public_key, make_app

REQUESTED = {"state": "requested"}
NOT_FOUND = {"status": "not_found", "supportsV2": False}
INVALID_KEY = {"error": "Invalid public key"}


def invalid(field: str) -> dict[str, Any]:
    return {"error": "Error", "message": f"Invalid {field}", "statusCode": 400}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(make_server: ServerFactory, db_url: str, clock: FakeClock) -> ServerHarness:
    return await make_server(app=make_app(db_url, clock))


@pytest.fixture
async def http(server: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(http: httpx.AsyncClient, path: str, body: Any, token: str | None = None) -> Any:
    reply = await http.post(path, json=body, headers=bearer(token) if token else None)
    return reply.status_code, reply.json()


async def status(http: httpx.AsyncClient, key: str) -> Any:
    reply = await http.get("/v1/auth/request/status", params={"publicKey": key})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def user_of(http: httpx.AsyncClient, token: str) -> str:
    """The account a token stands for, asked of an authenticated route."""
    reply = await http.get("/v1/account/profile", headers=bearer(token))
    assert reply.status_code == 200, reply.text
    user_id: str = reply.json()["id"]
    return user_id


def authorized(answer: Any) -> tuple[str, str]:
    """The (token, response) of an ``authorized`` poll answer, checking its exact shape."""
    assert set(answer) == {"state", "token", "response"}, answer
    assert answer["state"] == "authorized"
    assert isinstance(answer["token"], str) and isinstance(answer["response"], str)
    return answer["token"], answer["response"]


async def test_terminal_link_v2_end_to_end(server: ServerHarness, http: httpx.AsyncClient) -> None:
    cli = Requester()
    body = {"publicKey": cli.b64, "supportsV2": True}
    assert await post(http, "/v1/auth/request", body) == (200, REQUESTED)
    assert await post(http, "/v1/auth/request", body) == (200, REQUESTED)

    phone = Phone()
    phone_token = await phone.login(http)
    account = await user_of(http, phone_token)
    # the phone reads the key from the QR link (base64url) and asks for the status
    assert await status(http, cli.b64url) == {"status": "pending", "supportsV2": True}
    approve = {"publicKey": cli.b64, "response": phone.v2_response(cli.public)}
    assert await post(http, "/v1/auth/response", approve, phone_token) == (200, {"success": True})
    assert await status(http, cli.b64) == {"status": "authorized", "supportsV2": False}

    code, answer = await post(http, "/v1/auth/request", body)
    assert code == 200
    token, response = authorized(answer)
    assert response == approve["response"]
    assert cli.open(response) == b"\x00" + content_public_key(phone.secret)
    assert await user_of(http, token) == account
    sock = await server.connect({"token": token})
    assert await sock.call("ping") == {}

    # every poll mints a new token for the same account; the response never changes
    code, again = await post(http, "/v1/auth/request", body)
    token2, response2 = authorized(again)
    assert token2 != token and response2 == response
    assert await user_of(http, token2) == account


async def test_terminal_link_v1_gives_the_secret(http: httpx.AsyncClient) -> None:
    cli = Requester()
    assert await post(http, "/v1/auth/request", {"publicKey": cli.b64}) == (200, REQUESTED)
    phone = Phone()
    phone_token = await phone.login(http)
    assert await status(http, cli.b64) == {"status": "pending", "supportsV2": False}
    approve = {"publicKey": cli.b64, "response": phone.v1_response(cli.public)}
    assert len(approve["response"]) == 140
    assert await post(http, "/v1/auth/response", approve, phone_token) == (200, {"success": True})
    code, answer = await post(http, "/v1/auth/request", {"publicKey": cli.b64})
    assert code == 200
    token, response = authorized(answer)
    secret = cli.open(response)
    assert secret == phone.secret
    # the secret is the account: logging in with it reaches the same account as the token
    assert await user_of(http, await Phone(secret).login(http)) == await user_of(http, token)


async def test_account_link_end_to_end(server: ServerHarness, http: httpx.AsyncClient) -> None:
    web = Requester(seeded=True)
    body = {"publicKey": web.b64}
    assert await post(http, "/v1/auth/account/request", body) == (200, REQUESTED)
    phone = Phone()
    phone_token = await phone.login(http)
    approve = {"publicKey": web.b64url, "response": phone.v1_response(web.public)}
    reply = await post(http, "/v1/auth/account/response", approve, phone_token)
    assert reply == (200, {"success": True})
    code, answer = await post(http, "/v1/auth/account/request", body)
    assert code == 200
    token, response = authorized(answer)
    assert web.open(response) == phone.secret
    assert await user_of(http, token) == await user_of(http, phone_token)
    reply = await http.get("/v1/account/settings", headers=bearer(token))
    assert reply.json() == {"settings": None, "settingsVersion": 0}
    # the two kinds of request are separate tables: the terminal side knows nothing of it
    assert await status(http, web.b64) == NOT_FOUND
    cli = Requester()
    assert await post(http, "/v1/auth/request", {"publicKey": cli.b64}) == (200, REQUESTED)
    reply = await post(
        http, "/v1/auth/account/response", {**approve, "publicKey": cli.b64}, phone_token
    )
    assert reply == (404, {"error": "Request not found"})


@pytest.mark.parametrize("kind", ["", "/account"])
async def test_first_approval_wins(http: httpx.AsyncClient, kind: str) -> None:
    device = Requester()
    body = {"publicKey": device.b64}
    assert await post(http, f"/v1/auth{kind}/request", body) == (200, REQUESTED)
    alice, mallory = Phone(), Phone()
    alice_token, mallory_token = await alice.login(http), await mallory.login(http)
    first = {"publicKey": device.b64, "response": alice.v1_response(device.public)}
    path = f"/v1/auth{kind}/response"
    assert await post(http, path, first, alice_token) == (200, {"success": True})
    # a replayed approval, a second one by the same phone, another account's: all no-ops
    assert await post(http, path, first, alice_token) == (200, {"success": True})
    second = {"publicKey": device.b64, "response": alice.v1_response(device.public)}
    assert await post(http, path, second, alice_token) == (200, {"success": True})
    foreign = {"publicKey": device.b64url, "response": mallory.v1_response(device.public)}
    assert await post(http, path, foreign, mallory_token) == (200, {"success": True})
    code, answer = await post(http, f"/v1/auth{kind}/request", body)
    assert code == 200
    token, response = authorized(answer)
    assert response == first["response"] and device.open(response) == alice.secret
    assert await user_of(http, token) == await user_of(http, alice_token)


async def test_concurrent_approvals_store_one_answer(http: httpx.AsyncClient) -> None:
    device = Requester()
    assert await post(http, "/v1/auth/request", {"publicKey": device.b64}) == (200, REQUESTED)
    phones = [Phone() for _ in range(6)]
    tokens = [await p.login(http) for p in phones]
    bodies = [{"publicKey": device.b64, "response": p.v1_response(device.public)} for p in phones]
    replies = await asyncio.gather(
        *(post(http, "/v1/auth/response", b, t) for b, t in zip(bodies, tokens, strict=True))
    )
    assert replies == [(200, {"success": True})] * 6
    _, answer = await post(http, "/v1/auth/request", {"publicKey": device.b64})
    token, response = authorized(answer)
    winner = [b["response"] for b in bodies].index(response)
    assert device.open(response) == phones[winner].secret
    assert await user_of(http, token) == await user_of(http, tokens[winner])


def key_with_url_letters() -> tuple[bytes, str, str]:
    """A key whose base64 has ``+`` or ``/`` (so base64url differs), both spellings."""
    while True:
        raw = os.urandom(32)
        std = b64(raw)
        if "+" in std or "/" in std:
            url = base64.urlsafe_b64encode(raw).decode()
            return raw, std, url


@pytest.mark.parametrize("kind", ["", "/account"])
async def test_spellings_of_one_key_name_one_request(http: httpx.AsyncClient, kind: str) -> None:
    _, std, url = key_with_url_letters()
    unpadded = url.rstrip("=")
    path = f"/v1/auth{kind}/request"
    assert await post(http, path, {"publicKey": unpadded}) == (200, REQUESTED)
    if not kind:
        assert await status(http, std) == {"status": "pending", "supportsV2": False}
        assert await status(http, url) == {"status": "pending", "supportsV2": False}
    phone = Phone()
    token = await phone.login(http)
    approve = {"publicKey": std, "response": "opaque answer"}
    assert await post(http, f"/v1/auth{kind}/response", approve, token) == (200, {"success": True})
    for spelling in (std, url, unpadded, std.rstrip("=")):
        code, answer = await post(http, path, {"publicKey": spelling})
        assert code == 200
        assert authorized(answer)[1] == "opaque answer"


async def test_supports_v2_comes_from_the_first_post(http: httpx.AsyncClient) -> None:
    one, two = Requester(), Requester()
    await post(http, "/v1/auth/request", {"publicKey": one.b64, "supportsV2": True})
    await post(http, "/v1/auth/request", {"publicKey": one.b64, "supportsV2": False})
    await post(http, "/v1/auth/request", {"publicKey": one.b64})
    assert await status(http, one.b64) == {"status": "pending", "supportsV2": True}
    await post(http, "/v1/auth/request", {"publicKey": two.b64, "supportsV2": None})
    await post(http, "/v1/auth/request", {"publicKey": two.b64, "supportsV2": True})
    assert await status(http, two.b64) == {"status": "pending", "supportsV2": False}


BAD_KEYS = [
    "",
    "AAAA",
    b64(bytes(31)),
    b64(bytes(33)),
    b64(bytes(32))[:-2],  # 42 characters: decodes to 31 bytes
    "not base64 at all!!",
    b64(bytes(32)) + "==",
    "\u00e9" * 44,
    "A" * 5000,
]


@pytest.mark.parametrize("kind", ["", "/account"])
async def test_request_errors(http: httpx.AsyncClient, kind: str) -> None:
    path = f"/v1/auth{kind}/request"
    for key in BAD_KEYS:
        assert await post(http, path, {"publicKey": key}) == (401, INVALID_KEY), key
    for body in ({}, {"publicKey": None}, {"publicKey": 32}, {"publicKey": ["x"]}):
        assert await post(http, path, body) == (400, invalid("publicKey")), body
    for raw in (b"", b"[1]", b"{"):
        reply = await http.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"] == "Error"


async def test_terminal_request_refuses_a_bad_supports_v2(http: httpx.AsyncClient) -> None:
    key = Requester().b64
    values: list[Any] = ["yes", 1, 0, {}, []]
    for value in values:
        reply = await post(http, "/v1/auth/request", {"publicKey": key, "supportsV2": value})
        assert reply == (400, invalid("supportsV2"))
    assert await status(http, key) == NOT_FOUND


async def test_status_errors(http: httpx.AsyncClient) -> None:
    for key in BAD_KEYS:
        assert await status(http, key) == NOT_FOUND
    assert await status(http, Requester().b64) == NOT_FOUND
    reply = await http.get("/v1/auth/request/status")
    assert (reply.status_code, reply.json()) == (400, invalid("publicKey"))


@pytest.mark.parametrize("kind", ["", "/account"])
async def test_response_errors(http: httpx.AsyncClient, kind: str) -> None:
    path = f"/v1/auth{kind}/response"
    device = Requester()
    await post(http, f"/v1/auth{kind}/request", {"publicKey": device.b64})
    token = await Phone().login(http)
    good = {"publicKey": device.b64, "response": "r" * 4096}
    assert await post(http, path, good) == (401, {"error": "Missing authorization header"})
    assert await post(http, path, good, "not.a.token") == (401, {"error": "Invalid token"})
    for key in BAD_KEYS:
        assert await post(http, path, {**good, "publicKey": key}, token) == (401, INVALID_KEY)
    for body in ({"response": "r"}, {"publicKey": 7, "response": "r"}):
        assert await post(http, path, body, token) == (400, invalid("publicKey"))
    for response in (None, 5, "", "r" * 4097):
        reply = await post(http, path, {**good, "response": response}, token)
        assert reply == (400, invalid("response")), response
    reply = await post(http, path, {**good, "response": "nul\x00"}, token)
    assert reply == (
        400,
        {"error": "Error", "message": "NUL characters are not accepted", "statusCode": 400},
    )  # refused by the core
    missing = {"publicKey": Requester().b64, "response": "r"}
    assert await post(http, path, missing, token) == (404, {"error": "Request not found"})
    # nothing above changed the request; the cap itself is accepted
    assert await post(http, f"/v1/auth{kind}/request", {"publicKey": device.b64}) == (
        200,
        REQUESTED,
    )
    assert await post(http, path, good, token) == (200, {"success": True})
    _, answer = await post(http, f"/v1/auth{kind}/request", {"publicKey": device.b64})
    assert authorized(answer)[1] == "r" * 4096


async def test_polls_are_never_refused(http: httpx.AsyncClient) -> None:
    key = Requester().b64
    replies = await asyncio.gather(
        *(post(http, "/v1/auth/request", {"publicKey": key}) for _ in range(60))
    )
    assert replies == [(200, REQUESTED)] * 60


async def count(server: ServerHarness, table: sa.Table) -> int:
    return int(await server.app.db.fetch_val(sa.select(sa.func.count()).select_from(table)))


@pytest.mark.parametrize("kind", ["", "/account"])
async def test_unanswered_requests_expire(
    server: ServerHarness, http: httpx.AsyncClient, clock: FakeClock, kind: str
) -> None:
    device = Requester()
    path = f"/v1/auth{kind}/request"
    assert await post(http, path, {"publicKey": device.b64, "supportsV2": True}) == (
        200,
        REQUESTED,
    )
    token = await Phone().login(http)
    approve = {"publicKey": device.b64, "response": "late"}
    clock.advance(REQUEST_TTL_MS - 1)
    if not kind:
        assert await status(http, device.b64) == {"status": "pending", "supportsV2": True}
    clock.advance(1)
    if not kind:
        assert await status(http, device.b64) == NOT_FOUND
    reply = await post(http, f"/v1/auth{kind}/response", approve, token)
    assert reply == (404, {"error": "Request not found"})
    # the next poll starts over: a new request, with the new poll's supportsV2
    assert await post(http, path, {"publicKey": device.b64}) == (200, REQUESTED)
    if not kind:
        assert await status(http, device.b64) == {"status": "pending", "supportsV2": False}
    assert await post(http, f"/v1/auth{kind}/response", approve, token) == (200, {"success": True})
    _, answer = await post(http, path, {"publicKey": device.b64})
    assert authorized(answer)[1] == "late"


@pytest.mark.parametrize("kind", ["", "/account"])
async def test_answered_requests_expire_after_approval(
    server: ServerHarness, http: httpx.AsyncClient, clock: FakeClock, kind: str
) -> None:
    device = Requester()
    path = f"/v1/auth{kind}/request"
    await post(http, path, {"publicKey": device.b64})
    clock.advance(REQUEST_TTL_MS - 1000)  # approved late: the answer still lives its own span
    token = await Phone().login(http)
    approve = {"publicKey": device.b64, "response": "answer"}
    assert await post(http, f"/v1/auth{kind}/response", approve, token) == (200, {"success": True})
    clock.advance(ANSWERED_TTL_MS - 1)
    _, answer = await post(http, path, {"publicKey": device.b64})
    assert authorized(answer)[1] == "answer"
    clock.advance(1)
    if not kind:
        assert await status(http, device.b64) == NOT_FOUND
    assert await post(http, path, {"publicKey": device.b64}) == (200, REQUESTED)
    if not kind:
        assert await status(http, device.b64) == {"status": "pending", "supportsV2": False}


async def test_prune_deletes_only_expired_requests(
    server: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    service = server.app.service(AccountsService)
    old_terminal, old_account = Requester(), Requester()
    await post(http, "/v1/auth/request", {"publicKey": old_terminal.b64})
    await post(http, "/v1/auth/account/request", {"publicKey": old_account.b64})
    clock.advance(REQUEST_TTL_MS)
    fresh = Requester()
    await post(http, "/v1/auth/request", {"publicKey": fresh.b64})
    assert (await count(server, terminal_requests), await count(server, account_requests)) == (2, 1)
    await service.prune()
    assert (await count(server, terminal_requests), await count(server, account_requests)) == (1, 0)
    assert await status(http, fresh.b64) == {"status": "pending", "supportsV2": False}
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "accounts-prune" in names
