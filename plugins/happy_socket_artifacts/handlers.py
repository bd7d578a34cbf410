"""Socket events ``artifact-read|create|update|delete`` (docs/events.md); envelope ``result``.

Thin adapters over :class:`ArtifactsService`, which writes, allocates the seq and emits.
"""

from __future__ import annotations

from typing import Any

from happy_socket import Context, HandlerError, InvalidParams, NotFound
from happy_socket.validation import (
    decode_b64,
    is_int,
    is_js_falsy,
    is_number,
    require_id,
    require_object,
)

from .service import MAX_VERSION, NOT_FOUND, ArtifactsService, Part
from .wire import b64, serialize


def _service(ctx: Context) -> ArtifactsService:
    return ctx.service(ArtifactsService)


def _decode(value: Any) -> bytes:
    """Strict standard base64 (padding required), or ``Invalid parameters``."""
    decoded = decode_b64(value, max_length=None)
    if decoded is None:
        raise InvalidParams()
    return decoded


def _artifact_id(data: Any, key: str) -> str:
    """A bad payload or id is always ``Invalid parameters`` (the message the events document)."""
    return require_id(require_object(data), key, error=InvalidParams())


def _part(value: Any, error: str) -> Part | None:
    if is_js_falsy(value):  # what the reference treats as "not provided"
        return None
    if not isinstance(value, dict):
        raise HandlerError(error)
    data: Any = value.get("data")
    expected: Any = value.get("expectedVersion")
    if not isinstance(data, str) or not is_number(expected):
        raise HandlerError(error)
    fits = is_int(expected) and 0 <= expected < MAX_VERSION
    return Part(_decode(data), expected if fits else None)


async def artifact_read(ctx: Context, data: Any) -> dict[str, Any]:
    """``{artifactId}`` -> ``{result: "success", artifact}``."""
    row = await _service(ctx).get(ctx.user_id, _artifact_id(data, "artifactId"))
    if row is None:
        raise NotFound(NOT_FOUND)
    return {"result": "success", "artifact": serialize(row)}


async def artifact_create(ctx: Context, data: Any) -> dict[str, Any]:
    """``{id, header, body, dataEncryptionKey}`` (b64) -> the new or existing artifact."""
    artifact_id = _artifact_id(data, "id")
    header, body, key = (_decode(data.get(k)) for k in ("header", "body", "dataEncryptionKey"))
    row = await _service(ctx).create(ctx.user_id, artifact_id, header, body, key)
    return {"result": "success", "artifact": serialize(row)}


async def artifact_update(ctx: Context, data: Any) -> dict[str, Any]:
    """Compare-and-set of header and/or body; both checked and written atomically."""
    artifact_id = _artifact_id(data, "artifactId")
    if is_js_falsy(data.get("header")) and is_js_falsy(data.get("body")):
        raise HandlerError("No updates provided")
    header = _part(data.get("header"), "Invalid header parameters")
    body = _part(data.get("body"), "Invalid body parameters")
    result = await _service(ctx).update(ctx.user_id, artifact_id, header, body)
    if result.is_missing:
        raise NotFound(NOT_FOUND)
    row = result.current
    sent = [name for name, part in (("header", header), ("body", body)) if part is not None]
    if result.is_mismatch:
        # only the stale parts are named: a fresh part sent beside a stale one is not
        reply: dict[str, Any] = {"result": "version-mismatch"}
        for name, part in (("header", header), ("body", body)):
            if part is None or part.expected == int(row[f"{name}_version"]):
                continue
            reply[name] = {
                "currentVersion": int(row[f"{name}_version"]),
                "currentData": b64(row[name]),
            }
        return reply
    reply = {"result": "success"}
    for name in sent:
        reply[name] = {"version": int(row[f"{name}_version"]), "data": b64(row[name])}
    return reply


async def artifact_delete(ctx: Context, data: Any) -> dict[str, Any]:
    """``{artifactId}`` -> ``{result: "success"}`` (the service emits ``delete-artifact``)."""
    if not await _service(ctx).delete(ctx.user_id, _artifact_id(data, "artifactId")):
        raise NotFound(NOT_FOUND)
    return {"result": "success"}
