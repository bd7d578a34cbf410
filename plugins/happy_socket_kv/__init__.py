"""A per-user key-value store over HTTP: versioned byte values, all-or-nothing batches.

Routes under ``/v1/kv``; publishes ``app.service(KvService)``. No happy client calls these
routes today; they are served so that a client that does finds them. Every committed batch
emits one ``kv-batch-update`` to ``user-scoped-only``.
"""

from __future__ import annotations

import sqlalchemy as sa

from happy_socket import App, Routes, Services, hookimpl

from . import http
from .service import Entry, KvConflict, KvService, Mutation
from .tables import kv_entries

__all__ = ["Entry", "KvConflict", "KvService", "Mutation"]


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("kv", KvService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    kv_entries.to_metadata(metadata)


@hookimpl
def register_routes(routes: Routes) -> None:
    http.register(routes)
