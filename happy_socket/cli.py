"""The ``happy-socket`` command: serve, plugins, events, token, db — plus plugins' commands."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import click

from . import logs
from .app import App, create_app
from .compat.uvicorn import http_protocol
from .errors import ConfigError
from .flags import SERVE_SETTINGS, setting_options
from .plugins import describe, make_plugin_manager
from .settings import DEFAULT_DB_URL, LOG_LEVELS, Settings
from .websocket import websocket_protocol

log = logging.getLogger("happy_socket")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _env(name: str) -> str:
    return "HAPPY_SOCKET_" + name.upper()


def app_options(fn: F) -> F:
    """Add --db, --redis, --secret and --without to a command; it receives ``settings``.

    Plugins' commands use this with :func:`run_with_app` to reach the database.
    """
    options = [
        click.option(
            "--db",
            envvar=_env("db"),
            show_envvar=True,
            default=DEFAULT_DB_URL,
            show_default=True,
            help="Database URL: sqlite:///FILE.db or postgresql://USER@HOST:PORT/DB.",
        ),
        click.option(
            "--redis",
            envvar=_env("redis"),
            show_envvar=True,
            default=None,
            help="Redis URL for several processes, e.g. redis://127.0.0.1:6379/0.",
        ),
        click.option(
            "--redis-channel",
            envvar=_env("redis_channel"),
            show_envvar=True,
            default="happy-socket",
            show_default=True,
            metavar="NAME",
            help="Redis pub/sub channel (and RPC key prefix) shared by one deployment's processes.",
        ),
        click.option(
            "--secret",
            envvar=_env("secret"),
            show_envvar=True,
            default=None,
            help="Token signing secret (default: generated once, kept beside the SQLite file).",
        ),
        click.option(
            "--without",
            "without",
            envvar=_env("without"),
            show_envvar=True,
            multiple=True,
            metavar="NAME",
            help="Leave out an installed plugin (repeatable).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)

    def to_settings(**kwargs: Any) -> Any:
        keys = ("db", "redis", "redis_channel", "secret", "without")
        values = {k: kwargs.pop(k) for k in keys}
        values["without"] = tuple(p for w in values["without"] for p in w.replace(",", " ").split())
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


class PluginCommands(click.Group):
    """The command group; plugins' commands are added on first use."""

    _loaded = False

    def _load_plugin_commands(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        without = tuple(os.environ.get(_env("without"), "").replace(",", " ").split())
        try:
            pm = make_plugin_manager(without=without)
        except ConfigError:
            return  # `serve` reports the problem in one sentence
        pm.hook.register_commands(cli=self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_plugin_commands()
        return super().get_command(ctx, cmd_name)


@click.group(cls=PluginCommands)
@click.version_option(package_name="happy-socket")
def cli() -> None:
    """happy-socket: a pluggable server for the happy realtime protocol over Socket.IO."""


@cli.command()
@click.option(
    "--host",
    envvar=_env("host"),
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on.",
)
@click.option(
    "--port",
    envvar=_env("port"),
    show_envvar=True,
    default=3005,
    show_default=True,
    type=int,
    help="TCP port (0 picks a free one).",
)
@app_options
@click.option(
    "--log-level",
    envvar=_env("log_level"),
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Logging level.",
)
@click.option(
    "--log-format",
    envvar=_env("log_format"),
    show_envvar=True,
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="Plain lines or one JSON object per line.",
)
@click.option(
    "--per-message-deflate/--no-per-message-deflate",
    envvar=_env("per_message_deflate"),
    show_envvar=True,
    default=False,
    show_default=True,
    help="Compress websocket frames (costs CPU and memory).",
)
@setting_options(SERVE_SETTINGS)
@click.option(
    "--rpc-grace",
    envvar=_env("rpc_grace"),
    show_envvar=True,
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long an RPC call waits for a reconnecting holder (0 = fail at once).",
)
def serve(
    host: str,
    port: int,
    settings: Settings,
    log_level: str,
    log_format: str,
    per_message_deflate: bool,
    rpc_grace: float,
    **tuning: Any,
) -> None:
    """Serve Socket.IO at /v1/updates and the HTTP routes of the enabled plugins."""
    settings = settings.evolve(
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_format=log_format,
        per_message_deflate=per_message_deflate,
        **tuning,
        plugin_options={**settings.plugin_options, "rpc": {"grace": rpc_grace}},
    )
    logs.configure(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass


def _make_server(config: Any) -> Any:
    """A uvicorn Server that does not re-raise SIGTERM/SIGINT once it has stopped.

    uvicorn >= 0.29 re-raises the captured signal when ``serve()`` returns, which kills the
    process before the shutdown hooks run and makes it exit by the signal instead of with 0.
    """
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    return Server(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says so (with proto 0, Nagle + delayed ACK add ~40 ms to an ack
    # that follows an update on the same socket)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"Port {port} on {host} is already in use.") from None
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


#: ``gc.set_threshold`` under ``serve``: Python's defaults but full collections considered 10x
#: less often (100 instead of 10). Every socket keeps ~160 tracked objects (tasks, coroutine
#: chains, handles) and a full collection visits them all, so with the defaults a reconnect
#: storm of 10,000 sockets spent 60 % of its CPU in 17 full collections; with these, 3.
GC_THRESHOLDS = (700, 10, 100)

#: seconds an idle keep-alive HTTP connection stays open after its last response (uvicorn's)
KEEP_ALIVE_S = 5


async def _serve(settings: Settings) -> None:
    import uvicorn

    app = create_app(settings)
    sock = _bind(settings.host, settings.port)
    try:
        await app.startup()
        # everything loaded so far lives as long as the process: keep it out of the cyclic
        # collector's full passes (they otherwise walk every module, table and plugin object)
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            app.asgi(lifespan=False),
            lifespan="off",
            log_level=settings.log_level,
            access_log=False,
            ws=websocket_protocol(settings.write_stall_s),
            http=http_protocol(settings.header_timeout_s),
            timeout_keep_alive=KEEP_ALIVE_S,
            ws_per_message_deflate=settings.per_message_deflate,
            ws_max_size=settings.max_packet_bytes,
            timeout_graceful_shutdown=3,
            log_config=None,
        )
        server = _make_server(config)
        log.info(
            "happy-socket serving on http://%s:%s (socket.io path %s) database=%s redis=%s plugins=%s",
            host,
            port,
            settings.socketio_path,
            _redact(settings.db),
            settings.redis or "off",
            ",".join(app.plugin_names),
        )
        try:
            await server.serve(sockets=[sock])
        finally:
            await app.shutdown()
            log.info("happy-socket stopped")
    finally:
        sock.close()


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{creds}{at}{host}"


@cli.command()
@click.option(
    "--without",
    "without",
    envvar=_env("without"),
    show_envvar=True,
    multiple=True,
    metavar="NAME",
    help="Show NAME as disabled.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(without: tuple[str, ...], as_json: bool) -> None:
    """List installed plugins: name, version, events, routes, enabled or not."""
    blocked = tuple(p for w in without for p in w.replace(",", " ").split())
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
@click.option(
    "--without",
    "without",
    envvar=_env("without"),
    show_envvar=True,
    multiple=True,
    metavar="NAME",
    help="Leave out an installed plugin.",
)
def events(without: tuple[str, ...]) -> None:
    """List socket events: name, plugin, ack envelope, ordered."""
    blocked = tuple(p for w in without for p in w.replace(",", " ").split())
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
