"""CLI commands in-process (click's CliRunner): plugins, events, db upgrade, token, help texts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
from click.testing import CliRunner

from happy_socket import logs
from happy_socket.cli import cli


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plugins_json_lists_events_routes_and_state() -> None:
    result = invoke("plugins", "--json", "--without", "ping")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["ping"]["enabled"] is False and rows["ping"]["events"] == []
    assert rows["http"]["enabled"] is True
    assert rows["http"]["routes"] == ["GET /health", "GET /", "POST /v1/version"]
    assert rows["http"]["version"] == "0.1.0"


def test_plugins_text() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "ping 0.1.0 (enabled)\n  events: ping\n" in result.output


def test_events_lists_plugin_envelope_and_order() -> None:
    result = invoke("events")
    assert result.exit_code == 0
    assert "ping\tping\tresult\n" in result.output
    assert "ping" not in invoke("events", "--without", "ping").output.split()


def test_unknown_without_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["events", "--without", "nope"])
    assert result.exit_code == 1
    assert "Unknown plugin 'nope' in --without" in result.output


def test_db_upgrade_prints_versions(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    result = invoke("db", "upgrade", "--db", db, "--secret", "s" * 32)
    assert result.exit_code == 0
    versions = {row["component"]: row["version"] for row in json.loads(result.output)}
    assert versions["core"] == 1 and versions["accounts"] == 1


def test_token_prints_one_token(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    result = invoke("token", "alice", "--db", db, "--secret", "s" * 32)
    assert result.exit_code == 0 and result.stdout.strip().count(".") == 2


def test_every_command_has_help() -> None:
    def walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
        ctx = click.Context(group)
        found = []
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            found.append((f"{prefix} {name}", command))
            if isinstance(command, click.Group):
                found.extend(walk(command, f"{prefix} {name}"))
        return found

    commands = walk(cli, "happy-socket")
    assert len(commands) >= 6
    for path, command in commands:
        assert command.help and command.help.strip().endswith("."), path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{path} {param.opts}"


def test_json_log_lines(capsys: object) -> None:
    logs.configure("info", "json")
    logging.getLogger("happy_socket.test").info(
        "hello %s", "world", extra={"user": "alice", "sid": "s1"}
    )
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    line = json.loads(err.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["level"] == "info"
    assert line["user"] == "alice" and line["sid"] == "s1" and line["logger"] == "happy_socket.test"
    logging.getLogger().handlers.clear()


def test_python_dash_m_happy_socket_is_the_command() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "happy_socket", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "Usage: " in done.stdout


def test_token_says_which_database_and_secret_and_invents_none(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    refused = CliRunner().invoke(cli, ["token", "alice", "--db", db])
    assert refused.exit_code == 1
    assert "No database at" in refused.output and "--create" in refused.output
    assert not (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "elsewhere.db.secret").exists()
    made = CliRunner().invoke(cli, ["token", "alice", "--db", db, "--create"])
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().count(".") == 2  # only the token on stdout
    assert "elsewhere.db.secret" in made.stderr and "elsewhere.db" in made.stderr
    again = CliRunner().invoke(cli, ["token", "bob", "--db", db])  # it exists now
    assert again.exit_code == 0, again.output


def test_help_and_errors_name_the_environment_variables() -> None:
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for variable in ("HAPPY_SOCKET_PORT", "HAPPY_SOCKET_DB", "HAPPY_SOCKET_WRITE_STALL_S"):
        assert variable in help_text
    bad = CliRunner().invoke(cli, ["serve"], env={"HAPPY_SOCKET_PORT": "abc"})
    assert bad.exit_code == 2 and "HAPPY_SOCKET_PORT" in bad.output


def test_plugin_commands_that_cannot_load_are_one_sentence() -> None:
    env = {"HAPPY_SOCKET_WITHOUT": "nope"}
    missing = CliRunner().invoke(cli, ["sessions", "list", "alice"], env=env)
    assert missing.exit_code == 2
    assert "No such command 'sessions': Unknown plugin 'nope' in --without" in missing.output
    assert missing.output.rstrip().endswith("(the plugins' commands could not be loaded).")
    listed = CliRunner().invoke(cli, ["--help"], env=env)
    assert listed.exit_code == 0 and "the plugins' commands could not be loaded" in listed.output
    # the core's commands still work, and the plugins' come back once the setting is fixed
    assert CliRunner().invoke(cli, ["token", "--help"], env=env).exit_code == 0
    assert "sessions" in CliRunner().invoke(cli, ["--help"]).output.split()
    assert "sessions" not in CliRunner().invoke(cli, ["--help"], env=env).output.split()
