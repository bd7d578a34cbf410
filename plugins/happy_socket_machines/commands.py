"""``happy-socket machines create|list|delete``: operator access to machines, printing JSON."""

from __future__ import annotations

from typing import Any

import click

from happy_socket import AccountMissing, App, Conflict, Settings
from happy_socket.cli import app_options, echo_json, run_with_app

from .service import MachinesService

MACHINE_NOT_FOUND = "Machine not found"
ACCOUNT_MISSING = "Account not found (happy-socket token USER creates it)"


@click.group("machines")
def machines_group() -> None:
    """Machines (daemons) of users."""


def _service(app: App) -> MachinesService:
    service: MachinesService | None = app.service("machines")
    if service is None:
        raise click.ClickException("The machines plugin is not enabled.")
    return service


@machines_group.command("create")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option("--id", "machine_id", required=True, help="The machine id.")
@click.option("--metadata", default="", show_default=True, help="Opaque metadata string.")
@app_options
def create(user_id: str, machine_id: str, metadata: str, settings: Settings) -> None:
    """Create (or load) machine ID of USER's account; prints {"created", "machine"}."""

    async def work(app: App) -> dict[str, Any]:
        try:
            machine, created = await _service(app).create_or_load(user_id, machine_id, metadata)
        except Conflict as exc:
            raise click.ClickException(str(exc.message)) from None
        except AccountMissing:
            raise click.ClickException(ACCOUNT_MISSING) from None
        return {"created": created, "machine": machine}

    echo_json(run_with_app(settings, work))


@machines_group.command("list")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@app_options
def list_machines(user_id: str, settings: Settings) -> None:
    """List the machines of USER, most recently active first; prints {"machines": [...]}."""

    async def work(app: App) -> dict[str, Any]:
        return {"machines": await _service(app).list(user_id)}

    echo_json(run_with_app(settings, work))


@machines_group.command("delete")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.argument("machine_id")
@app_options
def delete(user_id: str, machine_id: str, settings: Settings) -> None:
    """Delete MACHINE_ID of USER and USER's access keys for it; its sessions are kept."""

    async def work(app: App) -> bool:
        return await _service(app).delete(user_id, machine_id)

    if not run_with_app(settings, work):
        raise click.ClickException(MACHINE_NOT_FOUND)
    echo_json({"success": True})
