"""Deleting an account revokes its tokens and closes its sockets, without a restart.

On the process that deletes it: at once. On a process that is not told (no Redis, the
``accounts delete`` command run beside a server): within ``Accounts.known_ttl_ms``. Known
users still connect without a database query, and a reconnect storm shares one query.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from happy_socket_accounts import AccountsService

from happy_socket import App, Settings, create_app, hookimpl
from happy_socket.cli import cli
from happy_socket.storage import accounts
from happy_socket.storage.accounts import KNOWN_TTL_MS
from happy_socket.testing import ServerHarness, TestSocket
from tests.conftest import ServerFactory

SECRET = "test-secret-0123456789abcdef0123456789"
INVALID_HTTP = (401, {"error": "Invalid token"})
INVALID_SOCKET = "Invalid authentication token"


async def closed(sock: TestSocket, within: float) -> bool:
    """True when the server closed ``sock`` within ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while sock.client.connected:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def get_sessions(server: ServerHarness, token: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        resp = await http.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.json()


def test_the_documented_bound() -> None:
    assert KNOWN_TTL_MS == 15_000  # docs/security.md and docs/architecture.md say 15 s


async def test_the_deleting_process_refuses_the_token_and_closes_sockets_at_once(
    make_server: ServerFactory, db_url: str
) -> None:
    server = await make_server(db=db_url)
    token = await server.token("alice")
    app_sock = await server.client("alice")
    daemon = await server.client("alice", client_type="machine-scoped", machine_id="m1")
    bob = await server.client("bob")
    assert (await get_sessions(server, token))[0] == 200

    assert await server.app.service(AccountsService).delete_account("alice") is True
    assert await closed(app_sock, 1.0) and await closed(daemon, 1.0)
    assert await get_sessions(server, token) == INVALID_HTTP
    assert await server.refusal({"token": token}) == INVALID_SOCKET
    # other users are untouched
    assert bob.client.connected and await bob.call("ping") == {}
    bob_token = await server.token("bob")
    assert (await get_sessions(server, bob_token))[0] == 200
    # a second delete finds nothing
    assert await server.app.service(AccountsService).delete_account("alice") is False


async def test_a_process_that_is_not_told_notices_within_the_bound(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """No Redis: the ``accounts delete`` command runs in its own process beside the server."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    app = create_app(Settings(db=db, secret=SECRET))
    app.accounts.known_ttl_ms = 500  # the bound, shortened for the test (15 s by default)
    server = await make_server(app=app)
    token = await server.token("alice")
    sock = await server.client("alice")
    assert (await get_sessions(server, token))[0] == 200

    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, cli, ["accounts", "delete", "alice", "--db", db, "--secret", SECRET]
    )
    assert result.exit_code == 0, result.output
    started = asyncio.get_running_loop().time()
    assert await closed(sock, 2.0)  # the sweep (every known_ttl_ms) found the account gone
    assert asyncio.get_running_loop().time() - started < 1.5
    assert await get_sessions(server, token) == INVALID_HTTP
    assert await server.refusal({"token": token}) == INVALID_SOCKET


async def test_an_expired_answer_is_checked_again(make_server: ServerFactory) -> None:
    """A token is refused once the cached answer is older than the bound, sweep or not."""
    server = await make_server()
    app = server.app
    app.accounts.known_ttl_ms = 1000
    token = await server.token("alice")
    assert (await get_sessions(server, token))[0] == 200
    await app.db.execute(accounts.delete().where(accounts.c.id == "alice"))  # behind its back
    assert (await get_sessions(server, token))[0] == 200  # still cached
    await asyncio.sleep(1.1)
    assert await get_sessions(server, token) == INVALID_HTTP


class Lookups:
    """Counts the account-existence queries of an app."""

    def __init__(self, app: App) -> None:
        self.count = 0
        real = app.db.fetch_one

        async def fetch_one(query: Any, values: Any = None) -> Any:
            if getattr(query, "is_select", False) and accounts in query.get_final_froms():
                self.count += 1
                await asyncio.sleep(0.05)  # a slow database: the storm piles up behind it
            return await real(query, values)

        app.db.fetch_one = fetch_one  # type: ignore[method-assign]


async def test_known_users_cost_no_query_and_a_storm_shares_one(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    token = await server.token("alice")
    lookups = Lookups(server.app)
    for _ in range(5):
        await server.client("alice")
    assert lookups.count == 0  # known since the token was issued
    server.app.accounts.forget("alice")
    socks = await asyncio.gather(*(server.connect({"token": token}) for _ in range(20)))
    assert all(s.client.connected for s in socks)
    assert lookups.count == 1


async def test_a_lookup_in_flight_when_the_account_is_deleted_caches_nothing(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    app = server.app
    await server.token("alice")
    lookups = Lookups(app)
    app.accounts.forget("alice")
    pending = asyncio.ensure_future(app.accounts.exists("alice"))
    await asyncio.sleep(0.01)  # the query is in flight
    app.accounts.forget("alice")  # a deletion notice arrives meanwhile
    assert await pending is True  # it read the row before the delete
    assert not app.accounts.is_known("alice")  # but that answer is not trusted afterwards
    assert lookups.count == 1


class HostAuth:
    """A host application's own tokens: ``host:<user>``."""

    @hookimpl(tryfirst=True)
    def authenticate(self, token: str) -> str | None:
        return token.removeprefix("host:") if token.startswith("host:") else None


async def test_a_host_hooks_users_get_their_account_on_authentication(
    make_server: ServerFactory,
) -> None:
    server = await make_server(plugins=[("host-auth", HostAuth())])
    sock = await server.connect({"token": "host:carol"}, user_id="carol")
    assert await server.app.accounts.exists("carol")
    session, created = await server.app.service("sessions").create_or_load("carol", "t", "m")
    assert created and session["metadata"] == "m"
    assert sock.client.connected


@pytest.mark.parametrize("deleted_first", [True, False])
async def test_the_sweep_closes_only_sockets_of_missing_accounts(
    make_server: ServerFactory, deleted_first: bool
) -> None:
    server = await make_server()
    alice, bob = await server.client("alice"), await server.client("bob")
    if deleted_first:
        await server.app.db.execute(accounts.delete().where(accounts.c.id == "alice"))
    assert await server.app.revocation.sweep() == (1 if deleted_first else 0)
    assert await closed(alice, 1.0) is deleted_first
    assert bob.client.connected


async def test_during_an_outage_a_recently_seen_user_is_still_admitted(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    app = server.app
    app.accounts.known_ttl_ms = 50
    await server.token("alice")
    await asyncio.sleep(0.1)  # the answer expired

    async def down(query: Any, values: Any = None) -> Any:
        raise ConnectionError("the database is away")

    app.db.fetch_one = down  # type: ignore[method-assign]
    assert await app.accounts.exists("alice") is True  # seen before: admitted
    with pytest.raises(ConnectionError):
        await app.accounts.exists("stranger")  # never seen: the error stands
    app.accounts.forget("alice")  # a deletion notice: no more benefit of the doubt
    with pytest.raises(ConnectionError):
        await app.accounts.exists("alice")
