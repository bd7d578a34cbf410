"""HTTP routes of the accounts plugin: device linking, profile and settings.

Link routes (no auth to request and poll, bearer to approve):
``POST /v1/auth/request``, ``GET /v1/auth/request/status``, ``POST /v1/auth/response``,
``POST /v1/auth/account/request``, ``POST /v1/auth/account/response``. A poll never fails
once its body is valid (clients give up on any error), and is never rate limited.
"""

from __future__ import annotations

from typing import Any

from happy_socket import HttpContext, HTTPError, InvalidParams
from happy_socket.validation import INT64, require_int, require_str

from .links import Link, LinkRequests, key_of
from .service import AccountsService

MAX_RESPONSE_CHARS = 4096  # a real answer is 140 characters (a 104/105-byte box, base64)
INVALID_KEY = "Invalid public key"


def _service(ctx: HttpContext) -> AccountsService:
    return ctx.app.service(AccountsService)


def _key(data: dict[str, Any]) -> str:
    """The request key of a body: 400 when not a string, 401 when not a 32-byte key."""
    value = data.get("publicKey")
    if not isinstance(value, str):
        raise InvalidParams("Invalid publicKey")
    key = key_of(value)
    if key is None:
        raise HTTPError(401, INVALID_KEY)
    return key


def _poll_answer(ctx: HttpContext, link: Link) -> dict[str, Any]:
    if not link.authorized:
        return {"state": "requested"}
    assert link.account_id is not None
    token = ctx.app.tokens.issue(link.account_id)
    return {"state": "authorized", "token": token, "response": link.response}


async def terminal_request(ctx: HttpContext) -> Any:
    """``{publicKey, supportsV2?}`` -> ``{state: requested}`` or ``{state: authorized, ...}``."""
    data = await ctx.json()
    supports_v2 = data.get("supportsV2")
    if supports_v2 is not None and not isinstance(supports_v2, bool):
        raise InvalidParams("Invalid supportsV2")
    key = _key(data)
    link = await _service(ctx).terminal_links.poll(key, supports_v2=bool(supports_v2))
    return _poll_answer(ctx, link)


async def terminal_status(ctx: HttpContext) -> Any:
    """``?publicKey=`` -> ``{status: not_found | pending | authorized, supportsV2}``."""
    value = ctx.query.get("publicKey")
    if value is None:
        raise InvalidParams("Invalid publicKey")
    key = key_of(value)
    link = None if key is None else await _service(ctx).terminal_links.find(key)
    if link is None:
        return {"status": "not_found", "supportsV2": False}
    if link.authorized:
        return {"status": "authorized", "supportsV2": False}
    return {"status": "pending", "supportsV2": link.supports_v2}


async def _approve(ctx: HttpContext, links: LinkRequests) -> Any:
    data = await ctx.json()
    response = require_str(
        data, "response", max_length=MAX_RESPONSE_CHARS, error=InvalidParams("Invalid response")
    )
    key = _key(data)
    await links.approve(key, ctx.user, response)
    return {"success": True}


async def terminal_response(ctx: HttpContext) -> Any:
    """(B) ``{publicKey, response}`` -> ``{success: true}``; 404 with no live request."""
    return await _approve(ctx, _service(ctx).terminal_links)


async def account_request(ctx: HttpContext) -> Any:
    """``{publicKey}`` -> ``{state: requested}`` or ``{state: authorized, token, response}``."""
    key = _key(await ctx.json())
    return _poll_answer(ctx, await _service(ctx).account_links.poll(key))


async def account_response(ctx: HttpContext) -> Any:
    """(B) ``{publicKey, response}`` -> ``{success: true}``; 404 with no live request."""
    return await _approve(ctx, _service(ctx).account_links)


async def profile(ctx: HttpContext) -> Any:
    """(B) The caller's profile."""
    return _service(ctx).profile(ctx.user)


async def get_settings(ctx: HttpContext) -> Any:
    """(B) ``{settings, settingsVersion}``."""
    return await _service(ctx).settings(ctx.user)


async def set_settings(ctx: HttpContext) -> Any:
    """(B) ``{settings, expectedVersion}``: compare-and-set (see the service)."""
    data = await ctx.json()
    if "settings" not in data:
        raise InvalidParams("Invalid settings")
    settings = data["settings"]
    if settings is not None:
        settings = require_str(
            data, "settings", allow_empty=True, error=InvalidParams("Invalid settings")
        )
    expected = require_int(
        data,
        "expectedVersion",
        minimum=0,
        maximum=INT64,
        error=InvalidParams("Invalid expectedVersion"),
    )
    return await _service(ctx).set_settings(ctx.user, settings, expected)
