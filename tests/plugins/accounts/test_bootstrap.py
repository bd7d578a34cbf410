"""The http plugin's bootstrap routes: GET /health, the GET / banner, POST /v1/version."""

from __future__ import annotations

import re

import httpx

from happy_socket.testing import ServerHarness
from tests.conftest import ServerFactory


def invalid(field: str) -> dict[str, object]:
    return {"error": "Error", "message": f"Invalid {field}", "statusCode": 400}


async def test_root_banner(server: ServerHarness) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for accept in ("text/plain", "text/html,application/xhtml+xml", "*/*", None):
            headers = {"Accept": accept} if accept else {}
            reply = await http.get("/", headers=headers)
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "text/plain; charset=utf-8"
            assert reply.text == "Welcome to Happy Server!"
        reply = await http.post("/")
        assert (reply.status_code, reply.json()) == (
            405,
            {"error": "Method not allowed", "path": "/", "method": "POST"},
        )


async def test_version_never_asks_for_an_update(server: ServerHarness) -> None:
    body = {"platform": "ios", "version": "1.0.0", "app_id": "com.ex3ndr.happy"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.post("/v1/version", json=body)
        assert (reply.status_code, reply.json()) == (200, {"updateUrl": None})
        reply = await http.post("/v1/version", json={**body, "extra": [1]})
        assert (reply.status_code, reply.json()) == (200, {"updateUrl": None})
        reply = await http.post("/v1/version", json={"platform": "", "version": "", "app_id": ""})
        assert reply.status_code == 200
        for key in ("platform", "version", "app_id"):
            for bad in (None, 1, ["x"], "x" * 1025):
                reply = await http.post("/v1/version", json={**body, key: bad})
                assert (reply.status_code, reply.json()) == (400, invalid(key)), (key, bad)
            missing = {k: v for k, v in body.items() if k != key}
            reply = await http.post("/v1/version", json=missing)
            assert (reply.status_code, reply.json()) == (400, invalid(key))
        reply = await http.post("/v1/version")
        assert (reply.status_code, reply.json()) == (400, invalid("platform"))


async def test_health(make_server: ServerFactory, db_url: str) -> None:
    server = await make_server(db=db_url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.get("/health")
    body = reply.json()
    assert reply.status_code == 200
    assert body == {"status": "ok", "timestamp": body["timestamp"], "service": "happy-socket"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])


async def test_routes_of_the_two_plugins(server: ServerHarness) -> None:
    owners = {(info.path, info.methods[0]): info.plugin for info in server.app.routes.infos}
    assert owners[("/health", "GET")] == "http"
    assert owners[("/", "GET")] == "http"
    assert owners[("/v1/version", "POST")] == "http"
    for path, method in (
        ("/v1/auth", "POST"),
        ("/v1/auth/request", "POST"),
        ("/v1/auth/request/status", "GET"),
        ("/v1/auth/response", "POST"),
        ("/v1/auth/account/request", "POST"),
        ("/v1/auth/account/response", "POST"),
        ("/v1/account/profile", "GET"),
        ("/v1/account/settings", "GET"),
        ("/v1/account/settings", "POST"),
    ):
        assert owners[(path, method)] == "accounts"
