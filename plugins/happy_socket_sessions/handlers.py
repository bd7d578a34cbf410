"""Socket events of sessions and ``app-state`` (docs/events.md, Sessions)."""

from __future__ import annotations

from typing import Any

from happy_socket import (
    ClientType,
    Context,
    HandlerError,
    InterestedInSession,
    InvalidParams,
    NotFound,
)
from happy_socket.presence import heartbeat_time
from happy_socket.validation import MAX_ID_LENGTH, expected_version

from .service import SessionsService

MAX_LOCAL_ID = 256


class SessionError(HandlerError):
    """``{result: "error"}`` without a message, as the protocol answers update-metadata/state."""

    default_message = None


def service(ctx: Context) -> SessionsService:
    """This app's sessions service."""
    svc: SessionsService = ctx.service("sessions")
    return svc


def _sid(data: Any, key: str = "sid") -> str | None:
    if not isinstance(data, dict):
        return None
    sid = data.get(key)
    if not isinstance(sid, str) or not sid or len(sid) > MAX_ID_LENGTH:
        return None
    return sid


async def _update(ctx: Context, data: Any, field: str, nullable: bool) -> dict[str, Any]:
    sid = _sid(data)
    if sid is None:
        raise SessionError()
    value = data.get(field)
    if not (isinstance(value, str) or (nullable and value is None)):
        raise SessionError()
    expected = expected_version(data.get("expectedVersion"))
    if expected is None:
        raise SessionError()
    try:
        version = await service(ctx).compare_and_set(ctx.user_id, sid, field, value, expected)
    except NotFound:
        raise SessionError() from None
    return {"result": "success", "version": version, field: value}


async def update_metadata(ctx: Context, data: Any) -> dict[str, Any]:
    """``update-metadata {sid, metadata, expectedVersion}`` -> compare-and-set ack."""
    return await _update(ctx, data, "metadata", nullable=False)


async def update_state(ctx: Context, data: Any) -> dict[str, Any]:
    """``update-state {sid, agentState, expectedVersion}`` -> compare-and-set ack."""
    return await _update(ctx, data, "agentState", nullable=True)


async def session_alive(ctx: Context, data: Any) -> None:
    """``session-alive {sid, time, thinking?}``: presence heartbeat, no ack."""
    sid = _sid(data)
    if sid is None:
        return
    at = heartbeat_time(data.get("time"), ctx.clock())
    if at is None:
        return
    await service(ctx).heartbeat(ctx.user_id, sid, at, data.get("thinking") is True)


async def session_end(ctx: Context, data: Any) -> None:
    """``session-end {sid, time}``: the session stopped, no ack."""
    sid = _sid(data)
    if sid is None:
        return
    at = heartbeat_time(data.get("time"), ctx.clock())
    if at is None:
        return
    await service(ctx).end(ctx.user_id, sid, at)


async def message(ctx: Context, data: Any) -> dict[str, Any]:
    """``message {sid, message, localId?}``: store with the next seq, relay to the session."""
    sid = _sid(data)
    if sid is None or not isinstance(data.get("message"), str):
        raise InvalidParams()
    local_id = data.get("localId")
    if not isinstance(local_id, str):
        local_id = None
    elif len(local_id) > MAX_LOCAL_ID:
        raise InvalidParams()
    result = await service(ctx).add_message(
        ctx.user_id, sid, data["message"], local_id, write=ctx.write
    )
    if result is None:
        raise NotFound("Session not found")
    msg = result.message
    if result.created and result.seq is not None:
        body = {"t": "new-message", "sid": sid, "message": msg}
        await ctx.router.send_update(
            ctx.user_id, result.seq, body, InterestedInSession(sid), skip_sid=ctx.sid
        )
    return {"result": "success", "id": msg["id"], "seq": msg["seq"], "localId": msg["localId"]}


async def app_state(ctx: Context, data: Any) -> dict[str, Any]:
    """``app-state {state}`` from a user-scoped socket: foreground when ``state == "active"``."""
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        raise InvalidParams()
    if ctx.connection.client_type is not ClientType.USER:
        raise InvalidParams("Only user-scoped sockets have an app state")
    await service(ctx).focus.set(ctx.sid, ctx.user_id, data["state"] == "active")
    return {"result": "success"}
