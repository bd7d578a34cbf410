"""The ``happy-socket`` command: serve, plugins, events, token, db — plus plugins' commands.

``serve`` lives in :mod:`happy_socket.cli_serve`, the helpers plugins' commands use in
:mod:`happy_socket.cli_support`; both are re-exported here (``happy_socket.cli.app_options``).
"""

from __future__ import annotations

from typing import Any

import click

from .app import App, create_app
from .cli_serve import GC_THRESHOLDS, KEEP_ALIVE_S, serve
from .cli_support import (
    PluginCommands,
    app_options,
    echo_json,
    run_with_app,
    split_names,
    without_option,
)
from .errors import ConfigError
from .plugins import describe
from .settings import Settings

__all__ = [
    "GC_THRESHOLDS",
    "KEEP_ALIVE_S",
    "PluginCommands",
    "app_options",
    "cli",
    "echo_json",
    "main",
    "run_with_app",
    "serve",
]


@click.group(cls=PluginCommands)
@click.version_option(package_name="happy-socket")
def cli() -> None:
    """happy-socket: a pluggable server for the happy realtime protocol over Socket.IO."""


cli.add_command(serve)


@cli.command()
@without_option("Show NAME as disabled.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(without: tuple[str, ...], as_json: bool) -> None:
    """List installed plugins: name, version, events, routes, enabled or not."""
    blocked = split_names(without)
    app = _assemble(Settings(db="sqlite:///:memory:", without=blocked))
    rows: list[dict[str, Any]] = []
    for info in describe(app.pm, blocked):
        rows.append(
            {
                "name": info.name,
                "version": info.version,
                "enabled": info.enabled,
                "events": [h.event for h in app.registry if h.plugin == info.name],
                "routes": [
                    f"{' '.join(r.methods)} {r.path}"
                    for r in app.routes.infos
                    if r.plugin == info.name
                ],
            }
        )
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        state = "enabled" if row["enabled"] else "disabled"
        click.echo(f"{row['name']} {row['version'] or '-'} ({state})")
        click.echo(f"  events: {', '.join(row['events']) or '-'}")
        click.echo(f"  routes: {', '.join(row['routes']) or '-'}")


@cli.command()
@without_option("Leave out an installed plugin.")
def events(without: tuple[str, ...]) -> None:
    """List socket events: name, plugin, ack envelope, ordered."""
    blocked = split_names(without)
    app = _assemble(Settings(db="sqlite:///:memory:", without=blocked))
    for h in app.registry:
        ordered = " ordered" if h.ordered else ""
        click.echo(f"{h.event}\t{h.plugin}\t{h.envelope.value}{ordered}")


def _assemble(settings: Settings) -> App:
    try:
        return create_app(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("user_id")
@click.option(
    "--create",
    is_flag=True,
    help="Start a new SQLite database (and secret) when none exists at --db.",
)
@app_options
def token(user_id: str, create: bool, settings: Settings) -> None:
    """Print a bearer token for USER_ID (creating the account).

    Says on stderr which database and secret it used: a token works only on a server that
    uses the same ones. Without --secret it refuses to invent a secret for a SQLite database
    that does not exist yet (run from the wrong directory, say), unless --create.
    """
    path = settings.sqlite_file
    if settings.secret is None and path is not None and not path.exists() and not create:
        raise click.ClickException(
            f"No database at {path.resolve()}: run this where `happy-socket serve` keeps its "
            "database, pass its --db (and --secret), or add --create to start a new one."
        )

    async def work(app: App) -> str:
        return await app.issue_token(user_id)

    issued = run_with_app(settings, work)
    if settings.secret is not None:
        secret = "--secret / HAPPY_SOCKET_SECRET"
    else:
        from .auth import secret_file_for

        secret_file = secret_file_for(settings)
        secret = str(secret_file.resolve()) if secret_file else "one made for this run"
    click.echo(f"token for {user_id!r}: database {settings.db}, secret {secret}", err=True)
    click.echo(issued)


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@app_options
def upgrade(settings: Settings) -> None:
    """Create or migrate every enabled plugin's tables; print the versions."""

    async def work(app: App) -> list[dict[str, Any]]:
        from .storage import upgrade as run_upgrade

        report = await run_upgrade(app.db, app.tables, app.migrations)
        return [{"component": r.component, "version": r.after} for r in report]

    echo_json(run_with_app(settings, work))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="happy-socket")
