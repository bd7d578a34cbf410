"""Access keys (docs/events.md, docs/http/access-keys.md): one opaque, versioned key per (user, machine, session).

Needs the ``sessions`` and ``machines`` plugins (their services answer ownership); a
session's keys are deleted with the session.
"""

from __future__ import annotations

import click
import sqlalchemy as sa

from happy_socket import App, Registry, Routes, Services, hookimpl

from .handlers import access_key_get
from .http import PATH, create_key, get_key, update_key
from .service import AccessKeysService
from .tables import access_keys

REQUIRES = ("sessions", "machines")

__all__ = ["REQUIRES", "AccessKeysService"]


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("access-keys", AccessKeysService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    access_keys.to_metadata(metadata)


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("access-key-get", access_key_get, envelope="ok")


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add(PATH, get_key, methods=["GET"], auth=True)
    routes.add(PATH, create_key, methods=["POST"], auth=True)
    routes.add(PATH, update_key, methods=["PUT"], auth=True)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .commands import access_keys_group

    cli.add_command(access_keys_group)


@hookimpl
def startup(app: App) -> None:
    service: AccessKeysService = app.service("access-keys")
    service.listen_for_session_deletes()
