"""``happy-socket machines create``: create or load a machine for a user, printing JSON."""

from __future__ import annotations

from typing import Any

import click

from happy_socket import App, Conflict, Settings
from happy_socket.cli import app_options, echo_json, run_with_app


@click.group("machines")
def machines_group() -> None:
    """Machines (daemons) of users."""


@machines_group.command("create")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option("--id", "machine_id", required=True, help="The machine id.")
@click.option("--metadata", default="", show_default=True, help="Opaque metadata string.")
@app_options
def create(user_id: str, machine_id: str, metadata: str, settings: Settings) -> None:
    """Create (or load) machine ID of USER; prints {"created", "machine"}."""

    async def work(app: App) -> dict[str, Any]:
        service = app.service("machines")
        if service is None:
            raise click.ClickException("The machines plugin is not enabled.")
        try:
            machine, created = await service.create_or_load(user_id, machine_id, metadata)
        except Conflict as exc:
            raise click.ClickException(str(exc.message)) from None
        return {"created": created, "machine": machine}

    echo_json(run_with_app(settings, work))
