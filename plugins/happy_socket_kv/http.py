"""HTTP routes of the KV store (bearer auth): read one, list, bulk read, mutate."""

from __future__ import annotations

from typing import Any

from happy_socket import HttpContext, InvalidParams, NotFound, Routes
from happy_socket.validation import decode_b64, is_text, query_int, require_int, require_object

from .service import ABSENT, KvService, Mutation

MAX_KEY_LENGTH = 256  # characters, keys and prefixes
MAX_VALUE_BYTES = 64 * 1024  # decoded bytes per value
MAX_BATCH = 100  # keys per bulk read, mutations per batch
MAX_LIST = 1000
DEFAULT_LIST = 100
MAX_VERSION = 2**62


def _service(ctx: HttpContext) -> KvService:
    return ctx.app.service(KvService)


def _key(value: Any) -> str:
    if not is_text(value, max_length=MAX_KEY_LENGTH, allow_empty=False):
        raise InvalidParams("Invalid key")
    return str(value)


def _batch(data: dict[str, Any], name: str) -> list[Any]:
    items = data.get(name)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise InvalidParams(f"{name} must hold 1 to {MAX_BATCH} items")
    return items


def _mutation(item: Any) -> Mutation:
    data = require_object(item, InvalidParams("Invalid mutation"))
    raw = data.get("value")
    value = None
    if raw is not None:
        value = decode_b64(raw, max_length=(MAX_VALUE_BYTES + 2) // 3 * 4)
        if value is None or len(value) > MAX_VALUE_BYTES:
            raise InvalidParams("Invalid value")
    error = InvalidParams("Invalid version")
    version = require_int(data, "version", minimum=ABSENT, maximum=MAX_VERSION, error=error)
    return Mutation(_key(data.get("key")), value, version)


async def get_value(ctx: HttpContext) -> Any:
    """``GET /v1/kv/:key`` -> ``{key, value, version}``; 404 when absent or deleted."""
    key = ctx.param("key")
    entry = None
    if is_text(key, max_length=MAX_KEY_LENGTH, allow_empty=False):
        entry = await _service(ctx).get(ctx.user, key)
    if entry is None:
        raise NotFound("Key not found")
    return entry.json()


async def list_values(ctx: HttpContext) -> Any:
    """``GET /v1/kv?prefix=&limit=`` -> ``{"items": [...]}``, key ascending."""
    error = InvalidParams("Invalid limit")
    limit = query_int(
        ctx.query, "limit", default=DEFAULT_LIST, minimum=1, maximum=MAX_LIST, error=error
    )
    assert limit is not None
    prefix = ctx.query.get("prefix", "")
    if not is_text(prefix, max_length=MAX_KEY_LENGTH):
        raise InvalidParams("Invalid prefix")
    entries = await _service(ctx).list(ctx.user, prefix, limit)
    return {"items": [entry.json() for entry in entries]}


async def bulk_values(ctx: HttpContext) -> Any:
    """``POST /v1/kv/bulk {"keys": [...]}`` -> ``{"values": [...]}``, live keys only."""
    keys = [_key(key) for key in _batch(await ctx.json(), "keys")]
    entries = await _service(ctx).bulk(ctx.user, keys)
    return {"values": [entry.json() for entry in entries]}


async def mutate_values(ctx: HttpContext) -> Any:
    """``POST /v1/kv {"mutations": [{key, value, version}]}``: all or nothing."""
    mutations = [_mutation(item) for item in _batch(await ctx.json(), "mutations")]
    results = await _service(ctx).mutate(ctx.user, mutations)
    return {"success": True, "results": results}


def register(routes: Routes) -> None:
    """Add the routes."""
    group = routes.group("/v1/kv", auth="bearer")
    group.add("", list_values, methods=["GET"])
    group.add("", mutate_values, methods=["POST"])
    group.add("/bulk", bulk_values, methods=["POST"])
    group.add("/{key}", get_value, methods=["GET"])
