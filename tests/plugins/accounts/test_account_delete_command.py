"""``happy-socket accounts delete USER_ID`` and ``AccountsService.delete_account``: the account
row and everything the user owns go, in every plugin; other users keep everything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner, Result
from happy_socket_access_keys.tables import access_keys
from happy_socket_accounts import AccountsService
from happy_socket_accounts.tables import account_settings, terminal_requests
from happy_socket_artifacts import ArtifactsService
from happy_socket_artifacts.tables import artifacts
from happy_socket_kv import KvService, Mutation
from happy_socket_kv.tables import kv_entries
from happy_socket_machines.tables import machines
from happy_socket_push.service import PushTokens
from happy_socket_push.tables import push_tokens
from happy_socket_sessions.tables import session_messages, sessions
from happy_socket_usage.service import UsageService
from happy_socket_usage.tables import usage_reports

from happy_socket import App, Settings, create_app
from happy_socket.cli import cli
from happy_socket.storage import accounts

SECRET = "test-secret-0123456789abcdef0123456789"
OWNED = {
    "accounts": (accounts, accounts.c.id),
    "sessions": (sessions, sessions.c.account_id),
    "machines": (machines, machines.c.account_id),
    "artifacts": (artifacts, artifacts.c.account_id),
    "access_keys": (access_keys, access_keys.c.account_id),
    "usage_reports": (usage_reports, usage_reports.c.account_id),
    "kv_entries": (kv_entries, kv_entries.c.account_id),
    "push_tokens": (push_tokens, push_tokens.c.account_id),
    "account_settings": (account_settings, account_settings.c.account_id),
    "auth_terminal_requests": (terminal_requests, terminal_requests.c.response_account_id),
}


async def populate(app: App, user: str, n: int) -> None:
    """One of everything a user can own."""
    sessions_svc, machines_svc = app.service("sessions"), app.service("machines")
    session, _ = await sessions_svc.create_or_load(user, "tag", "meta")
    for i in range(3):
        await sessions_svc.add_message(user, session["id"], f"msg {i}", f"l{i}")
    await machines_svc.create_or_load(user, f"machine-{n}", "meta")
    await app.service(ArtifactsService).create(user, f"artifact-{n}", b"h", b"b", b"k")
    await app.service("access-keys").create(user, session["id"], f"machine-{n}", "key")
    usage = app.service(UsageService)
    await usage.save(user, session["id"], "k", {"total": 1}, {"total": 1})
    await usage.save(user, None, "k", {"total": 1}, {"total": 1})
    await app.service(KvService).mutate(user, [Mutation("k", b"v", -1)])
    await app.service(PushTokens).register(user, f"ExponentPushToken[{n}]")
    service = app.service(AccountsService)
    await service.set_settings(user, "settings", 0)
    link = bytes([n]) * 32
    await service.terminal_links.poll(link.hex())
    await service.terminal_links.approve(link.hex(), user, "boxed answer")


async def owned_by(app: App, user: str) -> dict[str, int]:
    counts = {}
    for name, (table, column) in OWNED.items():
        query = sa.select(sa.func.count()).select_from(table).where(column == user)
        counts[name] = int(await app.db.fetch_val(query))
    owned = sa.select(sessions.c.id).where(sessions.c.account_id == user)
    query = sa.select(sa.func.count()).select_from(session_messages)
    counts["session_messages"] = int(
        await app.db.fetch_val(query.where(session_messages.c.session_id.in_(owned)))
    )
    return counts


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["accounts", *args])


async def test_cli_deletes_the_account_and_everything_it_owns(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    app = create_app(Settings(db=db, secret=SECRET))
    await app.startup()
    try:
        service = app.service(AccountsService)
        alice = await service.for_public_key(b"\x01" * 32)  # an account with a login key
        await app.accounts.ensure("bob")
        await populate(app, alice, 1)
        await populate(app, "bob", 2)
        before = await owned_by(app, alice)
        assert all(before.values()), before  # one of everything to delete
        bob_before = await owned_by(app, "bob")

        args = ["delete", alice, "--db", db, "--secret", SECRET]
        result = await asyncio.to_thread(run, *args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"success": True}

        assert set((await owned_by(app, alice)).values()) == {0}
        assert await owned_by(app, "bob") == bob_before
        # the login key was the account's: logging in again makes a new, empty account
        fresh = await service.for_public_key(b"\x01" * 32)
        assert fresh != alice
        assert await app.service("sessions").list(fresh) == []

        again = await asyncio.to_thread(run, *args)
        assert again.exit_code == 1
        assert "Error: Account not found" in again.output
    finally:
        await app.shutdown()


def test_cli_usage_errors(tmp_path: Path) -> None:
    missing = run("delete", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert missing.exit_code == 2 and "USER_ID" in missing.output
    assert "delete" in run("--help").output


async def test_delete_account_finishes_an_interrupted_delete(tmp_path: Path) -> None:
    """The row went but the data stayed (a crash between the two units): run it again."""
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'x.db'}", secret=SECRET))
    await app.startup()
    try:
        await app.accounts.ensure("carol")
        await populate(app, "carol", 3)
        await app.db.execute(accounts.delete().where(accounts.c.id == "carol"))
        assert await app.service(AccountsService).delete_account("carol") is False
        assert set((await owned_by(app, "carol")).values()) == {0}
    finally:
        await app.shutdown()


async def test_library_delete_on_both_databases(db_url: str) -> None:
    app = create_app(Settings(db=db_url, secret=SECRET))
    await app.startup()
    try:
        await app.accounts.ensure("dave")
        await populate(app, "dave", 4)
        counts: Any = await owned_by(app, "dave")
        assert all(counts.values())
        assert await app.service(AccountsService).delete_account("dave") is True
        assert set((await owned_by(app, "dave")).values()) == {0}
        assert not await app.accounts.exists("dave")
    finally:
        await app.shutdown()
