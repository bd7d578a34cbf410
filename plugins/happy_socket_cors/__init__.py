"""CORS for the HTTP routes, so the web app can call the server from another origin.

Every HTTP response carries ``Access-Control-Allow-Origin``; a browser preflight
(``OPTIONS`` with ``Access-Control-Request-Method``) on any path is answered 204 here, before
routing. The allowed origins are ``Settings.cors_origins`` (``--cors-origin``), the same setting
the core gives Socket.IO. Every route authenticates by bearer token, never by cookie, so the
default ``*`` exposes nothing a script on another origin could not already ask for with a token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders

from happy_socket import App, hookimpl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
# what the happy clients send; a preflight asking for more is echoed (the Fetch standard's
# "*" does not cover Authorization, so it is always named)
DEFAULT_HEADERS = "authorization, content-type, x-happy-client"
MAX_AGE_S = "86400"


class CorsMiddleware:
    """ASGI middleware: answers preflights and adds the allow-origin header to responses."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)

    def allowed(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, or None."""
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allow = self.allowed(headers.get("origin"))
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self.preflight(allow, headers, send)
            return
        if allow is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = allow
                if allow != "*":
                    out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def preflight(self, allow: str | None, headers: Headers, send: Send) -> None:
        """204 with an empty body; the CORS headers only for an allowed origin."""
        out: list[tuple[bytes, bytes]] = [(b"content-length", b"0")]
        if allow is not None:
            requested = headers.get("access-control-request-headers", "").strip()
            allow_headers = f"{DEFAULT_HEADERS}, {requested}" if requested else DEFAULT_HEADERS
            out += [
                (b"access-control-allow-origin", allow.encode("latin-1")),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", allow_headers.encode("latin-1")),
                (b"access-control-max-age", MAX_AGE_S.encode()),
            ]
            if allow != "*":
                out.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})


@hookimpl
def asgi_wrapper(app: App) -> Callable[[ASGIApp], ASGIApp]:
    origins = app.settings.cors_origins

    def wrap(inner: ASGIApp) -> ASGIApp:
        return CorsMiddleware(inner, origins)

    return wrap
