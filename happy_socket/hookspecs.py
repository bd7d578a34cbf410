"""Every hook a plugin can implement. Hooks run at assembly or lifecycle points, never per event.

A hook may return an awaitable where noted; the core awaits it. An implementation may
accept any subset of a hook's arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    import sqlalchemy as sa

    from .app import App, Services
    from .context import Context
    from .http import Routes
    from .registry import Registry
    from .storage import Migrations

hookspec = pluggy.HookspecMarker("happy_socket")
hookimpl = pluggy.HookimplMarker("happy_socket")


@hookspec
def register_handlers(registry: Registry, app: App) -> None:
    """Add socket event handlers with ``registry.add(event, fn, envelope=..., ordered=...)``."""


@hookspec
def register_tables(metadata: sa.MetaData, app: App) -> None:
    """Add SQLAlchemy Core tables (at their latest shape) to the shared ``metadata``."""


@hookspec
def register_migrations(migrations: Migrations, app: App) -> None:
    """Add schema upgrade steps with ``migrations.add(version, step)`` (version 2 onwards)."""


@hookspec
def register_routes(routes: Routes, app: App) -> None:
    """Add HTTP routes with ``routes.add(path, endpoint, methods=[...])``."""


@hookspec
def asgi_wrapper(app: App) -> Any:
    """Return a function that wraps the HTTP ASGI app (middleware), or None."""


@hookspec
def register_services(services: Services, app: App) -> None:
    """Publish service objects other plugins use, with ``services.add(name, obj)``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``happy-socket`` command group."""


@hookspec(firstresult=True)
def authenticate(app: App, token: str, auth: dict[str, Any]) -> Any:
    """Return the user id for ``token`` (or an awaitable of it), or None to refuse it."""


@hookspec
def on_connect(ctx: Context) -> Any:
    """An authenticated socket joined its rooms; may return an awaitable."""


@hookspec
def on_disconnect(ctx: Context, reason: str) -> Any:
    """A socket left; may return an awaitable."""


@hookspec
def startup(app: App) -> Any:
    """The database is connected and migrated; start background work (may return an awaitable)."""


@hookspec
def shutdown(app: App) -> Any:
    """The server is stopping; stop background work and flush (may return an awaitable)."""
