"""HTTP routes contributed by plugins, the bearer-token check, and JSON error mapping."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import ConfigError, HTTPError

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.http")

MAX_BODY_BYTES = 1_000_000


class JSONResponse(Response):
    """A JSON response serialized with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@attrs.frozen
class HttpContext:
    """What an HTTP endpoint receives: the request, the app, and the authenticated user."""

    request: Request
    app: App
    user_id: str | None = None

    @property
    def user(self) -> str:
        """The authenticated user (routes added with ``auth=True`` always have one)."""
        if self.user_id is None:
            raise HTTPError(401, "Missing authorization header")
        return self.user_id

    def param(self, name: str) -> str:
        """A path parameter."""
        return str(self.request.path_params[name])

    async def json(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 error."""
        body = await self.request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPError(413, "Request body too large")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HTTPError(400, "Invalid JSON body") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "Request body must be a JSON object")
        return data


Endpoint = Callable[[HttpContext], Awaitable[Any]]


async def bearer_user(app: App, request: Request) -> str:
    """The user of the request's ``Authorization: Bearer`` token, or HTTPError 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPError(401, "Missing authorization header")
    user_id = await app.authenticate(token.strip(), {})
    if user_id is None:
        raise HTTPError(401, "Invalid token")
    return user_id


def error_response(exc: HTTPError) -> JSONResponse:
    """The JSON response of an HTTPError: ``{"error": message, **fields}``."""
    return JSONResponse({"error": exc.message, **exc.fields}, status_code=exc.status)


@attrs.frozen
class RouteInfo:
    """One registered route, for ``happy-socket plugins``."""

    path: str
    methods: tuple[str, ...]
    plugin: str
    auth: bool


class Routes:
    """Collects HTTP routes from ``register_routes`` hooks."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._routes: list[tuple[RouteInfo, Route]] = []
        self.current_plugin = "?"

    def add(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Iterable[str] = ("GET",),
        auth: bool = False,
    ) -> None:
        """Serve ``endpoint(ctx)`` at ``path``; ``auth=True`` requires a bearer token.

        The endpoint returns a JSON-able value (status 200) or a starlette Response, and
        raises HTTPError for an error status with ``{"error": ...}``.
        """
        methods = tuple(m.upper() for m in methods)
        for info, _ in self._routes:
            if info.path == path and set(info.methods) & set(methods):
                raise ConfigError(
                    f"Route {path!r} is registered by both plugin {info.plugin!r} "
                    f"and plugin {self.current_plugin!r}."
                )
        info = RouteInfo(path, methods, self.current_plugin, auth)
        self._routes.append((info, Route(path, self._wrap(endpoint, info), methods=list(methods))))

    def _wrap(
        self, endpoint: Endpoint, info: RouteInfo
    ) -> Callable[[Request], Awaitable[Response]]:
        app = self._app

        async def run(request: Request) -> Response:
            try:
                user_id = await bearer_user(app, request) if info.auth else None
                result = await endpoint(HttpContext(request, app, user_id))
            except HTTPError as exc:
                return error_response(exc)
            except Exception:
                log.exception(
                    "route %s %s failed (plugin %s)", request.method, info.path, info.plugin
                )
                return JSONResponse({"error": "Internal error"}, status_code=500)
            return result if isinstance(result, Response) else JSONResponse(result)

        return run

    @property
    def routes(self) -> list[Route]:
        """Starlette routes, in registration order."""
        return [route for _, route in self._routes]

    @property
    def infos(self) -> list[RouteInfo]:
        """What was registered, by whom."""
        return [info for info, _ in self._routes]
