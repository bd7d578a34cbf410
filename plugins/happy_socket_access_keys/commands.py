"""``happy-socket access-keys set|get``: the library API for operators, printing JSON."""

from __future__ import annotations

from typing import Any

import click

from happy_socket import App, HandlerError, Settings
from happy_socket.cli import app_options, echo_json, run_with_app

from .service import AccessKeysService


@click.group("access-keys")
def access_keys_group() -> None:
    """Access keys of (session, machine) pairs."""


def _service(app: App) -> AccessKeysService:
    service: AccessKeysService | None = app.service("access-keys")
    if service is None:
        raise click.ClickException("The access-keys plugin is not enabled.")
    return service


@access_keys_group.command("set")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option("--session", "session_id", required=True, help="The user's session id.")
@click.option("--machine", "machine_id", required=True, help="The user's machine id.")
@click.option("--data", required=True, help="The opaque access key string.")
@click.option(
    "--expected-version",
    type=click.IntRange(min=0),
    default=None,
    help="Update the existing key if it is at this version (default: create a new key).",
)
@app_options
def set_key(
    user_id: str,
    session_id: str,
    machine_id: str,
    data: str,
    expected_version: int | None,
    settings: Settings,
) -> None:
    """Create (or, with --expected-version, update) an access key; prints JSON."""

    async def work(app: App) -> dict[str, Any]:
        service = _service(app)
        try:
            if expected_version is None:
                key = await service.create(user_id, session_id, machine_id, data)
                return {"success": True, "accessKey": key}
            return await service.update(user_id, session_id, machine_id, data, expected_version)
        except HandlerError as exc:
            raise click.ClickException(exc.message or "Error") from None

    result = run_with_app(settings, work)
    echo_json(result)
    if not result.get("success"):
        raise SystemExit(1)


@access_keys_group.command("get")
@click.option("--user", "user_id", required=True, help="The user (account) id.")
@click.option("--session", "session_id", required=True, help="The user's session id.")
@click.option("--machine", "machine_id", required=True, help="The user's machine id.")
@app_options
def get_key(user_id: str, session_id: str, machine_id: str, settings: Settings) -> None:
    """Print ``{"accessKey": ...}`` (null when there is none)."""

    async def work(app: App) -> dict[str, Any]:
        try:
            return {"accessKey": await _service(app).get(user_id, session_id, machine_id)}
        except HandlerError as exc:
            raise click.ClickException(exc.message or "Error") from None

    echo_json(run_with_app(settings, work))
