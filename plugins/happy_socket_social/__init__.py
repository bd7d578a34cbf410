"""Social routes of the happy app, answered empty: friends, feed, user profiles and search.

Social features (friends, relationships, the feed, public profiles) are not implemented by
this server. These answers only stop the app's retry loops: the app polls ``GET /v1/friends``
and ``GET /v1/feed`` at start, on resume and on reconnect, and retries any error about twice
a second forever. ``--without social`` drops these routes.
"""

from __future__ import annotations

import re
from typing import Any

from happy_socket import HttpContext, InvalidParams, NotFound, Routes, hookimpl
from happy_socket.validation import query_int

FEED_LIMIT_MAX = 200
_CURSOR = re.compile(r"0-\d{1,16}")  # the feed's cursors: "0-<counter>"


async def friends(ctx: HttpContext) -> Any:
    """``GET /v1/friends`` -> ``{"friends": []}``."""
    return {"friends": []}


async def feed(ctx: HttpContext) -> Any:
    """``GET /v1/feed?limit=&before=&after=`` -> ``{"items": [], "hasMore": false}``."""
    error = InvalidParams("Invalid limit")
    query_int(ctx.query, "limit", minimum=1, maximum=FEED_LIMIT_MAX, error=error)
    for name in ("before", "after"):
        cursor = ctx.query.get(name)
        if cursor is not None and not _CURSOR.fullmatch(cursor):
            raise InvalidParams(f"Invalid {name} cursor")
    return {"items": [], "hasMore": False}


async def search_users(ctx: HttpContext) -> Any:
    """``GET /v1/user/search?query=`` -> ``{"users": []}`` (``query`` required, may be empty)."""
    if "query" not in ctx.query:
        raise InvalidParams("Missing query")
    return {"users": []}


async def get_user(ctx: HttpContext) -> Any:
    """``GET /v1/user/:id`` -> 404 ``{"error": "User not found"}`` for every id."""
    raise NotFound("User not found")


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add("/v1/friends", friends, methods=["GET"], auth="bearer")
    routes.add("/v1/feed", feed, methods=["GET"], auth="bearer")
    routes.add("/v1/user/search", search_users, methods=["GET"], auth="bearer")
    routes.add("/v1/user/{id}", get_user, methods=["GET"], auth="bearer")
