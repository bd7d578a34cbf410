"""Artifacts (docs/events.md, docs/http/artifacts.md): encrypted header/body blobs with per-part compare-and-set.

Socket events and HTTP routes (``/v1/artifacts``) over one service,
``app.service(ArtifactsService)``, which owns the writes, the update seq and the emits.
Bytes are stored as bytes and carried as base64; every update goes to ``user-scoped-only``.
"""

from __future__ import annotations

import sqlalchemy as sa

from happy_socket import App, Registry, Routes, Services, hookimpl

from . import http
from .handlers import artifact_create, artifact_delete, artifact_read, artifact_update
from .service import ArtifactsService, Part
from .tables import artifacts

__all__ = ["ArtifactsService", "Part"]


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("artifacts", ArtifactsService(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    artifacts.to_metadata(metadata)


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("artifact-read", artifact_read)
    registry.add("artifact-create", artifact_create)
    registry.add("artifact-update", artifact_update)
    registry.add("artifact-delete", artifact_delete)


@hookimpl
def register_routes(routes: Routes) -> None:
    http.register(routes)
