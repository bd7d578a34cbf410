"""HTTP bootstrap: ``GET /health``, the ``GET /`` banner and ``POST /v1/version``."""

from __future__ import annotations

import datetime
from typing import Any

from starlette.responses import PlainTextResponse

from happy_socket import HttpContext, InvalidParams, JSONResponse, Routes, hookimpl
from happy_socket.validation import require_str

BANNER = "Welcome to Happy Server!"


def _iso_now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


async def health(ctx: HttpContext) -> Any:
    """``{status: "ok"}``, or 503 when the database does not answer."""
    body = {"timestamp": _iso_now(), "service": "happy-socket"}
    if await ctx.app.db.ping():
        return {"status": "ok", **body}
    return JSONResponse({"status": "error", **body, "error": "Database unavailable"}, 503)


async def root(ctx: HttpContext) -> Any:
    """The banner the app's custom-server screen looks for (whatever ``Accept`` says)."""
    return PlainTextResponse(BANNER)


async def version(ctx: HttpContext) -> Any:
    """``{platform, version, app_id}`` -> ``{updateUrl: null}``: no client is ever outdated."""
    data = await ctx.json()
    for key in ("platform", "version", "app_id"):
        require_str(
            data, key, max_length=1024, allow_empty=True, error=InvalidParams(f"Invalid {key}")
        )
    return {"updateUrl": None}


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add("/health", health, methods=["GET"])
    routes.add("/", root, methods=["GET"])
    routes.add("/v1/version", version, methods=["POST"])
