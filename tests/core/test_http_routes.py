"""The HTTP seams: one error mapping, auth policies, the route table, CORS, metrics, input helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from happy_socket import (
    App,
    Conflict,
    HttpContext,
    HTTPError,
    InvalidParams,
    NotFound,
    Routes,
    Settings,
    TooBusy,
    VersionMismatch,
    create_app,
    hookimpl,
)
from happy_socket.errors import ConfigError
from happy_socket.testing import AppClient

INTERNAL = {
    "error": "Internal Server Error",
    "message": "An unexpected error occurred",
    "statusCode": 500,
}


class Boom(Exception):
    """An unexpected failure inside a route."""


class Echo:
    """Routes that raise each kind of error, and report who called."""

    name = "echo"

    @hookimpl
    def register_routes(self, routes: Routes) -> None:
        async def raises(ctx: HttpContext) -> Any:
            kind = ctx.param("kind")
            errors: dict[str, Exception] = {
                "not-found": NotFound("Session not found"),
                "conflict": Conflict("Artifact exists", id="a1"),
                "invalid": InvalidParams("limit must be 1-500"),
                "mismatch": VersionMismatch(currentVersion=3, currentSettings=None),
                "busy": TooBusy(retry_after=2),
                "teapot": HTTPError(418, "I'm a teapot", hint="tea"),
                "boom": Boom("details only in the log"),
            }
            raise errors[kind]

        async def whoami(ctx: HttpContext) -> Any:
            return {"user": ctx.user_id}

        async def page(ctx: HttpContext) -> Any:
            return {"limit": ctx.query_int("limit", default=100, minimum=1, maximum=500)}

        async def body(ctx: HttpContext) -> Any:
            return await ctx.json()

        async def user_by_id(ctx: HttpContext) -> Any:
            return {"route": "by-id", "id": ctx.param("id")}

        async def user_search(ctx: HttpContext) -> Any:
            return {"route": "search"}

        routes.add("/raise/{kind}", raises)
        routes.add("/whoami/bearer", whoami, auth="bearer", name="whoami-bearer")
        routes.add("/whoami/optional", whoami, auth="optional", name="whoami-optional")
        routes.add("/whoami/none", whoami, name="whoami-none")
        routes.add("/page", page)
        routes.add("/body", body, methods=["POST"])
        users = routes.group("/v1/user", auth="bearer")
        users.add("/{id}", user_by_id)  # registered first, still matched after the literal
        users.add("/search", user_search)


@pytest.fixture
async def http(sqlite_url: str) -> AsyncIterator[AppClient]:
    # without the social plugin: Echo serves /v1/user/{id} and /v1/user/search itself
    settings = Settings(db=sqlite_url, secret="s" * 32, without=("social",))
    app = create_app(settings, plugins=[Echo()])
    async with AppClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("not-found", 404, {"error": "Session not found"}),
        ("conflict", 409, {"error": "Artifact exists", "id": "a1"}),
        ("invalid", 400, {"error": "Error", "message": "limit must be 1-500", "statusCode": 400}),
        (
            "mismatch",
            200,
            {
                "success": False,
                "error": "version-mismatch",
                "currentVersion": 3,
                "currentSettings": None,
            },
        ),
        ("busy", 429, {"error": "Too many requests"}),
        ("teapot", 418, {"error": "I'm a teapot", "hint": "tea"}),
        ("boom", 500, INTERNAL),
    ],
)
async def test_every_error_is_rendered_in_one_place(
    http: AppClient, kind: str, status: int, body: dict[str, Any]
) -> None:
    reply = await http.get(f"/raise/{kind}")
    assert (reply.status_code, reply.json()) == (status, body)
    if kind == "busy":
        assert reply.headers["retry-after"] == "2"


async def test_unmatched_paths_and_methods_answer_json(http: AppClient) -> None:
    reply = await http.get("/nowhere?x=1")
    assert (reply.status_code, reply.json()) == (
        404,
        {"error": "Not found", "path": "/nowhere", "method": "GET"},
    )
    reply = await http.delete("/page")
    assert reply.status_code == 405
    assert reply.json() == {"error": "Method not allowed", "path": "/page", "method": "DELETE"}


async def test_auth_policies(http: AppClient) -> None:
    assert (await http.get("/whoami/bearer", user="alice")).json() == {"user": "alice"}
    reply = await http.get("/whoami/bearer")
    assert (reply.status_code, reply.json()) == (401, {"error": "Missing authorization header"})
    reply = await http.get("/whoami/bearer", headers={"Authorization": "Bearer nope"})
    assert (reply.status_code, reply.json()) == (401, {"error": "Invalid token"})
    assert (await http.get("/whoami/optional", user="bob")).json() == {"user": "bob"}
    assert (await http.get("/whoami/optional")).json() == {"user": None}
    bad = {"Authorization": "Bearer nope"}
    assert (await http.get("/whoami/optional", headers=bad)).json() == {"user": None}
    assert (await http.get("/whoami/none", user="alice")).json() == {"user": None}


async def test_literal_segments_match_before_parameters(http: AppClient) -> None:
    assert (await http.get("/v1/user/search", user="alice")).json() == {"route": "search"}
    reply = await http.get("/v1/user/u1", user="alice")
    assert reply.json() == {"route": "by-id", "id": "u1"}
    assert http.app.routes.url_for("echo.user_by_id", id="u2") == "/v1/user/u2"


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("", (200, {"limit": 100})),
        ("?limit=20", (200, {"limit": 20})),
        ("?limit=1e2", (200, {"limit": 100})),
        ("?limit=0x10", (200, {"limit": 16})),
        ("?limit=%2020%20", (200, {"limit": 20})),
        ("?limit=0", (400, None)),
        ("?limit=501", (400, None)),
        ("?limit=1.5", (400, None)),
        ("?limit=abc", (400, None)),
        ("?limit=", (400, None)),  # Number("") is 0, below the minimum
        ("?limit=Infinity", (400, None)),
        ("?limit=1_0", (400, None)),
    ],
)
async def test_query_integers_read_like_javascript(
    http: AppClient, query: str, answer: tuple[int, Any]
) -> None:
    reply = await http.get("/page" + query)
    status, body = answer
    assert reply.status_code == status
    if body is not None:
        assert reply.json() == body
    else:
        assert reply.json() == {"error": "Error", "message": "Invalid limit", "statusCode": 400}


async def test_bodies_empty_json_and_not_objects(http: AppClient) -> None:
    json_type = {"Content-Type": "application/json"}
    assert (await http.post("/body", headers=json_type)).json() == {}
    assert (await http.post("/body")).json() == {}
    assert (await http.post("/body", json={"a": 1})).json() == {"a": 1}
    for content in (b"[1]", b"not json", b'"text"'):
        reply = await http.post("/body", content=content, headers=json_type)
        assert reply.status_code == 400 and reply.json()["error"] == "Error"


async def test_http_requests_are_counted_by_route_and_outcome(http: AppClient) -> None:
    await http.get("/page")
    await http.get("/raise/not-found")
    await http.get("/raise/boom")
    registry = http.app.metrics.registry

    def count(route: str, outcome: str) -> float | None:
        labels = {"route": route, "outcome": outcome}
        return registry.get_sample_value("happy_socket_http_requests_total", labels)

    assert count("echo.page", "ok") == 1
    assert count("echo.raises", "error") == 1
    assert count("echo.raises", "internal_error") == 1
    seconds = registry.get_sample_value("happy_socket_http_seconds_count", {"route": "echo.page"})
    assert seconds == 1


def _app_with(*plugins: object) -> App:
    return create_app(
        Settings(db="sqlite:///:memory:", secret="s" * 32),
        plugins=list(plugins),
        load_entry_points=False,
    )


def _plugin(name: str, *paths: str, methods: tuple[str, ...] = ("GET",)) -> object:
    class Plugin:
        @hookimpl
        def register_routes(self, routes: Routes) -> None:
            async def endpoint(ctx: HttpContext) -> Any:
                return {}

            for i, path in enumerate(paths):
                routes.add(path, endpoint, methods=methods, name=f"{name}.r{i}")

    plugin = Plugin()
    plugin.name = name  # type: ignore[attr-defined]
    return plugin


def test_overlapping_routes_of_two_plugins_stop_assembly() -> None:
    with pytest.raises(
        ConfigError, match=r"of plugin '[ab]' overlaps '/v1/user/(search|\{id\})' of plugin '[ab]'"
    ):
        _app_with(_plugin("a", "/v1/user/{id}"), _plugin("b", "/v1/user/search"))
    with pytest.raises(ConfigError, match="overlaps"):
        _app_with(_plugin("a", "/v1/x/{a}"), _plugin("b", "/v1/x/{b}"))
    with pytest.raises(ConfigError, match="overlaps"):  # the same shape within one plugin
        _app_with(_plugin("a", "/v1/x/{a}", "/v1/x/{b}"))
    # other methods, or paths that cannot both match, are fine
    _app_with(_plugin("a", "/v1/user/{id}"), _plugin("b", "/v1/user/search", methods=("POST",)))
    _app_with(_plugin("a", "/v1/user/{id}"), _plugin("b", "/v1/user/search/deep"))


def test_route_policy_and_name_are_checked() -> None:
    with pytest.raises(ConfigError, match="not one of none, bearer, optional"):
        _app_with(_policy_plugin("sometimes"))
    with pytest.raises(ConfigError, match="used twice"):
        _app_with(_plugin("a", "/one"), _plugin("a2", "/two"), _named_twice())


def _policy_plugin(policy: str) -> object:
    class Plugin:
        @hookimpl
        def register_routes(self, routes: Routes) -> None:
            async def endpoint(ctx: HttpContext) -> Any:
                return {}

            routes.add("/p", endpoint, auth=policy)

    return Plugin()


def _named_twice() -> object:
    class Plugin:
        name = "twice"

        @hookimpl
        def register_routes(self, routes: Routes) -> None:
            async def endpoint(ctx: HttpContext) -> Any:
                return {}

            routes.add("/t1", endpoint, name="same")
            routes.add("/t2", endpoint, name="same")

    return Plugin()


# -- CORS (the cors plugin, through the asgi_wrapper hook) ---------------------------------


@pytest.fixture
async def every_plugin(tmp_path: Path) -> AsyncIterator[AppClient]:
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'c.db'}", secret="s" * 32))
    async with AppClient(app) as client:
        yield client


async def test_preflight_on_any_path_is_204_with_cors_headers(every_plugin: AppClient) -> None:
    for path in ("/v1/auth", "/v3/sessions/s1/messages", "/no/such/route"):
        reply = await every_plugin.options(
            path,
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-happy-client",
            },
        )
        assert reply.status_code == 204
        assert reply.content == b""
        assert reply.headers["content-length"] == "0"
        assert reply.headers["access-control-allow-origin"] == "*"
        assert reply.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE, OPTIONS"
        allowed = reply.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "x-happy-client"):
            assert header in allowed


async def test_every_response_carries_allow_origin(every_plugin: AppClient) -> None:
    origin = {"Origin": "https://app.example"}
    for reply in (
        await every_plugin.get("/health", headers=origin),
        await every_plugin.get("/v1/sessions", headers=origin),  # 401
        await every_plugin.get("/nowhere", headers=origin),  # 404
        await every_plugin.get("/v1/sessions", headers=origin, user="alice"),
    ):
        assert reply.headers["access-control-allow-origin"] == "*", reply.status_code


async def test_listed_origins_only(tmp_path: Path) -> None:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'o.db'}",
        secret="s" * 32,
        cors_origins="https://app.example https://other.example",
    )
    app = create_app(settings)
    assert app.sio.eio.cors_allowed_origins == ["https://app.example", "https://other.example"]
    async with AppClient(app) as http:
        good = await http.get("/health", headers={"Origin": "https://app.example"})
        assert good.headers["access-control-allow-origin"] == "https://app.example"
        assert "origin" in good.headers["vary"].lower()
        evil = await http.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        preflight = await http.options(
            "/v1/auth",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert "access-control-allow-origin" not in preflight.headers


async def test_without_cors_plugin_no_cors_headers(tmp_path: Path) -> None:
    settings = Settings(db=f"sqlite:///{tmp_path / 'n.db'}", secret="s" * 32, without=("cors",))
    async with AppClient(create_app(settings)) as http:
        reply = await http.get("/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in reply.headers


def test_services_are_found_by_class() -> None:
    from happy_socket_sessions import SessionsService

    app = create_app(Settings(db="sqlite:///:memory:", secret="s" * 32))
    assert isinstance(app.service(SessionsService), SessionsService)
    assert app.service("sessions") is app.service(SessionsService)
    assert app.service("no-such-service") is None

    class Unpublished:
        pass

    with pytest.raises(LookupError, match="No enabled plugin publishes a Unpublished service"):
        app.service(Unpublished)


async def test_nul_and_deep_nesting_in_bodies_are_refused(http: AppClient) -> None:
    reply = await http.post("/body", content=b'{"a": "x\\u0000y"}')
    assert (reply.status_code, reply.json()["message"]) == (400, "NUL characters are not accepted")
    reply = await http.post("/body", content=b'{"k\\u0000": 1}')
    assert reply.status_code == 400
    deep = "[" * 40 + "]" * 40
    reply = await http.post("/body", content=('{"a": ' + deep + "}").encode())
    assert (reply.status_code, reply.json()["message"]) == (400, "Nested too deep")
    assert (await http.post("/body", json={"a": "\\u0000 as text"})).status_code == 200
