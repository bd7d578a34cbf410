"""HTTP routes of sessions (PROTOCOL.md §10): create/load, list, messages."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from happy_socket import HttpContext, HTTPError, Routes

from .service import SessionsService

MAX_TAG = 1024


def _service(ctx: HttpContext) -> SessionsService:
    svc: SessionsService = ctx.app.service("sessions")
    return svc


def decode_key(value: Any) -> bytes | None:
    """An optional b64 ``dataEncryptionKey`` (null/absent -> None); 400 when invalid."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise HTTPError(400, "Invalid dataEncryptionKey")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "Invalid dataEncryptionKey") from None


async def create_session(ctx: HttpContext) -> Any:
    """``POST /v1/sessions {tag, metadata, agentState?, dataEncryptionKey?}``."""
    data = await ctx.json()
    tag, metadata, agent_state = data.get("tag"), data.get("metadata"), data.get("agentState")
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG:
        raise HTTPError(400, "Invalid tag")
    if not isinstance(metadata, str):
        raise HTTPError(400, "Invalid metadata")
    if agent_state is not None and not isinstance(agent_state, str):
        raise HTTPError(400, "Invalid agentState")
    key = decode_key(data.get("dataEncryptionKey"))
    session, _ = await _service(ctx).create_or_load(ctx.user, tag, metadata, agent_state, key)
    return {"session": {**session, "lastMessage": None}}


async def list_sessions(ctx: HttpContext) -> Any:
    """``GET /v1/sessions``: at most 150, most recently updated first."""
    rows = await _service(ctx).list(ctx.user)
    return {"sessions": [{**s, "lastMessage": None} for s in rows]}


async def list_messages(ctx: HttpContext) -> Any:
    """``GET /v1/sessions/:sessionId/messages``: at most 150, newest first."""
    messages = await _service(ctx).messages(ctx.user, ctx.param("sessionId"))
    if messages is None:
        raise HTTPError(404, "Session not found")
    return {"messages": messages}


def register(routes: Routes) -> None:
    """Add the routes."""
    routes.add("/v1/sessions", create_session, methods=["POST"], auth=True)
    routes.add("/v1/sessions", list_sessions, methods=["GET"], auth=True)
    routes.add("/v1/sessions/{sessionId}/messages", list_messages, methods=["GET"], auth=True)
