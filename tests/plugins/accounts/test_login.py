"""POST /v1/auth in the accounts plugin: keyed accounts (also rows written before the plugin
existed), replays refused for 30 days, every documented error."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from happy_socket_accounts import AccountsService
from happy_socket_accounts.login import REPLAY_WINDOW_MS, prune_replays
from happy_socket_accounts.tables import auth_replays

from happy_socket.storage import Database, accounts
from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory

from .support import FakeClock, Phone, b64, make_app


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


async def test_login_answers_a_token_of_the_keys_account(
    server: ServerHarness, http: httpx.AsyncClient
) -> None:
    phone = Phone()
    reply = await http.post("/v1/auth", json=phone.login_body())
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"success", "token"} and body["success"] is True
    user_id = server.app.tokens.verify(body["token"])
    assert user_id is not None and await server.app.accounts.exists(user_id)
    # the same key, again and concurrently: one account; another key: another account
    again = await asyncio.gather(*(phone.login(http) for _ in range(5)))
    assert {server.app.tokens.verify(t) for t in again} == {user_id}
    assert server.app.tokens.verify(await Phone().login(http)) != user_id
    stored = await server.app.db.fetch_val(
        sa.select(accounts.c.public_key).where(accounts.c.id == user_id)
    )
    assert stored == b64(bytes(phone.signing.verify_key))


async def test_accounts_keyed_before_the_plugin_keep_their_id(
    server: ServerHarness, http: httpx.AsyncClient
) -> None:
    """A database written by earlier versions: the key sits in the core's accounts row."""
    phone = Phone()
    legacy = accounts.insert().values(
        id="legacy-account",
        seq=7,
        public_key=b64(bytes(phone.signing.verify_key)),
        created_at=1,
        updated_at=1,
    )
    await server.app.db.execute(legacy)
    token = await phone.login(http)
    assert server.app.tokens.verify(token) == "legacy-account"
    service = server.app.service(AccountsService)
    assert await service.for_public_key(bytes(phone.signing.verify_key)) == "legacy-account"
    reply = await http.get("/v1/account/profile", headers={"Authorization": f"Bearer {token}"})
    assert reply.json()["id"] == "legacy-account"


async def test_replays_are_refused_for_the_window(
    server: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    body = Phone().login_body()
    assert (await http.post("/v1/auth", json=body)).status_code == 200
    replay = await http.post("/v1/auth", json=body)
    assert (replay.status_code, replay.json()) == (401, {"error": "Challenge already used"})
    clock.advance(REPLAY_WINDOW_MS)
    await prune_replays(server.app)
    count = sa.select(sa.func.count()).select_from(auth_replays)
    assert await server.app.db.fetch_val(count) == 1  # not older than the window yet
    clock.advance(1)
    await prune_replays(server.app)
    assert await server.app.db.fetch_val(count) == 0
    assert (await http.post("/v1/auth", json=body)).status_code == 200


async def test_login_errors(http: httpx.AsyncClient) -> None:
    phone, other = Phone(), Phone()
    good = phone.login_body()
    invalid_request = (400, {"error": "Invalid request"})
    invalid_signature = (401, {"error": "Invalid signature"})
    cases = [
        ({}, invalid_request),
        ({k: v for k, v in good.items() if k != "signature"}, invalid_request),
        ({**good, "publicKey": 5}, invalid_request),
        ({**good, "challenge": ""}, invalid_request),
        ({**good, "signature": "A" * 4097}, invalid_request),
        ({**good, "publicKey": "not base64!"}, invalid_signature),
        ({**good, "publicKey": b64(os.urandom(31))}, invalid_signature),
        ({**good, "signature": b64(os.urandom(64))}, invalid_signature),
        ({**good, "publicKey": other.login_body()["publicKey"]}, invalid_signature),
        ({**good, "challenge": b64(b"another challenge")}, invalid_signature),
    ]
    for body, expected in cases:
        reply = await http.post("/v1/auth", json=body)
        assert (reply.status_code, reply.json()) == expected, body
    reply = await http.post("/v1/auth", content=b"[]")
    assert reply.status_code == 400
    # none of the refusals used up the triple
    assert (await http.post("/v1/auth", json=good)).status_code == 200


async def test_url_safe_key_spelling_is_not_a_login_key(http: httpx.AsyncClient) -> None:
    """Login bodies are standard base64 (what the clients send); base64url is refused."""
    while True:
        phone = Phone()
        body = phone.login_body()
        if "+" in body["publicKey"] or "/" in body["publicKey"]:
            break
    url_key = base64.urlsafe_b64encode(bytes(phone.signing.verify_key)).decode()
    reply = await http.post("/v1/auth", json={**body, "publicKey": url_key})
    assert (reply.status_code, reply.json()) == (401, {"error": "Invalid signature"})


async def test_replays_recorded_by_earlier_versions_still_count(
    make_server: ServerFactory, sqlite_url: str
) -> None:
    """Earlier versions kept ``auth_replays`` under the ``http`` plugin: the table is reused."""
    phone = Phone()
    body = phone.login_body()
    raw = [base64.b64decode(body[k]) for k in ("publicKey", "challenge", "signature")]
    digest = hashlib.sha256(b"\0".join(raw)).hexdigest()
    old = Database(sqlite_url)
    await old.connect()
    try:
        await old.execute(
            "CREATE TABLE auth_replays (digest VARCHAR(64) NOT NULL PRIMARY KEY, "
            "seen_at BIGINT NOT NULL)"
        )
        await old.execute("CREATE INDEX ix_auth_replays_seen_at ON auth_replays (seen_at)")
        await old.execute(
            f"INSERT INTO auth_replays (digest, seen_at) VALUES ('{digest}', {FakeClock().now})"
        )
    finally:
        await old.disconnect()
    server = await make_server(db=sqlite_url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.post("/v1/auth", json=body)
        assert (reply.status_code, reply.json()) == (401, {"error": "Challenge already used"})
        assert (await http.post("/v1/auth", json=phone.login_body())).status_code == 200


ED25519_L = 2**252 + 27742317777372353535851937790883648493  # the group order


async def test_small_order_keys_and_non_canonical_signatures_are_refused(
    http: httpx.AsyncClient,
) -> None:
    identity = bytes([1]) + bytes(31)  # the neutral point: "verifies" anything permissively
    for public_key, signature in (
        (identity, identity + bytes(32)),
        (bytes(32), bytes(64)),
        (bytes([0xFF] * 32), bytes(64)),  # not a canonical point encoding
    ):
        body = {
            "publicKey": b64(public_key),
            "challenge": b64(b"c" * 32),
            "signature": b64(signature),
        }
        reply = await http.post("/v1/auth", json=body)
        assert (reply.status_code, reply.json()) == (401, {"error": "Invalid signature"})
    # a valid signature with S + L (the same signature, written differently) is refused, and a
    # replay of a challenge with another encoding of its signature is "already used"
    phone = Phone()
    body = phone.login_body()
    signature = base64.b64decode(body["signature"])
    s = int.from_bytes(signature[32:], "little") + ED25519_L
    if s < 2**256:
        malleated = signature[:32] + s.to_bytes(32, "little")
        reply = await http.post("/v1/auth", json={**body, "signature": b64(malleated)})
        assert (reply.status_code, reply.json()) == (401, {"error": "Invalid signature"})
    assert (await http.post("/v1/auth", json=body)).status_code == 200
    reply = await http.post("/v1/auth", json=body)
    assert (reply.status_code, reply.json()) == (401, {"error": "Challenge already used"})


async def test_a_login_missing_a_field_is_a_400_whatever_the_others_hold(
    http: httpx.AsyncClient,
) -> None:
    body = Phone().login_body()
    for missing in ("publicKey", "challenge", "signature"):
        partial = {k: v for k, v in body.items() if k != missing}
        partial["publicKey"] = partial.get("publicKey", "not base64!")
        if missing == "publicKey":
            del partial["publicKey"]
        reply = await http.post("/v1/auth", json=partial)
        assert (reply.status_code, reply.json()) == (400, {"error": "Invalid request"}), missing
    bad_first = {**body, "publicKey": "not base64!", "signature": None}
    reply = await http.post("/v1/auth", json=bad_first)
    assert (reply.status_code, reply.json()) == (400, {"error": "Invalid request"})
