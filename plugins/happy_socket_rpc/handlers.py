"""The RPC socket events (docs/events.md): rpc-register, rpc-unregister, rpc-call."""

from __future__ import annotations

from typing import Any

from happy_socket import Context, InvalidParams

from .service import RpcService

INVALID_METHOD = "Invalid method name"


def method_of(data: Any, max_length: int) -> str | None:
    """The ``method`` of a payload when it is a usable name (non-empty, UTF-8, bounded)."""
    method = data.get("method") if isinstance(data, dict) else None
    if not isinstance(method, str) or not method or len(method) > max_length:
        return None
    try:
        method.encode()
    except UnicodeEncodeError:  # lone surrogates cannot be stored or forwarded
        return None
    return method


def service(ctx: Context) -> RpcService:
    """This app's RPC service."""
    rpc: RpcService = ctx.service("rpc")
    return rpc


async def rpc_register(ctx: Context, data: Any) -> None:
    """Serve ``method`` from this socket; reply ``rpc-registered`` or ``rpc-error``."""
    rpc = service(ctx)
    method = method_of(data, rpc.max_method_length)
    if method is None:
        await ctx.reply("rpc-error", {"type": "register", "error": INVALID_METHOD})
        return
    refusal = await rpc.register(ctx.user_id, method, ctx.sid)
    if refusal is not None:
        await ctx.reply("rpc-error", {"type": "register", "error": refusal})
        return
    await ctx.reply("rpc-registered", {"method": method})


async def rpc_unregister(ctx: Context, data: Any) -> None:
    """Drop this socket's own registration of ``method``; reply ``rpc-unregistered``."""
    rpc = service(ctx)
    method = method_of(data, rpc.max_method_length)
    if method is None:
        await ctx.reply("rpc-error", {"type": "unregister", "error": INVALID_METHOD})
        return
    await rpc.unregister(ctx.user_id, method, ctx.sid)
    await ctx.reply("rpc-unregistered", {"method": method})


async def rpc_call(ctx: Context, data: Any) -> dict[str, Any]:
    """Forward ``rpc-request {method, params}`` to the method's holder; ack its answer."""
    rpc = service(ctx)
    method = method_of(data, rpc.max_method_length)
    if method is None:
        raise InvalidParams("Invalid parameters: method is required")
    params = data.get("params") if isinstance(data, dict) else None
    return await rpc.call(ctx.user_id, ctx.sid, method, params)
