"""Social routes: the empty answers that stop the app's retry loops, their validation, the
route order (search before :id), and ``--without social``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from happy_socket.testing import ServerHarness


def invalid(message: str) -> dict[str, Any]:
    return {"error": "Error", "message": message, "statusCode": 400}


@pytest.fixture
async def http(server: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {await server.token('alice')}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        yield client


async def get(http: httpx.AsyncClient, path: str, **params: str) -> tuple[int, Any]:
    resp = await http.get(path, params=params)
    return resp.status_code, resp.json()


async def test_empty_answers(http: httpx.AsyncClient) -> None:
    assert await get(http, "/v1/friends") == (200, {"friends": []})
    feed = (200, {"items": [], "hasMore": False})
    assert await get(http, "/v1/feed") == feed
    assert await get(http, "/v1/feed", limit="100") == feed  # what the app sends
    assert await get(http, "/v1/feed", limit="1", before="0-12", after="0-3") == feed
    assert await get(http, "/v1/feed", limit="200") == feed
    assert await get(http, "/v1/user/search", query="ali") == (200, {"users": []})
    assert await get(http, "/v1/user/search", query="") == (200, {"users": []})
    for user_id in ("bob", "alice", "searching", "x" * 300):
        assert await get(http, f"/v1/user/{user_id}") == (404, {"error": "User not found"})
    # the app sends a JSON content type on some GETs, with no body
    resp = await http.get("/v1/friends", headers={"Content-Type": "application/json"})
    assert (resp.status_code, resp.json()) == (200, {"friends": []})


async def test_search_is_not_shadowed_by_user_id(http: httpx.AsyncClient) -> None:
    # /v1/user/search would match /v1/user/{id}; the search route must win
    assert await get(http, "/v1/user/search", query="x") == (200, {"users": []})
    assert await get(http, "/v1/user/search") == (400, invalid("Missing query"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "Invalid limit"),
        ({"limit": "201"}, "Invalid limit"),
        ({"limit": "abc"}, "Invalid limit"),
        ({"limit": "1.5"}, "Invalid limit"),
        ({"before": "12"}, "Invalid before cursor"),
        ({"before": "1-2"}, "Invalid before cursor"),
        ({"before": "0-"}, "Invalid before cursor"),
        ({"after": "0-x"}, "Invalid after cursor"),
        ({"after": "0-" + "9" * 17}, "Invalid after cursor"),
        ({"after": ""}, "Invalid after cursor"),
    ],
)
async def test_feed_validation(
    http: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    assert await get(http, "/v1/feed", **params) == (400, invalid(message))


async def test_bearer_token_required(server: ServerHarness) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        for path in ("/v1/friends", "/v1/feed", "/v1/user/search?query=", "/v1/user/bob"):
            resp = await anonymous.get(path)
            assert (resp.status_code, resp.json()) == (
                401,
                {"error": "Missing authorization header"},
            ), path


async def test_without_social_the_routes_are_gone(make_server: Any) -> None:
    server: ServerHarness = await make_server(without=("social",))
    assert "social" not in server.app.plugin_names
    headers = {"Authorization": f"Bearer {await server.token('alice')}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        for path in ("/v1/friends", "/v1/feed", "/v1/user/search", "/v1/user/bob"):
            resp = await http.get(path)
            assert (resp.status_code, resp.json()) == (
                404,
                {"error": "Not found", "path": path, "method": "GET"},
            ), path
