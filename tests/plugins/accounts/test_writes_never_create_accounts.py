"""A write never creates an account: with the account row gone, every write is refused whole.

The positive account cache still lets the token through (the row was removed behind the
server's back, the worst case for the storage layer), so each write reaches the database: its
seq allocation (an UPDATE of the account row, never an upsert) finds no row, the unit or the
one-statement write rolls back, and the client is told ``Invalid token`` — no account row, no
half write.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import sqlalchemy as sa
from happy_socket_artifacts.tables import artifacts
from happy_socket_kv.tables import kv_entries
from happy_socket_push.tables import push_tokens
from happy_socket_sessions.tables import session_messages, sessions
from happy_socket_usage.tables import usage_reports

from happy_socket.storage import accounts
from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory

REFUSED = {"result": "error", "message": "Invalid token"}
HTTP_REFUSED = (401, {"error": "Invalid token"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ARTIFACT = {"header": b64(b"h"), "body": b64(b"b"), "dataEncryptionKey": b64(b"k")}


async def count(server: ServerHarness, table: sa.Table, *where: Any) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    return int(await server.app.db.fetch_val(query.where(*where) if where else query))


async def account_row(server: ServerHarness, user: str) -> bool:
    return await count(server, accounts, accounts.c.id == user) == 1


async def test_every_write_of_a_user_without_account_row_is_refused_whole(
    make_server: ServerFactory, db_url: str
) -> None:
    server = await make_server(db=db_url)
    token = await server.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        created = await http.post("/v1/sessions", json={"tag": "t", "metadata": "m0"})
        sid = created.json()["session"]["id"]
        sock = await server.client("alice", client_type="session-scoped", session_id=sid)
        app = await server.client("alice")
        # only the account row goes; the cached "alice exists" still admits her token
        await server.app.db.execute(accounts.delete().where(accounts.c.id == "alice"))

        assert await sock.call("message", {"sid": sid, "message": "x", "localId": "l1"}) == REFUSED
        assert await sock.call("message", {"sid": sid, "message": "y"}) == REFUSED
        update = {"sid": sid, "metadata": "m1", "expectedVersion": 0}
        assert await sock.call("update-metadata", update) == REFUSED
        report = {"key": "k", "tokens": {"total": 1}, "cost": {"total": 1}, "sessionId": sid}
        assert await sock.call("usage-report", report) == {
            "success": False,
            "error": "Invalid token",
        }
        assert await app.call("artifact-create", {"id": "art-1", **ARTIFACT}) == REFUSED

        batch = {
            "messages": [{"localId": "b1", "content": "c1"}, {"localId": "b2", "content": "c2"}]
        }
        for method, path, body in (
            ("POST", f"/v3/sessions/{sid}/messages", batch),
            ("POST", "/v1/artifacts", {"id": "0a1b2c3d-0000-4000-8000-00000000a001", **ARTIFACT}),
            ("POST", "/v1/kv", {"mutations": [{"key": "k", "value": b64(b"v"), "version": -1}]}),
            ("POST", "/v1/push-tokens", {"token": "ExponentPushToken[x]"}),
            ("POST", "/v1/account/settings", {"settings": "s", "expectedVersion": 0}),
            ("POST", "/v1/sessions", {"tag": "t2", "metadata": "m"}),
            ("POST", "/v1/machines", {"id": "m1", "metadata": "m"}),
        ):
            resp = await http.request(method, path, json=body)
            assert (resp.status_code, resp.json()) == HTTP_REFUSED, (path, resp.text)

    assert not await account_row(server, "alice")
    # nothing of any write is left: no message, no seq moved, no row of any plugin
    assert await count(server, session_messages) == 0
    row = await server.app.db.fetch_one(sa.select(sessions).where(sessions.c.id == sid))
    assert row is not None
    assert (row["seq"], row["metadata"], row["metadata_version"]) == (0, "m0", 0)
    assert await count(server, sessions) == 1
    for table in (artifacts, kv_entries, usage_reports, push_tokens):
        assert await count(server, table) == 0, table.name
    assert await app.nothing("update")


async def test_a_deleted_accounts_writes_are_refused_and_leave_no_account(
    make_server: ServerFactory, db_url: str
) -> None:
    """Through the front door: after ``delete_account`` the token itself is refused."""
    from happy_socket_accounts import AccountsService

    server = await make_server(db=db_url)
    token = await server.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        created = await http.post("/v1/sessions", json={"tag": "t", "metadata": "m0"})
        sid = created.json()["session"]["id"]
        assert await server.app.service(AccountsService).delete_account("alice") is True
        for path, body in (
            (f"/v3/sessions/{sid}/messages", {"messages": [{"localId": "a", "content": "c"}]}),
            ("/v1/sessions", {"tag": "t", "metadata": "m"}),
            ("/v1/artifacts", {"id": "0a1b2c3d-0000-4000-8000-00000000a001", **ARTIFACT}),
            ("/v1/kv", {"mutations": [{"key": "k", "value": b64(b"v"), "version": -1}]}),
        ):
            resp = await http.post(path, json=body)
            assert (resp.status_code, resp.json()) == HTTP_REFUSED, path
    assert not await account_row(server, "alice")
    assert await count(server, sessions) == 0


async def test_library_writes_for_an_unknown_user_raise_and_store_nothing(
    make_server: ServerFactory, db_url: str
) -> None:
    import pytest

    from happy_socket import AccountMissing, UserScopedOnly

    server = await make_server(db=db_url)
    app = server.app
    with pytest.raises(AccountMissing):
        await app.service("sessions").create_or_load("ghost", "t", "m")
    with pytest.raises(AccountMissing):
        await app.service("machines").create_or_load("ghost", "m1", "m")
    with pytest.raises(AccountMissing):
        await app.emit_update("ghost", {"t": "probe"}, UserScopedOnly())
    assert await count(server, sessions) == 0
    assert not await account_row(server, "ghost")
    # creating the account is explicit
    await app.accounts.ensure("ghost")
    session, created = await app.service("sessions").create_or_load("ghost", "t", "m")
    assert created and session["metadata"] == "m"
