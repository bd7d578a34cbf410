"""Accounts: Ed25519 login, terminal and account linking, profile and settings.

Routes are listed in docs/http/accounts.md. Other plugins use the published
:class:`AccountsService` (``app.service(AccountsService)``).
"""

from __future__ import annotations

import asyncio
import logging

import click
import sqlalchemy as sa

from happy_socket import App, Routes, Services, hookimpl

from . import http
from .login import login, prune_replays
from .service import AccountsService
from .tables import TABLES

__all__ = ["AccountsService"]

log = logging.getLogger("happy_socket.accounts")

PRUNE_LINKS_EVERY_S = 60
PRUNE_REPLAYS_EVERY = 6 * 60  # in link prunes: every 6 hours


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("accounts", AccountsService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    for table in TABLES:
        table.to_metadata(metadata)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .commands import accounts_group

    cli.add_command(accounts_group)


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add("/v1/auth", login, methods=["POST"])
    auth = routes.group("/v1/auth")
    auth.add("/request", http.terminal_request, methods=["POST"])
    auth.add("/request/status", http.terminal_status, methods=["GET"])
    auth.add("/response", http.terminal_response, methods=["POST"], auth="bearer")
    auth.add("/account/request", http.account_request, methods=["POST"])
    auth.add("/account/response", http.account_response, methods=["POST"], auth="bearer")
    account = routes.group("/v1/account", auth="bearer")
    account.add("/profile", http.profile, methods=["GET"])
    account.add("/settings", http.get_settings, methods=["GET"])
    account.add("/settings", http.set_settings, methods=["POST"])


async def _prune_forever(app: App) -> None:
    """Delete expired link requests every minute and old login replays every 6 hours."""
    service = app.service(AccountsService)
    rounds = 0
    while True:
        try:
            await service.prune()
            if rounds % PRUNE_REPLAYS_EVERY == 0:
                await prune_replays(app)
        except Exception as exc:  # the database is away: try again next round
            log.warning("pruning expired link requests and login replays failed: %r", exc)
        rounds += 1
        await asyncio.sleep(PRUNE_LINKS_EVERY_S)


@hookimpl
def startup(app: App) -> None:
    app.spawn(_prune_forever(app), name="accounts-prune")
