"""``happy-socket accounts delete``: operator access to accounts, printing JSON."""

from __future__ import annotations

import click

from happy_socket import App, Settings
from happy_socket.cli import app_options, echo_json, run_with_app

from .service import AccountsService

ACCOUNT_NOT_FOUND = "Account not found"


@click.group("accounts")
def accounts_group() -> None:
    """Accounts of users."""


@accounts_group.command("delete")
@click.argument("user_id")
@app_options
def delete(user_id: str, settings: Settings) -> None:
    """Delete the account USER_ID and everything it owns; revoke its tokens and sockets.

    Give the deployment's --db, --redis and --redis-channel: with Redis every server process
    closes the user's sockets at once, without it within 15 s.
    """

    async def work(app: App) -> bool:
        return await app.service(AccountsService).delete_account(user_id)

    if not run_with_app(settings, work):
        raise click.ClickException(ACCOUNT_NOT_FOUND)
    echo_json({"success": True})
