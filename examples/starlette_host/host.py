"""Embed happy-socket in your own Starlette (or FastAPI) app, with your own JWTs.

    export HOST_JWT_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))')
    uvicorn examples.starlette_host.host:make_app --factory --port 3005

(HS256 wants a secret of at least 32 bytes: PyJWT warns about a shorter one.)

* Socket.IO is served at /v1/updates and the plugins' HTTP routes at their paths, mounted under
  the host's routes; the plugins' startup/shutdown run under the host's lifespan.
* Sockets and bearer routes accept the host's JWTs through an ``authenticate`` hookimpl
  (HS256, audience "happy"), besides happy-socket's own tokens.
* The host's own route ``POST /api/sessions`` creates a session through the library API; every
  app socket of that user receives the ``new-session`` update.
"""

from __future__ import annotations

import os
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from happy_socket import App, Settings, create_app, hookimpl

AUDIENCE = "happy"


class HostJWTAuth:
    """Accept the host's JWTs (``sub`` = user id) on sockets and bearer routes."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    @hookimpl(tryfirst=True)
    def authenticate(self, token: str) -> str | None:
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], audience=AUDIENCE)
        except jwt.PyJWTError:
            return None  # let happy-socket's own tokens through the default hook
        sub = claims.get("sub")
        return sub if isinstance(sub, str) and sub else None


def host_token(secret: str, user_id: str) -> str:
    """What the host's login would hand out."""
    return jwt.encode({"sub": user_id, "aud": AUDIENCE}, secret, algorithm="HS256")


def build(settings: Settings, host_secret: str) -> tuple[Starlette, App]:
    """The host ASGI app and the embedded happy-socket App."""
    happy = create_app(settings, plugins=[("host-auth", HostJWTAuth(host_secret))])

    async def create_session(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        user_id = await happy.authenticate(header.removeprefix("Bearer ").strip(), {})
        if user_id is None:
            return JSONResponse({"error": "Invalid token"}, status_code=401)
        body: dict[str, Any] = await request.json()
        session, created = await happy.service("sessions").create_or_load(
            user_id, str(body.get("tag", "default")), str(body.get("metadata", ""))
        )
        return JSONResponse({"session": session, "created": created})

    host = Starlette(
        routes=[
            Route("/api/sessions", create_session, methods=["POST"]),
            Mount("/", app=happy.asgi()),  # Socket.IO + plugin routes; mounted last
        ],
        lifespan=happy.lifespan,  # a mounted app's lifespan never runs: the host runs it
    )
    return host, happy


def make_app() -> Starlette:
    """uvicorn factory: settings from HAPPY_SOCKET_* variables, the host secret from HOST_JWT_SECRET."""
    host, _ = build(Settings.from_env(), os.environ["HOST_JWT_SECRET"])
    return host
