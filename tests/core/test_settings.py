"""Settings: database URL forms, HAPPY_SOCKET_* variables, secret persistence, tokens."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from happy_socket import ConfigError, Settings
from happy_socket.auth import Tokens, resolve_secret, secret_file_for


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///happy-socket.db", "sqlite:///happy-socket.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("data/x.db", "sqlite:///data/x.db"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_db_url_forms(given: str, expected: str) -> None:
    assert Settings(db=given).db == expected


@pytest.mark.parametrize("bad", ["mysql://x", "nonsense", "sqlite://", "postgresql:///db", ""])
def test_bad_db_url_is_one_sentence(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(db=bad)
    message = str(info.value)
    assert message.endswith(".") and message.count(". ") == 0


def test_defaults_follow_the_protocol() -> None:
    s = Settings()
    assert (s.host, s.port, s.db) == ("127.0.0.1", 3005, "sqlite:///happy-socket.db")
    assert (s.socketio_path, s.ping_interval, s.ping_timeout) == ("/v1/updates", 15.0, 45.0)
    assert s.cors_origins == ("*",) and s.per_message_deflate is False


def test_from_env_reads_every_flag() -> None:
    env = {
        "HAPPY_SOCKET_HOST": "0.0.0.0",
        "HAPPY_SOCKET_PORT": "4000",
        "HAPPY_SOCKET_DB": "postgresql://u@h/db",
        "HAPPY_SOCKET_REDIS": "redis://r:6379/1",
        "HAPPY_SOCKET_WITHOUT": "ping, http",
        "HAPPY_SOCKET_SECRET": "xyz",
        "HAPPY_SOCKET_LOG_LEVEL": "debug",
        "HAPPY_SOCKET_PER_MESSAGE_DEFLATE": "true",
    }
    s = Settings.from_env(env)
    assert (s.host, s.port, s.db, s.redis) == (
        "0.0.0.0",
        4000,
        "postgresql://u@h/db",
        "redis://r:6379/1",
    )
    assert s.without == ("ping", "http") and s.secret == "xyz" and s.log_level == "debug"
    assert s.per_message_deflate is True
    assert Settings.from_env(env, port=1).port == 1


def test_bad_env_value_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="HAPPY_SOCKET_PORT='x' is not a valid int"):
        Settings.from_env({"HAPPY_SOCKET_PORT": "x"})


def test_plugin_options() -> None:
    s = Settings(plugin_options={"rpc": {"grace": 2.5}})
    assert s.option("rpc", "grace", 10.0) == 2.5
    assert s.option("rpc", "timeout", 30.0) == 30.0


def test_secret_generated_once_and_persisted_beside_the_db(tmp_path: Path) -> None:
    settings = Settings(db=f"sqlite:///{tmp_path / 'x.db'}")
    path = secret_file_for(settings)
    assert path == tmp_path / "x.db.secret"
    first = resolve_secret(settings)
    assert path.read_text().strip() == first and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_secret(settings) == first
    assert resolve_secret(settings.evolve(secret="given")) == "given"


def test_postgresql_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="secret is required with PostgreSQL"):
        resolve_secret(Settings(db="postgresql://u@h/db"))


def test_tokens_round_trip_and_refuse_tampering() -> None:
    tokens = Tokens("k" * 32)
    token = tokens.issue("alice")
    assert tokens.verify(token) == "alice"
    assert Tokens("other" * 8).verify(token) is None
    head, body, sig = token.split(".")
    assert tokens.verify(f"{head}.{body}.{sig[:-2]}xx") is None
    for bad in (None, 7, "", "a.b", "x" * 5000, ["t"]):
        assert tokens.verify(bad) is None


def test_every_setting_is_a_serve_flag_and_an_environment_variable() -> None:
    """One configuration mechanism: each Settings field has a ``serve`` flag whose variable is
    ``HAPPY_SOCKET_<FIELD>`` (plugin options are the plugins' own)."""
    import attrs

    from happy_socket.cli import serve

    envvars = {p.envvar for p in serve.params if getattr(p, "envvar", None)}
    for field in attrs.fields(Settings):
        if field.name == "plugin_options":
            continue
        assert f"HAPPY_SOCKET_{field.name.upper()}" in envvars, field.name
