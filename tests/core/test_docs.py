"""Docs move with the code: every registered event, hook, route and CLI command is documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click

from happy_socket import Settings, create_app, hookspecs
from happy_socket.cli import cli
from happy_socket.plugins import entry_points

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"


def builtin_plugins() -> set[str]:
    """The plugins this repository ships (its pyproject's entry points), not whatever else is
    installed: a third-party plugin's events and routes are documented by that plugin."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    return set(project["entry-points"]["happy_socket"])


def http_docs() -> str:
    """docs/http.md and the per-plugin pages under docs/http/."""
    pages = [DOCS / "http.md", *sorted((DOCS / "http").glob("*.md"))]
    return "\n".join(page.read_text() for page in pages)


def every_plugin_app() -> object:
    return create_app(Settings(db="sqlite:///:memory:", secret="d" * 32))


def test_every_event_has_a_section_in_events_md() -> None:
    doc = (DOCS / "events.md").read_text()
    app = every_plugin_app()
    builtin = builtin_plugins()
    events = [h.event for h in app.registry if h.plugin in builtin]  # type: ignore[attr-defined]
    assert len(events) >= 17
    for event in events:
        assert re.search(rf"^##+ `{re.escape(event)}`", doc, re.M), (
            f"event {event} is not in docs/events.md"
        )


def test_every_route_is_in_http_md() -> None:
    doc = http_docs()
    app = every_plugin_app()
    builtin = builtin_plugins()
    infos = [i for i in app.routes.infos if i.plugin in builtin]  # type: ignore[attr-defined]
    assert len(infos) >= 10
    for info in infos:
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

    theirs = click.Group("third-party")  # installed plugins' commands: documented by them
    for name, ep in entry_points().items():
        register = getattr(ep.load(), "register_commands", None)
        if name not in builtin_plugins() and register is not None:
            register(cli=theirs)

    def walk(group: click.Group, prefix: str) -> list[str]:
        ctx = click.Context(group)
        found = []
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if group is cli and name in theirs.commands:
                continue
            if isinstance(command, click.Group):
                found.extend(walk(command, f"{prefix} {name}"))
            else:
                found.append(f"{prefix} {name}")
        return found

    commands = walk(cli, "happy-socket")
    assert len(commands) >= 6
    for command in commands:
        assert f"`{command}" in doc, f"{command} is not in docs/cli.md"
