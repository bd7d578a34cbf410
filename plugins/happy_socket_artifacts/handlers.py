"""Socket events ``artifact-read|create|update|delete`` (PROTOCOL.md §4.3); envelope ``result``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from happy_socket import Context, HandlerError, InvalidParams, NotFound, UserScopedOnly
from happy_socket.validation import is_int, is_number, require_id, require_object

from .service import MAX_VERSION, ArtifactStore, Part, b64, new_artifact_body, serialize

NOT_FOUND = "Artifact not found"
OTHER_ACCOUNT = "Artifact with this ID already exists for another account"


def _store(ctx: Context) -> ArtifactStore:
    return ArtifactStore(ctx.app)


def _decode(value: Any) -> bytes:
    """Strict standard base64 (padding required), or ``Invalid parameters``."""
    if not isinstance(value, str):
        raise InvalidParams()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParams() from None


def _artifact_id(data: Any, key: str) -> str:
    return require_id(require_object(data), key)


def _absent(value: Any) -> bool:
    """What the reference treats as "not provided": JavaScript-falsy values."""
    if value is None or value is False or value == "":
        return True
    return is_number(value) and value == 0


def _part(value: Any, error: str) -> Part | None:
    if _absent(value):
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
    artifact_id = _artifact_id(data, "artifactId")
    row = await _store(ctx).read(ctx.user_id, artifact_id)
    if row is None:
        raise NotFound(NOT_FOUND)
    return {"result": "success", "artifact": serialize(row)}


async def artifact_create(ctx: Context, data: Any) -> dict[str, Any]:
    """``{id, header, body, dataEncryptionKey}`` (b64) -> the new or existing artifact."""
    artifact_id = _artifact_id(data, "id")
    header, body, key = (_decode(data.get(k)) for k in ("header", "body", "dataEncryptionKey"))
    created = await _store(ctx).create(ctx.user_id, artifact_id, header, body, key)
    if created.row is None:
        raise HandlerError(OTHER_ACCOUNT)
    if created.update_seq is not None:
        await ctx.router.send_update(
            ctx.user_id, created.update_seq, new_artifact_body(created.row), UserScopedOnly()
        )
    return {"result": "success", "artifact": serialize(created.row)}


async def artifact_update(ctx: Context, data: Any) -> dict[str, Any]:
    """Compare-and-set of header and/or body; both checked and written atomically."""
    artifact_id = _artifact_id(data, "artifactId")
    if _absent(data.get("header")) and _absent(data.get("body")):
        raise HandlerError("No updates provided")
    header = _part(data.get("header"), "Invalid header parameters")
    body = _part(data.get("body"), "Invalid body parameters")
    outcome = await _store(ctx).update(ctx.user_id, artifact_id, header, body)
    if outcome.status == "not-found" or outcome.row is None:
        raise NotFound(NOT_FOUND)
    row = outcome.row
    sent = [(name, part) for name, part in (("header", header), ("body", body)) if part is not None]
    if outcome.status == "version-mismatch":
        reply: dict[str, Any] = {"result": "version-mismatch"}
        for name, _ in sent:
            reply[name] = {
                "currentVersion": int(row[f"{name}_version"]),
                "currentData": b64(row[name]),
            }
        return reply
    reply = {"result": "success"}
    update: dict[str, Any] = {"t": "update-artifact", "artifactId": artifact_id}
    for name, _ in sent:
        version, value = int(row[f"{name}_version"]), b64(row[name])
        reply[name] = {"version": version, "data": value}
        update[name] = {"value": value, "version": version}
    assert outcome.update_seq is not None
    await ctx.router.send_update(ctx.user_id, outcome.update_seq, update, UserScopedOnly())
    return reply


async def artifact_delete(ctx: Context, data: Any) -> dict[str, Any]:
    """``{artifactId}`` -> ``{result: "success"}`` and ``delete-artifact``."""
    artifact_id = _artifact_id(data, "artifactId")
    seq = await _store(ctx).delete(ctx.user_id, artifact_id)
    if seq is None:
        raise NotFound(NOT_FOUND)
    body = {"t": "delete-artifact", "artifactId": artifact_id}
    await ctx.router.send_update(ctx.user_id, seq, body, UserScopedOnly())
    return {"result": "success"}
