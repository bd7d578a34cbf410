"""HTTP routes contributed by plugins: the route table, auth policies, and error rendering.

A route's endpoint receives an :class:`HttpContext` and returns a JSON-able value (200) or a
starlette ``Response``. It raises any :class:`~happy_socket.errors.HandlerError` for an error:
:func:`error_response` renders every error of every route, in one place.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from .errors import (
    ConfigError,
    HandlerError,
    HTTPError,
    InternalError,
    InvalidParams,
    TooBusy,
    Unauthorized,
)
from .validation import query_int, refused_input

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.http")

MAX_BODY_BYTES = 32 * 1024 * 1024  # default of Settings.max_body_bytes
#: the body limit of routes that need no token (``Auth.NONE``) unless they name their own:
#: anyone may call them, and what they take (a key, a version string) is small
UNAUTHENTICATED_MAX_BODY = 64 * 1024


class JSONResponse(Response):
    """A JSON response serialized with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Auth(str, enum.Enum):
    """Who may call a route."""

    NONE = "none"  # anyone; ``ctx.user_id`` is None
    BEARER = "bearer"  # a valid ``Authorization: Bearer`` token, else 401
    OPTIONAL = "optional"  # the token's user when one is sent and valid, else None


class BodyTooLarge(HTTPError):
    """The request body is over its route's limit (refused before it is read whole).

    Under ``happy-socket serve`` the rest of the body is then dropped unparsed and the
    connection closed (:func:`happy_socket.compat.uvicorn.http_protocol`).
    """

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


@attrs.frozen
class HttpContext:
    """What an HTTP endpoint receives: the request, the app, and the authenticated user."""

    request: Request
    app: App
    user_id: str | None = None
    max_body: int | None = None  # the route's body limit; None: ``Settings.max_body_bytes``

    @property
    def user(self) -> str:
        """The authenticated user (routes with ``auth=Auth.BEARER`` always have one)."""
        if self.user_id is None:
            raise HTTPError(401, "Missing authorization header")
        return self.user_id

    def param(self, name: str) -> str:
        """A path parameter."""
        return str(self.request.path_params[name])

    @property
    def query(self) -> Mapping[str, str]:
        """The query parameters (the first value of each)."""
        return self.request.query_params

    def query_int(
        self,
        name: str,
        *,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """An integer query parameter (see :func:`happy_socket.validation.query_int`)."""
        return query_int(self.query, name, default=default, minimum=minimum, maximum=maximum)

    async def body(self) -> bytes:
        """The raw body, refused with 413 past the route's limit before it is held whole."""
        limit = self.app.settings.max_body_bytes
        if self.max_body is not None:
            limit = min(limit, self.max_body)
        declared = self.request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise BodyTooLarge() if declared.isdigit() else InvalidParams("Bad Content-Length")
        chunks = bytearray()
        async for chunk in self.request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise BodyTooLarge()
        return bytes(chunks)

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body is ``{}``; anything else is a 400."""
        body = await self.body()
        if not body.strip():
            return {}
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidParams("Invalid JSON body") from None
        if not isinstance(data, dict):
            raise InvalidParams("Request body must be a JSON object")
        problem = refused_input(data)
        if problem is not None:
            raise InvalidParams(
                "Nested too deep" if problem == "depth" else "NUL characters are not accepted"
            )
        return data


Endpoint = Callable[[HttpContext], Awaitable[Any]]


async def bearer_user(app: App, request: Request) -> str:
    """The user of the request's ``Authorization: Bearer`` token, or HTTPError 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPError(401, "Missing authorization header")
    try:
        user_id = await app.authenticate(token.strip(), {})
    except Exception:
        log.exception("authenticate hook failed for an HTTP request")
        raise HTTPError(401, "Authentication failed") from None
    if user_id is None:
        raise HTTPError(401, "Invalid token")
    return user_id


def error_response(exc: HandlerError) -> JSONResponse:
    """The one place an error becomes an HTTP response: its status and :meth:`http_body`."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooBusy) else None
    return JSONResponse(exc.http_body(), status_code=exc.status, headers=headers)


async def unmatched(request: Request, exc: Exception) -> Response:
    """No route matched (404) or none takes the method (405): the JSON the clients know."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    error = "Method not allowed" if status == 405 else "Not found"
    body = {"error": error, "path": request.url.path, "method": request.method}
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    return JSONResponse(body, status_code=status, headers=headers)


@attrs.frozen
class RouteInfo:
    """One registered route, for ``happy-socket plugins`` and the docs test."""

    path: str
    methods: tuple[str, ...]
    plugin: str
    auth: Auth
    name: str
    max_body: int | None = None


def _specificity(path: str) -> tuple[int, ...]:
    """Sort key: at the first segment where two paths differ, a literal beats a parameter."""
    return tuple(1 if "{" in seg else 0 for seg in path.strip("/").split("/"))


def _sample(path: str) -> str:
    """A concrete path ``path`` matches (every parameter filled in)."""
    return re.sub(r"\{[^}]*\}", "x0", path)


class Routes:
    """The route table, filled by ``register_routes`` hooks.

    Routes are matched most specific first (``/v1/user/search`` before ``/v1/user/{id}``),
    so matching never depends on plugin order; two plugins whose routes overlap for one
    method is an assembly error.
    """

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
        auth: Auth | str | bool = Auth.NONE,
        name: str | None = None,
        max_body: int | None = None,
    ) -> RouteInfo:
        """Serve ``endpoint(ctx)`` at ``path`` for ``methods`` under the ``auth`` policy.

        ``name`` (default ``"<plugin>.<endpoint>"``) is what :meth:`url_for` takes.
        ``max_body`` caps the request body below ``Settings.max_body_bytes``; routes that
        need no token default to :data:`UNAUTHENTICATED_MAX_BODY`.
        """
        policy = _policy(auth)
        if max_body is None and policy is Auth.NONE:
            max_body = UNAUTHENTICATED_MAX_BODY
        methods = tuple(m.upper() for m in methods)
        regex, _, _ = compile_path(path)
        for other, route in self._routes:
            if not set(other.methods) & set(methods):
                continue
            same = other.path == path or _sample(other.path) == _sample(path)
            overlap = route.path_regex.match(_sample(path)) or regex.match(_sample(other.path))
            if same or (overlap and other.plugin != self.current_plugin):
                raise ConfigError(
                    f"Route {methods[0]} {path!r} of plugin {self.current_plugin!r} overlaps "
                    f"{other.path!r} of plugin {other.plugin!r}."
                )
        name = name or f"{self.current_plugin}.{getattr(endpoint, '__name__', 'route')}"
        if any(other.name == name for other, _ in self._routes):
            raise ConfigError(
                f"Route name {name!r} is used twice (plugin {self.current_plugin!r})."
            )
        info = RouteInfo(path, methods, self.current_plugin, policy, name, max_body)
        route = Route(path, self._wrap(endpoint, info), methods=list(methods), name=name)
        self._routes.append((info, route))
        return info

    def group(self, prefix: str, *, auth: Auth | str | bool = Auth.NONE) -> RouteGroup:
        """Routes under ``prefix`` with a default ``auth`` policy."""
        return RouteGroup(self, prefix.rstrip("/"), _policy(auth))

    def url_for(self, name: str, **params: Any) -> str:
        """The path of the route called ``name`` with ``params`` filled in."""
        for info, route in self._routes:
            if info.name == name:
                return str(route.url_path_for(name, **params))
        raise KeyError(name)

    def _wrap(
        self, endpoint: Endpoint, info: RouteInfo
    ) -> Callable[[Request], Awaitable[Response]]:
        app = self._app

        async def run(request: Request) -> Response:
            started = time.perf_counter()
            outcome = "ok"
            try:
                user_id = await _user_for(app, request, info.auth)
                result = await endpoint(HttpContext(request, app, user_id, info.max_body))
                response = result if isinstance(result, Response) else JSONResponse(result)
            except HandlerError as exc:
                outcome = "internal_error" if exc.status >= 500 else "error"
                response = error_response(exc)
            except Exception:
                log.exception(
                    "route %s %s failed (plugin %s)", request.method, info.path, info.plugin
                )
                outcome = "internal_error"
                response = error_response(InternalError())
            app.metrics.request_done(info.name, outcome, time.perf_counter() - started)
            return response

        return run

    @property
    def routes(self) -> list[Route]:
        """Starlette routes, most specific first (registration order among equals)."""
        ordered = sorted(self._routes, key=lambda pair: _specificity(pair[0].path))
        return [route for _, route in ordered]

    @property
    def infos(self) -> list[RouteInfo]:
        """What was registered, by whom, in registration order."""
        return [info for info, _ in self._routes]


@attrs.frozen
class RouteGroup:
    """Routes sharing a path prefix and a default auth policy (:meth:`Routes.group`)."""

    routes: Routes
    prefix: str
    auth: Auth

    def add(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Iterable[str] = ("GET",),
        auth: Auth | str | bool | None = None,
        name: str | None = None,
        max_body: int | None = None,
    ) -> RouteInfo:
        """Like :meth:`Routes.add`, with ``path`` under the prefix ("" is the prefix itself)."""
        return self.routes.add(
            self.prefix + path,
            endpoint,
            methods=methods,
            auth=self.auth if auth is None else auth,
            name=name,
            max_body=max_body,
        )


def _policy(auth: Auth | str | bool) -> Auth:
    if auth is True:
        return Auth.BEARER
    if auth is False:
        return Auth.NONE
    try:
        return Auth(auth)
    except ValueError:
        raise ConfigError(
            f"Route auth policy {auth!r} is not one of none, bearer, optional."
        ) from None


async def _user_for(app: App, request: Request, policy: Auth) -> str | None:
    if policy is Auth.NONE:
        return None
    if policy is Auth.BEARER:
        return await bearer_user(app, request)
    try:
        return await bearer_user(app, request)
    except HTTPError:
        return None


__all__ = [
    "UNAUTHENTICATED_MAX_BODY",
    "Auth",
    "BodyTooLarge",
    "Endpoint",
    "HttpContext",
    "JSONResponse",
    "RouteGroup",
    "RouteInfo",
    "Routes",
    "Unauthorized",
    "bearer_user",
    "error_response",
    "unmatched",
]
