"""Docs move with the code: every registered event, hook, route and CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from happy_socket import Settings, create_app, hookspecs
from happy_socket.cli import cli

DOCS = Path(__file__).parents[2] / "docs"


def every_plugin_app() -> object:
    return create_app(Settings(db="sqlite:///:memory:", secret="d" * 32))


def test_every_event_has_a_section_in_events_md() -> None:
    doc = (DOCS / "events.md").read_text()
    app = every_plugin_app()
    events = app.registry.events()  # type: ignore[attr-defined]
    assert len(events) >= 17
    for event in events:
        assert re.search(rf"^##+ `{re.escape(event)}`", doc, re.M), (
            f"event {event} is not in docs/events.md"
        )


def test_every_route_is_in_http_md() -> None:
    doc = (DOCS / "http.md").read_text()
    app = every_plugin_app()
    for info in app.routes.infos:  # type: ignore[attr-defined]
        path = re.sub(r"\{(\w+)\}", r":\1", info.path)
        for method in info.methods:
            assert f"`{method} {path}`" in doc, f"{method} {path} is not in docs/http.md"


def test_every_hook_is_in_plugin_hooks_md() -> None:
    doc = (DOCS / "plugin_hooks.md").read_text()
    hooks = [n for n in dir(hookspecs) if getattr(getattr(hookspecs, n), "happy_socket_spec", None)]
    for name in hooks:
        assert re.search(rf"^### `{name}\(", doc, re.M), (
            f"hook {name} is not in docs/plugin_hooks.md"
        )


def test_every_cli_command_is_in_cli_md() -> None:
    doc = (DOCS / "cli.md").read_text()

    def walk(group: click.Group, prefix: str) -> list[str]:
        ctx = click.Context(group)
        found = []
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                found.extend(walk(command, f"{prefix} {name}"))
            else:
                found.append(f"{prefix} {name}")
        return found

    commands = walk(cli, "happy-socket")
    assert len(commands) >= 6
    for command in commands:
        assert f"`{command}" in doc, f"{command} is not in docs/cli.md"
