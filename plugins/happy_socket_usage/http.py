"""``POST /v1/usage/query`` (bearer auth): the caller's usage totals per hour or day."""

from __future__ import annotations

from typing import Any

import orjson
from happy_socket_sessions import SessionsService

from happy_socket import HttpContext, InvalidParams, NotFound, Routes
from happy_socket.validation import MAX_ID_LENGTH, optional_int, optional_str

from .query import MAX_SAFE_INTEGER, GroupBy, query_usage

GROUPS: dict[Any, GroupBy] = {None: "day", "day": "day", "hour": "hour"}


async def _body(ctx: HttpContext) -> dict[str, Any]:
    """The JSON object body; unlike most routes, no body at all is a 400 here."""
    raw = await ctx.body()
    if not raw.strip():
        raise InvalidParams("Request body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidParams("Invalid JSON body") from None
    if not isinstance(data, dict):
        raise InvalidParams("Request body must be a JSON object")
    return data


async def usage_query(ctx: HttpContext) -> Any:
    """``{sessionId?, startTime?, endTime?, groupBy?}`` (seconds) -> ``{usage, groupBy, totalReports}``."""
    data = await _body(ctx)
    # "" means "all sessions" (as in the reference, where any falsy sessionId does)
    session_id = optional_str(data, "sessionId", error=InvalidParams("Invalid sessionId")) or None
    start, end = (
        optional_int(
            data, name, minimum=1, maximum=MAX_SAFE_INTEGER, error=InvalidParams(f"Invalid {name}")
        )
        for name in ("startTime", "endTime")
    )
    group = data.get("groupBy")
    if not isinstance(group, str | None) or group not in GROUPS:
        raise InvalidParams("Invalid groupBy")
    if session_id is not None and (
        len(session_id) > MAX_ID_LENGTH
        or not await ctx.app.service(SessionsService).owns(ctx.user, session_id)
    ):
        raise NotFound("Session not found")
    return await query_usage(
        ctx.app.db,
        ctx.user,
        session_id=session_id,
        start_s=start,
        end_s=end,
        group_by=GROUPS[group],
    )


def register(routes: Routes) -> None:
    """Add the route."""
    routes.add("/v1/usage/query", usage_query, methods=["POST"], auth="bearer")
