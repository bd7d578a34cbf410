"""``GET``/``POST``/``PUT /v1/access-keys/{sessionId}/{machineId}`` (docs/http/access-keys.md)."""

from __future__ import annotations

from typing import Any

from happy_socket import Conflict, HttpContext, HTTPError, NotFound
from happy_socket.validation import is_int

from .service import AccessKeysService

PATH = "/v1/access-keys/{sessionId}/{machineId}"


def _service(ctx: HttpContext) -> AccessKeysService:
    service: AccessKeysService = ctx.app.service("access-keys")
    return service


def _ids(ctx: HttpContext) -> tuple[str, str]:
    return ctx.param("sessionId"), ctx.param("machineId")


async def get_key(ctx: HttpContext) -> Any:
    """``{accessKey: {...} | null}``; 404 for a session or machine that is not the user's."""
    session_id, machine_id = _ids(ctx)
    try:
        key = await _service(ctx).get(ctx.user, session_id, machine_id)
    except NotFound as exc:
        raise HTTPError(404, exc.message or "Not found") from None
    return {"accessKey": key}


async def create_key(ctx: HttpContext) -> Any:
    """``{data}`` -> ``{success: true, accessKey}``; 404 foreign pair, 409 exists."""
    session_id, machine_id = _ids(ctx)
    body = await ctx.json()
    data = body.get("data")
    if not isinstance(data, str):
        raise HTTPError(400, "Invalid data")
    try:
        key = await _service(ctx).create(ctx.user, session_id, machine_id, data)
    except NotFound as exc:
        raise HTTPError(404, exc.message or "Not found") from None
    except Conflict as exc:
        raise HTTPError(409, exc.message or "Conflict") from None
    return {"success": True, "accessKey": key}


async def update_key(ctx: HttpContext) -> Any:
    """``{data, expectedVersion}`` -> ``{success: true, version}`` or the mismatch shape."""
    session_id, machine_id = _ids(ctx)
    body = await ctx.json()
    data: Any = body.get("data")
    expected: Any = body.get("expectedVersion")
    if not isinstance(data, str):
        raise HTTPError(400, "Invalid data")
    if not is_int(expected) or expected < 0:
        raise HTTPError(400, "Invalid expectedVersion")
    try:
        return await _service(ctx).update(ctx.user, session_id, machine_id, data, expected)
    except NotFound as exc:
        raise HTTPError(404, exc.message or "Not found") from None
