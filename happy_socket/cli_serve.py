"""``happy-socket serve``: the server process (uvicorn on a socket bound here, GC tuning)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

import click

from . import logs
from .app import create_app
from .cli_support import app_options, env_name
from .compat.uvicorn import http_protocol
from .errors import ConfigError
from .flags import SERVE_SETTINGS, setting_options
from .settings import LOG_LEVELS, Settings
from .websocket import websocket_protocol

log = logging.getLogger("happy_socket")


@click.command()
@click.option(
    "--host",
    envvar=env_name("host"),
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on.",
)
@click.option(
    "--port",
    envvar=env_name("port"),
    show_envvar=True,
    default=3005,
    show_default=True,
    type=int,
    help="TCP port (0 picks a free one).",
)
@app_options
@click.option(
    "--log-level",
    envvar=env_name("log_level"),
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Logging level.",
)
@click.option(
    "--log-format",
    envvar=env_name("log_format"),
    show_envvar=True,
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="Plain lines or one JSON object per line.",
)
@click.option(
    "--per-message-deflate/--no-per-message-deflate",
    envvar=env_name("per_message_deflate"),
    show_envvar=True,
    default=False,
    show_default=True,
    help="Compress websocket frames (costs CPU and memory).",
)
@setting_options(SERVE_SETTINGS)
@click.option(
    "--rpc-grace",
    envvar=env_name("rpc_grace"),
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

    from .compat import uvicorn as uvicorn_compat

    class Server(uvicorn.Server):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                uvicorn_compat.forget_captured_signals(self)

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
