"""Registry: adding handlers, duplicates naming both plugins, reserved names, plugin requirements."""

from __future__ import annotations

from typing import Any

import pytest

from happy_socket import ConfigError, Context, Envelope, Registry, Settings, create_app, hookimpl


async def handler(ctx: Context, data: Any) -> Any:
    return data


def test_add_records_envelope_order_and_plugin() -> None:
    registry = Registry()
    registry.current_plugin = "demo"
    h = registry.add("demo-event", handler, envelope="ok", ordered=True)
    assert (h.event, h.envelope, h.ordered, h.plugin) == ("demo-event", Envelope.OK, True, "demo")
    assert registry.get("demo-event") is h
    assert "demo-event" in registry and len(registry) == 1
    assert registry.events() == ["demo-event"]


def test_default_envelope_is_result_and_unordered() -> None:
    h = Registry().add("x", handler)
    assert h.envelope is Envelope.RESULT and not h.ordered


@pytest.mark.parametrize("name", ["", "connect", "disconnect", "*", None, 5])
def test_reserved_or_invalid_names_are_refused(name: Any) -> None:
    with pytest.raises(ConfigError):
        Registry().add(name, handler)


def test_sync_handler_is_refused() -> None:
    def sync(ctx: Context, data: Any) -> Any:
        return data

    with pytest.raises(ConfigError, match="must be an async function"):
        Registry().add("x", sync)  # type: ignore[arg-type]


def test_unknown_envelope_is_refused() -> None:
    with pytest.raises(ValueError):
        Registry().add("x", handler, envelope="nope")


class PluginA:
    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("shared-event", handler)


class PluginB:
    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("shared-event", handler)


def test_two_plugins_registering_one_event_name_both() -> None:
    with pytest.raises(ConfigError) as info:
        create_app(
            Settings(db="sqlite:///:memory:"),
            plugins=[("alpha", PluginA()), ("beta", PluginB())],
            load_entry_points=False,
        )
    message = str(info.value)
    assert "'shared-event'" in message and "'alpha'" in message and "'beta'" in message


class NeedsOther:
    REQUIRES = ("other",)


def test_missing_required_plugin_stops_start_up_in_one_sentence() -> None:
    with pytest.raises(ConfigError) as info:
        create_app(
            Settings(db="sqlite:///:memory:"),
            plugins=[("needy", NeedsOther())],
            load_entry_points=False,
        )
    assert str(info.value) == "Plugin 'needy' needs plugin 'other', which is not enabled."


def test_requirement_met_when_present() -> None:
    class Other:
        pass

    app = create_app(
        Settings(db="sqlite:///:memory:"),
        plugins=[("needy", NeedsOther()), ("other", Other())],
        load_entry_points=False,
    )
    assert app.plugin_names == ["needy", "other"]


def test_unknown_without_name_is_one_sentence() -> None:
    with pytest.raises(ConfigError) as info:
        create_app(Settings(db="sqlite:///:memory:", without=("nope",)))
    assert str(info.value).startswith("Unknown plugin 'nope' in --without: installed plugins are ")
    assert str(info.value).endswith(".")


def test_without_leaves_an_installed_plugin_out() -> None:
    app = create_app(Settings(db="sqlite:///:memory:", without=("ping",)))
    assert "ping" not in app.plugin_names
    assert "ping" not in app.registry
    app = create_app(Settings(db="sqlite:///:memory:"))
    assert "ping" in app.plugin_names and "ping" in app.registry


def test_plugin_mistakes_are_one_sentence_each() -> None:
    import pytest as _pytest

    from happy_socket import Settings, create_app, hookimpl
    from happy_socket.errors import ConfigError

    class Typo:
        @hookimpl
        def register_handler(self, registry: object) -> None:  # not a hook: missing "s"
            pass

    class WrongArgument:
        @hookimpl
        def register_handlers(self, registri: object) -> None:
            pass

    settings = Settings(db="sqlite:///:memory:", secret="s" * 32)
    with _pytest.raises(
        ConfigError,
        match=r"^Plugin 'x' implements 'register_handler', which is not a happy-socket hook",
    ):
        create_app(settings, plugins=[("x", Typo())], load_entry_points=False)
    with _pytest.raises(
        ConfigError,
        match=r"^Plugin 'x' implements hook 'register_handlers' with argument\(s\) 'registri'",
    ):
        create_app(settings, plugins=[("x", WrongArgument())], load_entry_points=False)
    with _pytest.raises(
        ConfigError, match=r"^Plugins 'access-keys', 'usage' need plugin 'sessions'"
    ):
        create_app(settings.evolve(without=("sessions",)))
