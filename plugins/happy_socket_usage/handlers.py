"""Socket event ``usage-report`` (docs/events.md); envelope ``success``, ordered per socket."""

from __future__ import annotations

from typing import Any

from happy_socket import AccountMissing, Context, HandlerError, NotFound, UserScopedOnly
from happy_socket.validation import is_js_falsy, is_number

from .service import UsageService

MAX_KEY_LENGTH = 256
MAX_SESSION_ID_LENGTH = 256


def _totals(value: Any, message: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not is_number(value.get("total")):
        raise HandlerError(message)
    return value


async def usage_report(ctx: Context, data: Any) -> dict[str, Any]:
    """Validate, check the session, upsert, announce ``usage`` (with a session), ack."""
    payload: dict[str, Any] = data if isinstance(data, dict) else {}
    key = payload.get("key")
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise HandlerError("Invalid key")
    tokens = _totals(payload.get("tokens"), "Invalid tokens object - must include total")
    cost = _totals(payload.get("cost"), "Invalid cost object - must include total")
    raw_session = payload.get("sessionId")
    session_id: str | None = None
    if not is_js_falsy(raw_session):  # how the reference decides it was given
        if not isinstance(raw_session, str):
            raise HandlerError("Invalid sessionId")
        if len(raw_session) > MAX_SESSION_ID_LENGTH or not await ctx.service("sessions").owns(
            ctx.user_id, raw_session
        ):
            raise NotFound("Session not found")
        session_id = raw_session
    service: UsageService = ctx.service("usage")
    try:
        report = await service.save(ctx.user_id, session_id, key, tokens, cost)
    except AccountMissing:
        raise  # the account was deleted: answered as such, not as a storage failure
    except Exception:
        ctx.log.exception("saving a usage report failed")
        raise HandlerError("Failed to save usage report") from None
    if session_id is not None:
        ephemeral = {
            "type": "usage",
            "id": session_id,
            "key": key,
            "tokens": tokens,
            "cost": cost,
            "timestamp": ctx.clock(),
        }
        await ctx.emit_ephemeral(ephemeral, UserScopedOnly())
    return {
        "success": True,
        "reportId": report.id,
        "createdAt": report.created_at,
        "updatedAt": report.updated_at,
    }
