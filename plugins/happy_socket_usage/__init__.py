"""Usage reports (docs/events.md, Usage): token/cost totals per (user, session-or-none, key).

The socket event ``usage-report`` stores them; ``POST /v1/usage/query`` sums them per hour or
day. Needs the ``sessions`` plugin (its service answers ownership and announces deletes).
"""

from __future__ import annotations

import sqlalchemy as sa

from happy_socket import App, Registry, Routes, Services, hookimpl

from . import http
from .handlers import usage_report
from .service import UsageService
from .tables import usage_reports

REQUIRES = ("sessions",)

__all__ = ["REQUIRES", "UsageService"]


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("usage", UsageService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    usage_reports.to_metadata(metadata)


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("usage-report", usage_report, envelope="success", ordered=True)


@hookimpl
def register_routes(routes: Routes) -> None:
    http.register(routes)


@hookimpl
def startup(app: App) -> None:
    service: UsageService = app.service("usage")
    service.listen_for_session_deletes()
