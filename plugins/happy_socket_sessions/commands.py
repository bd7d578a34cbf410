"""``happy-socket sessions create``: create or load a session for a user, printing JSON."""

from __future__ import annotations

from typing import Any

import click

from happy_socket import App, Settings
from happy_socket.cli import app_options, echo_json, run_with_app


@click.group("sessions")
def sessions_group() -> None:
    """Sessions of users."""


@sessions_group.command("create")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option("--tag", default=None, help="Session tag (default: a new random tag).")
@click.option("--metadata", default="", show_default=True, help="Opaque metadata string.")
@app_options
def create(user_id: str, tag: str | None, metadata: str, settings: Settings) -> None:
    """Create (or load, by tag) a session of USER; prints {"created", "session"}."""
    from happy_socket import new_id

    async def work(app: App) -> dict[str, Any]:
        service = app.service("sessions")
        if service is None:
            raise click.ClickException("The sessions plugin is not enabled.")
        session, created = await service.create_or_load(user_id, tag or new_id(), metadata)
        return {"created": created, "session": session}

    echo_json(run_with_app(settings, work))
