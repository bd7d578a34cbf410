"""Sessions (docs/events.md, docs/http/sessions.md): compare-and-set updates, messages, presence.

Publishes ``app.service("sessions")`` (see :class:`SessionsService`).
"""

from __future__ import annotations

import click
import sqlalchemy as sa

from happy_socket import App, ClientType, Context, Registry, Routes, Services, hookimpl

from . import handlers, http
from .service import SessionsService
from .tables import session_messages, sessions

__all__ = ["SessionsService"]


def _service(app: App) -> SessionsService:
    svc: SessionsService = app.service("sessions")
    return svc


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("sessions", SessionsService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    sessions.to_metadata(metadata)
    session_messages.to_metadata(metadata)


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("update-metadata", handlers.update_metadata)
    registry.add("update-state", handlers.update_state)
    registry.add("session-alive", handlers.session_alive)
    registry.add("session-end", handlers.session_end, ordered=True)
    registry.add("message", handlers.message, ordered=True)
    registry.add("app-state", handlers.app_state, ordered=True)


@hookimpl
def register_routes(routes: Routes) -> None:
    http.register(routes)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .commands import sessions_group

    cli.add_command(sessions_group)


@hookimpl
async def on_connect(ctx: Context) -> None:
    if ctx.connection.client_type is ClientType.USER:
        await _service(ctx.app).focus.set(
            ctx.sid, ctx.user_id, ctx.connection.app_state == "active"
        )


@hookimpl
async def on_disconnect(ctx: Context) -> None:
    await _service(ctx.app).focus.forget(ctx.sid)


@hookimpl
async def startup(app: App) -> None:
    svc = _service(app)
    await svc.focus.start()
    svc.activity.start(svc.sweep, plugin="sessions")
    app.spawn(svc.focus.run(), name="sessions-app-focus")


@hookimpl
async def shutdown(app: App) -> None:
    svc = _service(app)
    await svc.activity.flush()
    await svc.focus.stop()
