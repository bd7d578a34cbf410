"""Every hook is called, at the right moment, with the documented arguments."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from happy_socket import (
    App,
    ConfigError,
    Context,
    HttpContext,
    Migrations,
    Registry,
    Routes,
    Services,
    Settings,
    Tx,
    create_app,
    hookimpl,
    hookspecs,
)
from happy_socket.storage import current_versions
from happy_socket.testing import ServerHarness

notes = sa.Table(
    "recorder_notes",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)


class Recorder:
    """Implements every hook and records each call."""

    def __init__(self, version: int = 1) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.version = version

    @hookimpl
    def register_handlers(self, registry: Registry, app: App) -> None:
        self.calls.append(("register_handlers", registry.current_plugin))

        async def hello(ctx: Context, data: Any) -> Any:
            return {"hello": ctx.user_id, "service": ctx.service("recorder")}

        registry.add("hello", hello)

    @hookimpl
    def register_tables(self, metadata: sa.MetaData) -> None:
        self.calls.append(("register_tables", None))
        notes.to_metadata(metadata)

    @hookimpl
    def register_migrations(self, migrations: Migrations) -> None:
        self.calls.append(("register_migrations", migrations.current_plugin))
        if self.version >= 2:

            async def add_first_note(tx: Tx) -> None:
                await tx.execute(notes.insert().values(text="migrated to 2"))

            migrations.add(2, add_first_note)

    @hookimpl
    def register_routes(self, routes: Routes) -> None:
        self.calls.append(("register_routes", routes.current_plugin))

        async def whoami(ctx: HttpContext) -> Any:
            return {"user": ctx.user}

        routes.add("/recorder/whoami", whoami, auth=True)

    @hookimpl
    def register_services(self, services: Services) -> None:
        self.calls.append(("register_services", services.current_plugin))
        services.add("recorder", "a service object")

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        self.calls.append(("register_commands", None))

        @cli.command("recorder-hello")
        def hello() -> None:
            click.echo("hello from a plugin command")

    @hookimpl
    async def authenticate(self, app: App, token: str, auth: dict[str, Any]) -> str | None:
        self.calls.append(("authenticate", token))
        return "magic-user" if token == "magic" else None

    @hookimpl
    async def on_connect(self, ctx: Context) -> None:
        self.calls.append(("on_connect", ctx.user_id))

    @hookimpl
    def on_disconnect(self, ctx: Context, reason: str) -> None:
        self.calls.append(("on_disconnect", (ctx.user_id, reason)))

    @hookimpl
    async def startup(self, app: App) -> None:
        self.calls.append(("startup", app.started))

    @hookimpl
    def shutdown(self, app: App) -> None:
        self.calls.append(("shutdown", None))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make(recorder: Recorder, db: str) -> App:
    return create_app(
        Settings(db=db, secret="s" * 32), plugins=[("recorder", recorder)], load_entry_points=False
    )


async def test_assembly_hooks_run_at_create_app(sqlite_url: str) -> None:
    recorder = Recorder()
    app = make(recorder, sqlite_url)
    assert ("register_handlers", "recorder") in recorder.calls
    assert ("register_routes", "recorder") in recorder.calls
    assert ("register_services", "recorder") in recorder.calls
    assert ("register_migrations", "recorder") in recorder.calls
    assert "register_tables" in recorder.names()
    assert app.tables["recorder"] == [app.metadata.tables["recorder_notes"]]
    assert app.service("recorder") == "a service object"
    assert "hello" in app.registry and app.registry.get("hello").plugin == "recorder"  # type: ignore[union-attr]


async def test_lifecycle_connect_and_authenticate_hooks(make_server: Any) -> None:
    recorder = Recorder()
    server: ServerHarness = await make_server(
        plugins=[("recorder", recorder)], load_entry_points=False
    )
    assert recorder.calls[-1] == ("startup", False)  # before the app counts as started
    # a plugin's authenticate accepts its own tokens...
    magic = await server.connect({"token": "magic"})
    assert await magic.call("hello") == {"hello": "magic-user", "service": "a service object"}
    # ...and the core's default still answers for the server's tokens (fall-through)
    alice = await server.client("alice")
    assert (await alice.call("hello"))["hello"] == "alice"
    assert ("authenticate", "magic") in recorder.calls
    assert ("on_connect", "magic-user") in recorder.calls and (
        "on_connect",
        "alice",
    ) in recorder.calls
    await magic.disconnect()
    for _ in range(50):
        if "on_disconnect" in recorder.names():
            break
        await asyncio.sleep(0.02)
    [(_, (user, reason))] = [c for c in recorder.calls if c[0] == "on_disconnect"]
    assert user == "magic-user" and reason
    # routes are served and use the authenticate hook for bearer tokens
    async with httpx.AsyncClient(base_url=server.url) as http:
        ok = await http.get("/recorder/whoami", headers={"Authorization": "Bearer magic"})
        assert (ok.status_code, ok.json()) == (200, {"user": "magic-user"})
        missing = await http.get("/recorder/whoami")
        assert (missing.status_code, missing.json()) == (
            401,
            {"error": "Missing authorization header"},
        )
        bad = await http.get("/recorder/whoami", headers={"Authorization": "Bearer nope"})
        assert (bad.status_code, bad.json()) == (401, {"error": "Invalid token"})
    await server.__aexit__(None, None, None)
    assert recorder.names()[-1] == "shutdown"


async def test_tables_created_and_migrations_run_once(sqlite_url: str) -> None:
    app = make(Recorder(version=1), sqlite_url)
    await app.startup()
    assert (await current_versions(app.db))["recorder"] == 1
    assert await app.db.fetch_all(sa.select(notes)) == []
    await app.shutdown()

    upgraded = make(Recorder(version=2), sqlite_url)
    await upgraded.startup()
    assert (await current_versions(upgraded.db))["recorder"] == 2
    assert [r["text"] for r in await upgraded.db.fetch_all(sa.select(notes))] == ["migrated to 2"]
    await upgraded.shutdown()

    again = make(Recorder(version=2), sqlite_url)
    await again.startup()
    assert len(await again.db.fetch_all(sa.select(notes))) == 1
    await again.shutdown()


async def test_fresh_database_starts_at_the_latest_version(sqlite_url: str) -> None:
    app = make(Recorder(version=2), sqlite_url)
    await app.startup()
    assert (await current_versions(app.db))["recorder"] == 2
    assert await app.db.fetch_all(sa.select(notes)) == []  # step 2 is for old databases only
    await app.shutdown()


def test_register_commands_adds_click_commands(sqlite_url: str) -> None:
    recorder = Recorder()
    app = make(recorder, sqlite_url)
    group = click.Group("happy-socket")
    app.pm.hook.register_commands(cli=group)
    assert "register_commands" in recorder.names()
    result = CliRunner().invoke(group, ["recorder-hello"])
    assert result.exit_code == 0 and result.output == "hello from a plugin command\n"


def test_every_hook_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "plugin_hooks.md").read_text()
    hooks = [
        name
        for name in dir(hookspecs)
        if getattr(getattr(hookspecs, name), "happy_socket_spec", None)
    ]
    assert len(hooks) >= 11
    for name in hooks:
        assert re.search(rf"^### `{name}\(", doc, re.M), f"hook {name} is not documented"


class Wrapper:
    """Only wraps ``startup`` and ``shutdown``: it sees each plugin's call and its result."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl(wrapper=True)
    def startup(self, app: App) -> Any:
        result = yield
        self.seen.append(("startup", result))
        return result

    @hookimpl(wrapper=True)
    def shutdown(self, app: App) -> Any:
        result = yield
        self.seen.append(("shutdown", result))
        return result


class BrokenShutdown:
    @hookimpl
    def shutdown(self) -> None:
        raise RuntimeError("boom")


async def test_hooks_go_through_pluggy_with_monitoring_and_wrappers(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder, wrapper = Recorder(), Wrapper()
    app = create_app(
        Settings(db=sqlite_url, secret="s" * 32),
        plugins=[("broken", BrokenShutdown()), ("recorder", recorder), ("wrapper", wrapper)],
        load_entry_points=False,
    )
    monitored: list[tuple[str, list[str]]] = []
    app.pm.add_hookcall_monitoring(
        lambda hook, impls, kwargs: monitored.append((hook, [i.plugin_name for i in impls])),
        lambda outcome, hook, impls, kwargs: None,
    )
    await app.startup()
    # each plugin's implementation is called alone, inside the wrapper, through pluggy
    assert ("startup", ["recorder", "wrapper"]) in monitored
    assert ("startup", ["core-auth", "wrapper"]) in monitored
    assert len(wrapper.seen) == 2 and all(name == "startup" for name, _ in wrapper.seen)
    assert "startup" in recorder.names()
    await app.shutdown()
    # a plugin whose shutdown raises is logged; the others' still run
    assert recorder.names()[-1] == "shutdown"
    assert [m for m in monitored if m[0] == "shutdown"] == [
        ("shutdown", [name, "wrapper"]) for name in ("recorder", "broken", "core-auth")
    ]
    assert "hook shutdown of plugin broken failed" in caplog.text


class SameTable:
    @hookimpl
    def register_tables(self, metadata: sa.MetaData) -> None:
        notes.to_metadata(metadata)


def test_two_plugins_declaring_one_table_is_one_sentence(sqlite_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        create_app(
            Settings(db=sqlite_url, secret="s" * 32),
            plugins=[("recorder", Recorder()), ("copycat", SameTable())],
            load_entry_points=False,
        )
    first, second = "recorder", "copycat"  # pluggy calls the last registered first
    assert str(refused.value) == (
        f"Table 'recorder_notes' of plugin {first!r} is declared by plugin {second!r} too."
    )
