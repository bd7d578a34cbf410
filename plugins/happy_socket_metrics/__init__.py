"""``GET /metrics``: the app's Prometheus metrics in the text exposition format."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from happy_socket import HttpContext, Routes, hookimpl


async def metrics(ctx: HttpContext) -> Response:
    """Every metric of ``app.metrics.registry`` (core and plugins)."""
    return Response(generate_latest(ctx.app.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add("/metrics", metrics, methods=["GET"])
