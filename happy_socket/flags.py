"""``serve`` flags generated from :class:`~happy_socket.settings.Settings` fields.

Each flag's environment variable is ``HAPPY_SOCKET_<FIELD>`` and its default the field's own,
so the command line, the environment and ``Settings(...)`` in code never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click

from .settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def env_name(field: str) -> str:
    """The environment variable of a Settings field."""
    return "HAPPY_SOCKET_" + field.upper()


@attrs.frozen
class SettingFlag:
    """A ``serve`` flag for one Settings field: its variable is ``HAPPY_SOCKET_<FIELD>`` and
    its default the field's own."""

    field: str
    flag: str
    help: str
    type: Any = None
    metavar: str | None = None
    multiple: bool = False


SECONDS = "SECONDS"
SERVE_SETTINGS = (
    SettingFlag(
        "redis_pubsub",
        "--redis-pubsub",
        "Per-user fan-out channels: sharded pub/sub on Redis >= 7 (auto), or sharded, or plain.",
        click.Choice(["auto", "sharded", "plain"]),
    ),
    SettingFlag(
        "cors_origins",
        "--cors-origin",
        "Origin allowed to call from a browser, for HTTP and Socket.IO (repeatable; * = any).",
        metavar="ORIGIN",
        multiple=True,
    ),
    SettingFlag(
        "max_body_bytes",
        "--max-body-bytes",
        "Largest HTTP request body; larger ones are refused with 413 before they are read.",
        click.IntRange(min=1024),
    ),
    SettingFlag(
        "socketio_path",
        "--socketio-path",
        "Where Socket.IO is served (the happy clients use /v1/updates).",
    ),
    SettingFlag(
        "ping_interval",
        "--ping-interval",
        "Engine.IO ping interval.",
        click.FloatRange(min=1),
        SECONDS,
    ),
    SettingFlag(
        "ping_timeout",
        "--ping-timeout",
        "Engine.IO ping timeout: a client silent this long after a ping is dropped.",
        click.FloatRange(min=1),
        SECONDS,
    ),
    SettingFlag(
        "max_packet_bytes",
        "--max-packet-bytes",
        "Largest Socket.IO packet; a larger one closes its socket.",
        click.IntRange(min=1024),
    ),
    SettingFlag(
        "max_sockets_per_user",
        "--max-sockets-per-user",
        "Open sockets of one account on this process; further handshakes are refused.",
        click.IntRange(min=1),
    ),
    SettingFlag(
        "max_queued_bytes",
        "--max-queued-bytes",
        "Unsent data kept for one socket that reads too slowly; past it the socket is closed.",
        click.IntRange(min=65536),
    ),
    SettingFlag(
        "max_queued_bytes_per_user",
        "--max-queued-bytes-per-user",
        "Unsent data kept for all sockets of one account; past it its largest queue is closed.",
        click.IntRange(min=65536),
    ),
    SettingFlag(
        "max_queued_bytes_total",
        "--max-queued-bytes-total",
        "Unsent data kept for all sockets of the process; past it the largest queue is closed.",
        click.IntRange(min=65536),
    ),
    SettingFlag(
        "write_stall_s",
        "--write-stall",
        "Drop a websocket whose client takes no data for this long.",
        click.FloatRange(min=1),
        SECONDS,
    ),
    SettingFlag(
        "handshake_timeout_s",
        "--handshake-timeout",
        "Close an engine.io session that has not joined Socket.IO within this.",
        click.FloatRange(min=0.1),
        SECONDS,
    ),
    SettingFlag(
        "header_timeout_s",
        "--header-timeout",
        "Close a new HTTP connection that has not sent its request headers within this.",
        click.FloatRange(min=0.1),
        SECONDS,
    ),
)


def setting_options(flags: tuple[SettingFlag, ...]) -> Callable[[F], F]:
    """Add one click option per Settings field in ``flags`` (see :class:`SettingFlag`)."""
    defaults = {f.name: f.default for f in attrs.fields(Settings)}

    def decorate(fn: F) -> F:
        for spec in reversed(flags):
            fn = click.option(
                spec.flag,
                spec.field,
                envvar=env_name(spec.field),
                default=defaults[spec.field],
                show_default=True,
                show_envvar=True,
                type=spec.type,
                metavar=spec.metavar,
                multiple=spec.multiple,
                help=spec.help,
            )(fn)
        return fn

    return decorate
