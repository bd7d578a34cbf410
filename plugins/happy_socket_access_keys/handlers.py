"""Socket event ``access-key-get`` (docs/events.md); envelope ``ok``."""

from __future__ import annotations

from typing import Any

from happy_socket import Context, InvalidParams
from happy_socket.validation import require_id, require_object

from .service import AccessKeysService

INVALID = "Invalid parameters: sessionId and machineId are required"


def service_of(ctx: Context) -> AccessKeysService:
    """This plugin's published service."""
    service: AccessKeysService = ctx.service("access-keys")
    return service


async def access_key_get(ctx: Context, data: Any) -> dict[str, Any]:
    """``{sessionId, machineId}`` -> ``{ok: true, accessKey: {...} | null}``."""
    error = InvalidParams(INVALID)
    payload = require_object(data, error)
    session_id = require_id(payload, "sessionId", error)
    machine_id = require_id(payload, "machineId", error)
    key = await service_of(ctx).get(ctx.user_id, session_id, machine_id)
    return {"ok": True, "accessKey": key}
