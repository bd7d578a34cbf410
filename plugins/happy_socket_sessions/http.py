"""HTTP routes of sessions: create/load, lists, messages (v1 and v3), archive, delete, push-event.

The routes are documented in docs/http.md (create, list, v1 messages) and docs/http/sessions.md.
"""

from __future__ import annotations

from typing import Any

from happy_socket import HttpContext, HTTPError, InvalidParams, NotFound, Routes
from happy_socket.validation import optional_b64, require_str

from .batch import MAX_MESSAGES
from .handlers import MAX_LOCAL_ID
from .service import SessionsService

MAX_TAG = 1024
SESSION_NOT_FOUND = "Session not found"
DELETE_NOT_FOUND = "Session not found or not owned by user"
CURSOR_PREFIX = "cursor_v1_"
PUSH_KINDS = ("done", "permission", "question")


def _service(ctx: HttpContext) -> SessionsService:
    return ctx.app.service(SessionsService)


def _invalid(field: str) -> HTTPError:
    """The 400 body these routes have always answered: ``{"error": "Invalid <field>"}``."""
    return HTTPError(400, f"Invalid {field}")


async def create_session(ctx: HttpContext) -> Any:
    """``POST /v1/sessions {tag, metadata, agentState?, dataEncryptionKey?}``."""
    data = await ctx.json()
    tag = require_str(data, "tag", max_length=MAX_TAG, error=_invalid("tag"))
    metadata = require_str(data, "metadata", allow_empty=True, error=_invalid("metadata"))
    agent_state = data.get("agentState")
    if agent_state is not None:
        agent_state = require_str(
            data, "agentState", allow_empty=True, error=_invalid("agentState")
        )
    key = optional_b64(data, "dataEncryptionKey", error=_invalid("dataEncryptionKey"))
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
        raise NotFound(SESSION_NOT_FOUND)
    return {"messages": messages}


async def page_messages(ctx: HttpContext) -> Any:
    """``GET /v3/sessions/:sessionId/messages?after_seq|before_seq&limit``."""
    after = ctx.query_int("after_seq", minimum=0)
    before = ctx.query_int("before_seq", minimum=1)
    limit = ctx.query_int("limit", default=100, minimum=1, maximum=500)
    assert limit is not None
    if after is not None and before is not None:
        raise HTTPError(400, "Cannot specify both after_seq and before_seq")
    page = await _service(ctx).page_messages(
        ctx.user, ctx.param("sessionId"), after=after, before=before, limit=limit
    )
    if page is None:
        raise NotFound(SESSION_NOT_FOUND)
    messages, has_more = page
    return {"messages": messages, "hasMore": has_more}


async def post_messages(ctx: HttpContext) -> Any:
    """``POST /v3/sessions/:sessionId/messages {messages: [{localId, content}]}`` (1-100)."""
    data = await ctx.json()
    batch = data.get("messages")
    if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_MESSAGES:
        raise InvalidParams(f"messages must be a list of 1 to {MAX_MESSAGES} items")
    items: list[tuple[str, str]] = []
    for item in batch:
        if not isinstance(item, dict):
            raise InvalidParams("Invalid message")
        local_id = require_str(item, "localId", max_length=MAX_LOCAL_ID)
        items.append((local_id, require_str(item, "content", allow_empty=True)))
    messages = await _service(ctx).post_messages(ctx.user, ctx.param("sessionId"), items)
    if messages is None:
        raise NotFound(SESSION_NOT_FOUND)
    return {"messages": messages}


async def archive_session(ctx: HttpContext) -> Any:
    """``POST /v1/sessions/:sessionId/archive``: inactive now (the body is ignored)."""
    if not await _service(ctx).archive(ctx.user, ctx.param("sessionId")):
        raise NotFound(SESSION_NOT_FOUND)
    return {"success": True}


async def delete_session(ctx: HttpContext) -> Any:
    """``DELETE /v1/sessions/:sessionId``: the session, its messages and dependants."""
    if not await _service(ctx).delete(ctx.user, ctx.param("sessionId")):
        raise NotFound(DELETE_NOT_FOUND)
    return {"success": True}


async def list_active(ctx: HttpContext) -> Any:
    """``GET /v2/sessions/active?limit``: active in the last 15 minutes (no lastMessage)."""
    limit = ctx.query_int("limit", default=150, minimum=1, maximum=500)
    assert limit is not None
    return {"sessions": await _service(ctx).list_active(ctx.user, limit)}


async def list_by_cursor(ctx: HttpContext) -> Any:
    """``GET /v2/sessions?cursor&limit&changedSince``: by id descending, cursor paged."""
    cursor = ctx.query.get("cursor") or None
    if cursor is not None and not cursor.startswith(CURSOR_PREFIX):
        raise HTTPError(400, "Invalid cursor format")
    below = cursor[len(CURSOR_PREFIX) :] if cursor else None
    limit = ctx.query_int("limit", default=50, minimum=1, maximum=200)
    assert limit is not None
    changed_since = ctx.query_int("changedSince", minimum=1)
    sessions, has_next = await _service(ctx).list_page(
        ctx.user, below=below, limit=limit, changed_since=changed_since
    )
    next_cursor = CURSOR_PREFIX + sessions[-1]["id"] if has_next and sessions else None
    return {"sessions": sessions, "nextCursor": next_cursor, "hasNext": has_next}


def _utf16_length(text: str) -> int:
    """The length JavaScript reports (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


async def push_event(ctx: HttpContext) -> Any:
    """``POST /v1/sessions/:sessionId/push-event {kind, title, body, data?}``.

    Emits ``session-event`` to the session and the user's apps. This server sends no mobile
    pushes: the answer is ``suppressed`` while an app is in the foreground, else ``no_tokens``.
    """
    data = await ctx.json()
    kind = data.get("kind")
    if kind not in PUSH_KINDS:
        raise InvalidParams("Invalid kind")
    title = require_str(data, "title")
    body = require_str(data, "body")
    if _utf16_length(title) > 200:
        raise InvalidParams("Invalid title")
    if _utf16_length(body) > 500:
        raise InvalidParams("Invalid body")
    if "data" in data and not isinstance(data["data"], dict):
        raise InvalidParams("Invalid data")
    svc = _service(ctx)
    if not await svc.session_event(ctx.user, ctx.param("sessionId"), kind, title, body):
        raise NotFound(SESSION_NOT_FOUND)
    try:
        in_foreground = await svc.app_active(ctx.user)
    except Exception:  # fails open: as if nobody were looking
        in_foreground = False
    if in_foreground:
        return {"success": True, "result": "suppressed", "reason": "active-ui-client"}
    return {"success": True, "result": "no_tokens"}


def register(routes: Routes) -> None:
    """Add the routes."""
    v1 = routes.group("/v1/sessions", auth="bearer")
    v1.add("", create_session, methods=["POST"])
    v1.add("", list_sessions, methods=["GET"])
    v1.add("/{sessionId}/messages", list_messages, methods=["GET"])
    v1.add("/{sessionId}/archive", archive_session, methods=["POST"])
    v1.add("/{sessionId}", delete_session, methods=["DELETE"])
    v1.add("/{sessionId}/push-event", push_event, methods=["POST"])
    v2 = routes.group("/v2/sessions", auth="bearer")
    v2.add("/active", list_active, methods=["GET"])
    v2.add("", list_by_cursor, methods=["GET"])
    v3 = routes.group("/v3/sessions", auth="bearer")
    v3.add("/{sessionId}/messages", page_messages, methods=["GET"])
    v3.add("/{sessionId}/messages", post_messages, methods=["POST"])
