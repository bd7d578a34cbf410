"""Server settings: one attrs class fed by CLI flags, ``HAPPY_SOCKET_*`` variables or code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError

DEFAULT_DB_URL = "sqlite:///happy-socket.db"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def normalize_db_url(url: str) -> str:
    """Return ``url`` in the form ``databases`` expects, or raise ConfigError.

    Accepts ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``sqlite:///:memory:``,
    a bare file path ending in ``.db``/``.sqlite``/``.sqlite3``, and ``postgresql://``
    (also ``postgres://`` and ``postgresql+asyncpg://``).
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        if url.endswith((".db", ".sqlite", ".sqlite3")):
            return "sqlite:///" + url
        raise ConfigError(
            f"Database URL {url!r} is not valid: use sqlite:///FILE.db or "
            "postgresql://USER@HOST:PORT/DB."
        )
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(f"Database URL {url!r} is not valid: use sqlite:///FILE.db.")
        return "sqlite://" + rest
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        if not rest or rest.startswith("/"):
            raise ConfigError(
                f"Database URL {url!r} is not valid: use postgresql://USER@HOST:PORT/DB."
            )
        return "postgresql://" + rest
    raise ConfigError(
        f"Database URL {url!r} has unsupported scheme {scheme!r}: use sqlite or postgresql."
    )


def sqlite_path(db_url: str) -> Path | None:
    """The file behind a SQLite URL; None for PostgreSQL and in-memory databases."""
    if not db_url.startswith("sqlite://"):
        return None
    path = db_url[len("sqlite:///") :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def _names(value: Any) -> tuple[str, ...]:
    """Names from a string or an iterable of strings, each split on commas and spaces."""
    if isinstance(value, str):
        value = [value]
    return tuple(part for v in value for part in str(v).replace(",", " ").split())


def _check_channel(_: Any, __: Any, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("The Redis channel name must be a non-empty string.")


REDIS_PUBSUB_MODES = ("auto", "sharded", "plain")


def _check_pubsub(_: Any, __: Any, value: str) -> None:
    if value not in REDIS_PUBSUB_MODES:
        raise ConfigError(
            f"Redis pub/sub mode {value!r} is not one of {', '.join(REDIS_PUBSUB_MODES)}."
        )


def _check_level(_: Any, __: Any, value: str) -> None:
    if value.lower() not in LOG_LEVELS:
        raise ConfigError(f"Log level {value!r} is not one of {', '.join(LOG_LEVELS)}.")


@attrs.frozen(kw_only=True)
class Settings:
    """Everything a server needs to know; every field has a ``HAPPY_SOCKET_<NAME>`` variable."""

    host: str = "127.0.0.1"
    port: int = 3005
    db: str = attrs.field(default=DEFAULT_DB_URL, converter=normalize_db_url)
    redis: str | None = None
    redis_channel: str = attrs.field(default="happy-socket", validator=_check_channel)
    # per-user fan-out channels: sharded pub/sub on Redis >= 7 ("auto"), or always "plain"
    redis_pubsub: str = attrs.field(default="auto", validator=_check_pubsub)
    without: tuple[str, ...] = attrs.field(default=(), converter=_names)
    secret: str | None = None
    log_level: str = attrs.field(default="info", validator=_check_level)
    log_format: str = "text"
    # Socket.IO server settings (docs/protocol.md, "Handshake")
    socketio_path: str = "/v1/updates"
    ping_interval: float = 15.0
    ping_timeout: float = 45.0
    # origins allowed to call from a browser, for HTTP (the cors plugin) and Socket.IO alike
    cors_origins: tuple[str, ...] = attrs.field(default=("*",), converter=_names)
    max_packet_bytes: int = 1_000_000
    max_body_bytes: int = 32 * 1024 * 1024  # HTTP request bodies
    max_sockets_per_user: int = 100  # open sockets of one account on one process
    max_queued_bytes: int = 8 * 1024 * 1024  # unsent data for one socket before it is closed
    max_queued_bytes_per_user: int = 64 * 1024 * 1024  # the same over one account's sockets
    max_queued_bytes_total: int = 1024 * 1024 * 1024  # the same over the whole process
    write_stall_s: float = 60.0  # a websocket whose peer takes no data this long is dropped
    handshake_timeout_s: float = 45.0  # engine.io sessions must join Socket.IO within this
    header_timeout_s: float = 10.0  # a new HTTP connection must send its request headers within
    per_message_deflate: bool = False
    # Plugin-specific options, by plugin name: {"rpc": {"grace": 10.0}}
    plugin_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @property
    def is_sqlite(self) -> bool:
        """True when the database is SQLite (the embedded default)."""
        return self.db.startswith("sqlite://")

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, if there is one on disk."""
        return sqlite_path(self.db)

    @property
    def socketio_cors(self) -> str | list[str]:
        """``cors_origins`` as python-socketio's ``cors_allowed_origins`` takes it."""
        return "*" if "*" in self.cors_origins else list(self.cors_origins)

    def option(self, plugin: str, name: str, default: Any = None) -> Any:
        """A plugin option, e.g. ``settings.option("rpc", "grace", 10.0)``."""
        return self.plugin_options.get(plugin, {}).get(name, default)

    def evolve(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return attrs.evolve(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``HAPPY_SOCKET_*`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            raw = env.get("HAPPY_SOCKET_" + field.name.upper())
            if raw is None or field.name == "plugin_options":
                continue
            values[field.name] = _parse_env(field.name, field.type, raw)
        values.update(overrides)
        return cls(**values)


def _parse_env(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind.startswith("tuple"):
            return tuple(p for p in raw.replace(",", " ").split() if p)
    except ValueError:
        raise ConfigError(f"HAPPY_SOCKET_{name.upper()}={raw!r} is not a valid {kind}.") from None
    return raw
