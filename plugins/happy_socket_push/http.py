"""HTTP routes of push tokens (bearer auth): register, list, remove."""

from __future__ import annotations

from typing import Any

from happy_socket import HttpContext, InvalidParams, Routes
from happy_socket.validation import is_text, require_str

from .service import PushTokens

MAX_TOKEN_LENGTH = 512  # Expo tokens are ~41 characters, raw FCM tokens ~160


def _service(ctx: HttpContext) -> PushTokens:
    return ctx.app.service(PushTokens)


async def register_token(ctx: HttpContext) -> Any:
    """``POST /v1/push-tokens {"token"}`` -> ``{"success": true}`` (upsert)."""
    error = InvalidParams("Invalid token")
    token = require_str(await ctx.json(), "token", max_length=MAX_TOKEN_LENGTH, error=error)
    await _service(ctx).register(ctx.user, token)
    return {"success": True}


async def list_tokens(ctx: HttpContext) -> Any:
    """``GET /v1/push-tokens`` -> ``{"tokens": [...]}``, newest first."""
    return {"tokens": [token.json() for token in await _service(ctx).tokens(ctx.user)]}


async def delete_token(ctx: HttpContext) -> Any:
    """``DELETE /v1/push-tokens/:token`` (URL-decoded) -> ``{"success": true}``, also when absent."""
    token = ctx.param("token")
    if is_text(token, max_length=MAX_TOKEN_LENGTH, allow_empty=False):
        await _service(ctx).remove(ctx.user, token)
    return {"success": True}


def register(routes: Routes) -> None:
    """Add the routes."""
    group = routes.group("/v1/push-tokens", auth="bearer")
    group.add("", register_token, methods=["POST"])
    group.add("", list_tokens, methods=["GET"])
    group.add("/{token}", delete_token, methods=["DELETE"])
