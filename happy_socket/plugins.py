"""The plugin manager of one App: entry points, blocking (``--without``), requirements, and
how the core calls hooks.

**Calling hooks.** The core calls every hook through pluggy, one plugin at a time:
:class:`HookCalls` gives, per plugin that implements a hook, pluggy's own caller for that
plugin's implementation (``pm.subset_hook_caller``), in pluggy's call order (last registered
first, ``tryfirst``/``trylast`` respected). So ``pm.add_hookcall_monitoring`` and
``pm.enable_tracing`` see every call, and a plugin that only *wraps* a hook
(``@hookimpl(wrapper=True)`` or ``hookwrapper=True``) wraps each plugin's call of it. One
plugin at a time rather than one ``pm.hook.<name>(...)`` call for all of them, because:

- assembly hooks: the core must know which plugin registers each event, route, service,
  migration and table (error messages name it; ``happy-socket plugins`` lists it);
- runtime hooks (``on_connect``, ``on_disconnect``, ``shutdown``): a plugin whose
  implementation raises is logged and the others still run (pluggy stops at the first
  exception);
- ``authenticate``: an async implementation is awaited before the next one is asked, so one
  that returns None falls through (pluggy's ``firstresult`` would stop at the first coroutine).

``asgi_wrapper`` and ``register_commands`` need none of this and are called as
``pm.hook.<name>(...)``.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .auth import DefaultAuth
from .errors import ConfigError

ENTRY_POINT_GROUP = "happy_socket"
CORE_PLUGINS = ("core-auth",)


@attrs.frozen
class PluginInfo:
    """What ``happy-socket plugins`` shows for one plugin."""

    name: str
    version: str | None
    enabled: bool
    module: str


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plugins by name (the ``happy_socket`` entry-point group)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def requirements_of(plugin: object) -> tuple[str, ...]:
    """The plugins ``plugin`` needs: its module-level ``REQUIRES`` tuple."""
    requires = getattr(plugin, "REQUIRES", ())
    return (requires,) if isinstance(requires, str) else tuple(requires)


def make_plugin_manager(
    *,
    without: Iterable[str] = (),
    plugins: Iterable[object | tuple[str, object]] = (),
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """A fresh plugin manager: core plugins, installed entry points minus ``without``, extras.

    ``plugins`` adds modules or objects (or ``(name, obj)`` pairs) directly, which is how
    tests and embedding hosts add plugins that are not installed as distributions.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(DefaultAuth(), name="core-auth")
    blocked = set(without)
    installed = entry_points() if load_entry_points else {}
    extra = [_named(p) for p in plugins]
    known = set(installed) | {name for name, _ in extra}
    unknown = sorted(blocked - known)
    if unknown:
        raise ConfigError(
            f"Unknown plugin {unknown[0]!r} in --without: installed plugins are "
            f"{', '.join(sorted(known)) or 'none'}."
        )
    for name in blocked:
        pm.set_blocked(name)
    for name, ep in sorted(installed.items()):
        if name in blocked:
            continue
        try:
            module = ep.load()
        except Exception as exc:
            raise ConfigError(f"Plugin {name!r} failed to import: {exc}.") from exc
        _register(pm, module, name)
    for name, obj in extra:
        if name not in blocked:
            _register(pm, obj, name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hook = _unknown_hook(exc)
        raise ConfigError(
            f"Plugin {pm.get_name(exc.plugin) or '?'!r} implements {hook!r}, which is not a "
            "happy-socket hook (see docs/plugin_hooks.md)."
        ) from None
    check_requirements(pm)
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register ``plugin``; a hook implementation with a wrong argument is one sentence."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        text = str(exc)
        hook = re.search(r"for hook '([^']+)'", text)
        args = re.search(r"Argument\(s\) \{([^}]*)\}", text)
        raise ConfigError(
            f"Plugin {name!r} implements hook {hook.group(1) if hook else '?'!r} with "
            f"argument(s) {args.group(1) if args else '?'} the hook does not have "
            "(see docs/plugin_hooks.md)."
        ) from None


def _unknown_hook(exc: pluggy.PluginValidationError) -> str:
    text = str(exc)
    start = text.find("unknown hook")
    if start >= 0:
        quoted = text[start:].split("'")
        if len(quoted) > 1:
            return quoted[1]
    return text.splitlines()[0] if text else "?"


def _named(plugin: object | tuple[str, object]) -> tuple[str, object]:
    if isinstance(plugin, tuple):
        name, obj = plugin
        return str(name), obj
    if isinstance(plugin, ModuleType):
        return plugin.__name__.removeprefix("happy_socket_"), plugin
    return getattr(plugin, "name", None) or type(plugin).__name__, plugin


def check_requirements(pm: pluggy.PluginManager) -> None:
    """Raise ConfigError naming every enabled plugin whose required plugin is not enabled."""
    enabled = {name for name, _ in enabled_plugins(pm)}
    missing: dict[str, list[str]] = {}
    for name, plugin in sorted(enabled_plugins(pm)):
        for needed in requirements_of(plugin):
            if needed not in enabled:
                missing.setdefault(needed, []).append(name)
    if missing:
        needed, needers = sorted(missing.items())[0]
        names = ", ".join(repr(n) for n in needers)
        plural = "Plugins" if len(needers) > 1 else "Plugin"
        verb = "need" if len(needers) > 1 else "needs"
        raise ConfigError(f"{plural} {names} {verb} plugin {needed!r}, which is not enabled.")


def enabled_plugins(pm: pluggy.PluginManager) -> list[tuple[str, object]]:
    """``(name, plugin)`` of every registered plugin (blocked names are listed as None by pluggy)."""
    return [(name, plugin) for name, plugin in pm.list_name_plugin() if plugin is not None]


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    """Enabled plugin names, core plugins excluded."""
    return sorted(name for name, _ in enabled_plugins(pm) if name not in CORE_PLUGINS)


HookCall = Callable[..., Any]


class HookCalls:
    """Per-plugin pluggy callers of each hook: ``for name, call in hooks.each("startup")``."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._cache: dict[str, tuple[tuple[Any, ...], list[tuple[str, HookCall]]]] = {}

    def each(self, hook: str) -> list[tuple[str, HookCall]]:
        """``(plugin name, call)`` for each plugin implementing ``hook``, in call order.

        ``call(**kwargs)`` runs that plugin's implementation (inside every wrapper of a plugin
        that only wraps ``hook``) through pluggy and returns what the implementation returned.
        Built once per hook, and again if plugins are registered later.
        """
        caller = getattr(self.pm.hook, hook)
        impls = tuple(caller.get_hookimpls())
        cached = self._cache.get(hook)
        if cached is not None and cached[0] == impls:
            return cached[1]
        firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
        plain = [i for i in reversed(impls) if not (i.wrapper or i.hookwrapper)]
        implementers = {i.plugin for i in plain}
        calls = [
            (
                i.plugin_name or "?",
                _one(self.pm.subset_hook_caller(hook, implementers - {i.plugin}), firstresult),
            )
            for i in plain
        ]
        self._cache[hook] = (impls, calls)
        return calls


def _one(caller: pluggy.HookCaller, firstresult: bool) -> HookCall:
    """``caller`` returning its one implementation's result (pluggy returns a list of the
    results that are not None, except for ``firstresult`` hooks)."""
    if firstresult:
        return caller

    def call(**kwargs: Any) -> Any:
        results = caller(**kwargs)
        return results[0] if results else None

    return call


def describe(pm: pluggy.PluginManager, without: Iterable[str] = ()) -> list[PluginInfo]:
    """Every installed or registered plugin, enabled or not."""
    infos: dict[str, PluginInfo] = {}
    for name, ep in entry_points().items():
        infos[name] = PluginInfo(name, _version(ep), name not in set(without), ep.value)
    for name, plugin in enabled_plugins(pm):
        if name in CORE_PLUGINS:
            continue
        if name not in infos:
            module = getattr(plugin, "__name__", type(plugin).__module__)
            infos[name] = PluginInfo(name, None, True, str(module))
    return sorted(infos.values(), key=lambda i: i.name)


def _version(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = ep.dist
    return None if dist is None else dist.version
