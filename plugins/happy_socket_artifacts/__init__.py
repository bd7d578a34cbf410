"""Artifacts (PROTOCOL.md §4.3): encrypted header/body blobs with per-part compare-and-set.

Bytes are stored as bytes and carried as base64; every update goes to ``user-scoped-only``.
"""

from __future__ import annotations

import sqlalchemy as sa

from happy_socket import Registry, hookimpl

from .handlers import artifact_create, artifact_delete, artifact_read, artifact_update
from .tables import artifacts


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    artifacts.to_metadata(metadata)


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("artifact-read", artifact_read)
    registry.add("artifact-create", artifact_create)
    registry.add("artifact-update", artifact_update)
    registry.add("artifact-delete", artifact_delete)
