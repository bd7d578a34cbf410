"""HTTP routes of artifacts: list, read, create, update, delete (bearer auth).

Thin adapters over :class:`ArtifactsService`: the same rows and the same updates as the socket
events, in the HTTP shapes (flat update fields, ``success`` answers, ``dataEncryptionKey`` in
every artifact).
"""

from __future__ import annotations

import re
from typing import Any

from happy_socket import HttpContext, InvalidParams, NotFound, Routes, VersionMismatch
from happy_socket.validation import optional_int, require_b64

from .service import MAX_VERSION, NOT_FOUND, ArtifactsService, Part
from .wire import b64, full, listing

# Blobs are bounded by the request body limit (Settings.max_body_bytes), not separately.
MAX_B64 = 2**31
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PARTS = (("header", "expectedHeaderVersion", "Header"), ("body", "expectedBodyVersion", "Body"))


def _service(ctx: HttpContext) -> ArtifactsService:
    return ctx.app.service(ArtifactsService)


async def list_artifacts(ctx: HttpContext) -> Any:
    """``GET /v1/artifacts``: a bare array, newest ``updatedAt`` first, at most 200, no bodies."""
    return [listing(row) for row in await _service(ctx).list(ctx.user)]


async def read_artifact(ctx: HttpContext) -> Any:
    """``GET /v1/artifacts/:id``: the full artifact."""
    row = await _service(ctx).get(ctx.user, ctx.param("id"))
    if row is None:
        raise NotFound(NOT_FOUND)
    return full(row)


async def create_artifact(ctx: HttpContext) -> Any:
    """``POST /v1/artifacts {id: UUID, header, body, dataEncryptionKey}``."""
    data = await ctx.json()
    artifact_id = data.get("id")
    if not isinstance(artifact_id, str) or not _UUID.fullmatch(artifact_id):
        raise InvalidParams("Invalid id")
    header, body, key = (
        require_b64(data, name, max_length=MAX_B64, error=InvalidParams(f"Invalid {name}"))
        for name in ("header", "body", "dataEncryptionKey")
    )
    return full(await _service(ctx).create(ctx.user, artifact_id, header, body, key))


def _part(data: dict[str, Any], name: str, expected_name: str) -> Part | None:
    """A part counts only when both its data and its expected version are sent."""
    value = data.get(name)
    if value is not None:
        value = require_b64(data, name, max_length=MAX_B64, error=InvalidParams(f"Invalid {name}"))
    error = InvalidParams(f"Invalid {expected_name}")
    expected = optional_int(data, expected_name, minimum=0, maximum=None, error=error)
    if value is None or expected is None:
        return None
    return Part(value, expected if expected < MAX_VERSION else None)


async def update_artifact(ctx: HttpContext) -> Any:
    """``POST /v1/artifacts/:id {header?, expectedHeaderVersion?, body?, expectedBodyVersion?}``."""
    data = await ctx.json()
    header, body = (_part(data, name, expected) for name, expected, _ in _PARTS)
    result = await _service(ctx).update(ctx.user, ctx.param("id"), header, body)
    if result.is_missing:
        raise NotFound(NOT_FOUND)
    row = result.current
    counted = [(spec, p) for spec, p in zip(_PARTS, (header, body), strict=True) if p is not None]
    if result.is_mismatch:
        # only the stale parts (all counted ones if a re-created row matches again)
        stale = [(spec, p) for spec, p in counted if p.expected != row[f"{spec[0]}_version"]]
        fields: dict[str, Any] = {}
        for (name, _, title), _ in stale or counted:
            fields[f"current{title}Version"] = int(row[f"{name}_version"])
            fields[f"current{title}"] = b64(row[name])
        raise VersionMismatch(**fields)
    reply: dict[str, Any] = {"success": True}
    for (name, _, _), _ in counted:
        reply[f"{name}Version"] = int(row[f"{name}_version"])
    return reply


async def delete_artifact(ctx: HttpContext) -> Any:
    """``DELETE /v1/artifacts/:id`` -> ``{"success": true}``."""
    if not await _service(ctx).delete(ctx.user, ctx.param("id")):
        raise NotFound(NOT_FOUND)
    return {"success": True}


def register(routes: Routes) -> None:
    """Add the routes."""
    group = routes.group("/v1/artifacts", auth="bearer")
    group.add("", list_artifacts, methods=["GET"])
    group.add("", create_artifact, methods=["POST"])
    group.add("/{id}", read_artifact, methods=["GET"])
    group.add("/{id}", update_artifact, methods=["POST"])
    group.add("/{id}", delete_artifact, methods=["DELETE"])
