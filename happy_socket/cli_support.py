"""What plugins' commands build on (``happy_socket.cli`` re-exports it): the shared options,
starting an app, printing JSON, and the command group that loads plugins' commands."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .app import App, create_app
from .errors import ConfigError
from .plugins import make_plugin_manager
from .settings import DEFAULT_DB_URL, Settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``HAPPY_SOCKET_<NAME>``."""
    return "HAPPY_SOCKET_" + name.upper()


def without_option(help: str) -> Callable[[F], F]:
    """The ``--without NAME`` option (repeatable, ``HAPPY_SOCKET_WITHOUT``); see :func:`split_names`."""
    return click.option(
        "--without",
        "without",
        envvar=env_name("without"),
        show_envvar=True,
        multiple=True,
        metavar="NAME",
        help=help,
    )


def split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """Plugin names from repeated ``--without`` values, each of which may list several."""
    return tuple(name for value in values for name in value.replace(",", " ").split())


def app_options(fn: F) -> F:
    """Add --db, --redis, --secret and --without to a command; it receives ``settings``.

    Plugins' commands use this with :func:`run_with_app` to reach the database.
    """
    options = [
        click.option(
            "--db",
            envvar=env_name("db"),
            show_envvar=True,
            default=DEFAULT_DB_URL,
            show_default=True,
            help="Database URL: sqlite:///FILE.db or postgresql://USER@HOST:PORT/DB.",
        ),
        click.option(
            "--redis",
            envvar=env_name("redis"),
            show_envvar=True,
            default=None,
            help="Redis URL for several processes, e.g. redis://127.0.0.1:6379/0.",
        ),
        click.option(
            "--redis-channel",
            envvar=env_name("redis_channel"),
            show_envvar=True,
            default="happy-socket",
            show_default=True,
            metavar="NAME",
            help="Redis pub/sub channel (and RPC key prefix) shared by one deployment's processes.",
        ),
        click.option(
            "--secret",
            envvar=env_name("secret"),
            show_envvar=True,
            default=None,
            help="Token signing secret (default: generated once, kept beside the SQLite file).",
        ),
        without_option("Leave out an installed plugin (repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)

    def to_settings(**kwargs: Any) -> Any:
        keys = ("db", "redis", "redis_channel", "secret", "without")
        values = {k: kwargs.pop(k) for k in keys}
        values["without"] = split_names(values["without"])
        try:
            kwargs["settings"] = Settings(**values)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        return fn(**kwargs)

    to_settings.__name__ = fn.__name__
    to_settings.__doc__ = fn.__doc__
    to_settings.__click_params__ = getattr(fn, "__click_params__", [])  # type: ignore[attr-defined]
    return to_settings  # type: ignore[return-value]


def run_with_app(settings: Settings, work: Callable[[App], Awaitable[T]]) -> T:
    """Start an App (database connected and migrated), run ``work(app)``, shut it down."""

    async def main() -> T:
        app = create_app(settings)
        await app.startup()
        try:
            return await work(app)
        finally:
            await app.shutdown()

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


PLUGIN_COMMANDS_FAILED = "{error} (the plugins' commands could not be loaded)"


class PluginCommands(click.Group):
    """The command group; plugins' commands are added on first use.

    They come from the ``register_commands`` hook of the installed plugins minus
    ``HAPPY_SOCKET_WITHOUT`` (the subcommand's own ``--without`` is parsed too late to matter).
    When the plugins cannot be loaded, the core's commands still work (``serve`` says why in
    one sentence); a command that is not found, and ``--help``, say it too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded_for: tuple[str, ...] | None = None
        self._from_plugins: set[str] = set()
        self.load_error: str | None = None

    def load_plugin_commands(self) -> None:
        """Add the enabled plugins' commands (again when ``HAPPY_SOCKET_WITHOUT`` changed)."""
        without = split_names((os.environ.get(env_name("without"), ""),))
        if self._loaded_for == without:
            return
        for name in self._from_plugins:
            self.commands.pop(name, None)
        self._loaded_for, self._from_plugins, self.load_error = without, set(), None
        core = set(self.commands)
        try:
            pm = make_plugin_manager(without=without)
        except ConfigError as exc:
            self.load_error = str(exc).rstrip(".")
            return
        pm.hook.register_commands(cli=self)
        self._from_plugins = set(self.commands) - core

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        if self.load_error is not None and not ctx.resilient_parsing:
            click.echo(PLUGIN_COMMANDS_FAILED.format(error=self.load_error) + ".", err=True)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self.load_plugin_commands()
        command = super().get_command(ctx, cmd_name)
        if command is None and self.load_error is not None:
            raise click.UsageError(
                f"No such command {cmd_name!r}: "
                + PLUGIN_COMMANDS_FAILED.format(error=self.load_error)
                + ".",
                ctx,
            )
        return command
