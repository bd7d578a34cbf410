"""``happy-socket sessions create|list|delete``: operator access to sessions, printing JSON."""

from __future__ import annotations

from typing import Any

import click

from happy_socket import AccountMissing, App, Settings
from happy_socket.cli import app_options, echo_json, run_with_app

from .service import LIST_LIMIT, SessionsService

DELETE_NOT_FOUND = "Session not found or not owned by user"
ACCOUNT_MISSING = "Account not found (happy-socket token USER creates it)"


@click.group("sessions")
def sessions_group() -> None:
    """Sessions of users."""


def _service(app: App) -> SessionsService:
    service: SessionsService | None = app.service("sessions")
    if service is None:
        raise click.ClickException("The sessions plugin is not enabled.")
    return service


@sessions_group.command("create")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option("--tag", default=None, help="Session tag (default: a new random tag).")
@click.option("--metadata", default="", show_default=True, help="Opaque metadata string.")
@app_options
def create(user_id: str, tag: str | None, metadata: str, settings: Settings) -> None:
    """Create (or load, by tag) a session of USER's account; prints {"created", "session"}."""
    from happy_socket import new_id

    async def work(app: App) -> dict[str, Any]:
        try:
            session, created = await _service(app).create_or_load(
                user_id, tag or new_id(), metadata
            )
        except AccountMissing:
            raise click.ClickException(ACCOUNT_MISSING) from None
        return {"created": created, "session": session}

    echo_json(run_with_app(settings, work))


@sessions_group.command("list")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=LIST_LIMIT, show_default=True, help="At most."
)
@app_options
def list_sessions(user_id: str, limit: int, settings: Settings) -> None:
    """List the sessions of USER, most recently updated first; prints {"sessions": [...]}."""

    async def work(app: App) -> dict[str, Any]:
        return {"sessions": await _service(app).list(user_id, limit)}

    echo_json(run_with_app(settings, work))


@sessions_group.command("delete")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.argument("session_id")
@app_options
def delete(user_id: str, session_id: str, settings: Settings) -> None:
    """Delete SESSION_ID of USER with its messages, usage reports and access keys."""

    async def work(app: App) -> bool:
        return await _service(app).delete(user_id, session_id)

    if not run_with_app(settings, work):
        raise click.ClickException(DELETE_NOT_FOUND)
    echo_json({"success": True})
