"""Machines (docs/events.md, docs/http/sessions.md): daemons' metadata and state, presence.

Publishes ``app.service("machines")`` (see :class:`MachinesService`).
"""

from __future__ import annotations

import click
import sqlalchemy as sa

from happy_socket import App, ClientType, Context, Registry, Routes, Services, hookimpl

from . import handlers, http
from .service import MachinesService
from .tables import machines

__all__ = ["MachinesService"]


def _service(app: App) -> MachinesService:
    svc: MachinesService = app.service("machines")
    return svc


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("machines", MachinesService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    machines.to_metadata(metadata)


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("machine-alive", handlers.machine_alive)
    registry.add("machine-update-metadata", handlers.machine_update_metadata)
    registry.add("machine-update-state", handlers.machine_update_state)


@hookimpl
def register_routes(routes: Routes) -> None:
    http.register(routes)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .commands import machines_group

    cli.add_command(machines_group)


@hookimpl
async def on_connect(ctx: Context) -> None:
    conn = ctx.connection
    if conn.client_type is ClientType.MACHINE and conn.machine_id is not None:
        svc = _service(ctx.app)
        await svc.connected(conn.user_id, conn.machine_id, conn.sid)
        await svc.announce(conn.user_id, conn.machine_id, True, ctx.clock())


@hookimpl
async def on_disconnect(ctx: Context) -> None:
    conn = ctx.connection
    if conn.client_type is ClientType.MACHINE and conn.machine_id is not None:
        svc = _service(ctx.app)
        await svc.disconnected(conn.sid)
        await svc.announce(conn.user_id, conn.machine_id, False, ctx.clock())


@hookimpl
async def startup(app: App) -> None:
    svc = _service(app)
    svc.activity.start(svc.sweep, plugin="machines")
    await svc.presence.start()
    app.spawn(svc.presence.run(), name="machines-online-refresh")


@hookimpl
async def shutdown(app: App) -> None:
    svc = _service(app)
    await svc.activity.flush()
    await svc.presence.stop()
