"""/v1/kv: reads, lists, bulk reads, all-or-nothing mutations with versions, tombstones, the
kv-batch-update emit, limits, scoping and racing writers, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from happy_socket_kv import service as kv_service

from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import body_of


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


V1, V2, V3 = b64(b"one"), b64(b"\x00two\xff"), b64(b"three")


def invalid(message: str) -> dict[str, Any]:
    return {"error": "Error", "message": message, "statusCode": 400}


def mismatch(key: str, version: int, value: str | None) -> dict[str, Any]:
    return {"key": key, "error": "version-mismatch", "version": version, "value": value}


@pytest.fixture
async def srv(make_server: Any, db_url: str) -> ServerHarness:
    return await make_server(db=db_url)  # type: ignore[no-any-return]


async def client_of(srv: ServerHarness, user: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {await srv.token(user)}"}
    return httpx.AsyncClient(base_url=srv.url, headers=headers)


@pytest.fixture
async def http(srv: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_of(srv, "alice") as client:
        yield client


async def mutate(http: httpx.AsyncClient, *mutations: dict[str, Any]) -> tuple[int, Any]:
    resp = await http.post("/v1/kv", json={"mutations": list(mutations)})
    return resp.status_code, resp.json()


def m(key: str, value: str | None, version: int) -> dict[str, Any]:
    return {"key": key, "value": value, "version": version}


async def test_lifecycle_exact_json_and_one_update_per_batch(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    session = await srv.client("alice", client_type="session-scoped", session_id="S")
    assert await mutate(http, m("b", V1, -1), m("a", V2, -1)) == (
        200,
        {"success": True, "results": [{"key": "b", "version": 0}, {"key": "a", "version": 0}]},
    )
    first = await app.next("update")
    assert body_of(first) == {
        "t": "kv-batch-update",
        "changes": [m("b", V1, 0), m("a", V2, 0)],
    }
    assert await app.nothing("update", 0.1)
    assert await session.nothing("update", 0.05)
    resp = await http.get("/v1/kv/a")
    assert (resp.status_code, resp.json()) == (200, m("a", V2, 0))

    # update a, delete b (a tombstone keeps its version)
    assert await mutate(http, m("a", V3, 0), m("b", None, 0)) == (
        200,
        {"success": True, "results": [{"key": "a", "version": 1}, {"key": "b", "version": 1}]},
    )
    assert body_of(await app.next("update"), first["seq"] + 1) == {
        "t": "kv-batch-update",
        "changes": [m("a", V3, 1), m("b", None, 1)],
    }
    resp = await http.get("/v1/kv/b")
    assert (resp.status_code, resp.json()) == (404, {"error": "Key not found"})
    assert (await http.get("/v1/kv")).json() == {"items": [m("a", V3, 1)]}
    bulk = await http.post("/v1/kv/bulk", json={"keys": ["b", "a", "nope"]})
    assert bulk.json() == {"values": [m("a", V3, 1)]}

    # re-creating a tombstone needs its version, not -1
    assert await mutate(http, m("b", V1, -1)) == (
        409,
        {"success": False, "errors": [mismatch("b", 1, None)]},
    )
    assert await mutate(http, m("b", V1, 1)) == (
        200,
        {"success": True, "results": [{"key": "b", "version": 2}]},
    )
    await app.next("update")
    # a key created deleted is a tombstone at version 0; an empty value is a live value
    assert await mutate(http, m("gone", None, -1), m("empty", "", -1)) == (
        200,
        {
            "success": True,
            "results": [{"key": "gone", "version": 0}, {"key": "empty", "version": 0}],
        },
    )
    await app.next("update")
    assert (await http.get("/v1/kv/gone")).status_code == 404
    assert (await http.get("/v1/kv/empty")).json() == m("empty", "", 0)
    assert await app.nothing("update", 0.1)


async def test_a_mismatch_writes_nothing_and_lists_every_mismatch(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    await mutate(http, m("x", V1, -1), m("y", V1, -1), m("z", V1, -1))
    await app.next("update")
    await mutate(http, m("z", None, 0))
    await app.next("update")
    status, body = await mutate(
        http,
        m("x", V2, 0),  # matches
        m("y", V2, 5),  # stale
        m("new", V2, -1),  # matches (absent)
        m("absent", V2, 3),  # absent: current version -1
        m("z", V2, -1),  # a tombstone at version 1
        m("x2", V2, 0),  # absent too
    )
    assert (status, body) == (
        409,
        {
            "success": False,
            "errors": [
                mismatch("y", 0, V1),
                mismatch("absent", -1, None),
                mismatch("z", 1, None),
                mismatch("x2", -1, None),
            ],
        },
    )
    # nothing of the batch was written, nothing emitted
    assert (await http.get("/v1/kv/x")).json() == m("x", V1, 0)
    assert (await http.get("/v1/kv/new")).status_code == 404
    items = (await http.get("/v1/kv")).json()["items"]
    assert items == [m("x", V1, 0), m("y", V1, 0)]
    assert await app.nothing("update", 0.2)


async def test_list_order_prefix_and_limit(srv: ServerHarness, http: httpx.AsyncClient) -> None:
    keys = ["b", "a", "B", "é", "a/b", "ab", "a%", "a_", "z" * 256]
    assert (await mutate(http, *(m(k, V1, -1) for k in keys)))[0] == 200
    listed = (await http.get("/v1/kv")).json()["items"]
    assert [i["key"] for i in listed] == sorted(keys)  # code point order
    for prefix, expected in (
        ("a", ["a", "a%", "a/b", "a_", "ab"]),
        ("a%", ["a%"]),
        ("a_", ["a_"]),
        ("A", []),
        ("é", ["é"]),
    ):
        resp = await http.get("/v1/kv", params={"prefix": prefix})
        assert [i["key"] for i in resp.json()["items"]] == expected, prefix
    resp = await http.get("/v1/kv", params={"prefix": "a", "limit": "2"})
    assert resp.json() == {"items": [m("a", V1, 0), m("a%", V1, 0)]}
    assert len((await http.get("/v1/kv", params={"prefix": ""})).json()["items"]) == len(keys)
    more = [m(f"k{i:03}", V2, -1) for i in range(100)]
    assert (await mutate(http, *more))[0] == 200
    assert len((await http.get("/v1/kv")).json()["items"]) == 100
    assert len((await http.get("/v1/kv?limit=1000")).json()["items"]) == 109
    for query, message in (
        ("limit=0", "Invalid limit"),
        ("limit=1001", "Invalid limit"),
        ("limit=x", "Invalid limit"),
        ("limit=1.5", "Invalid limit"),
        ("prefix=" + "p" * 257, "Invalid prefix"),
        ("prefix=%00", "Invalid prefix"),
    ):
        resp = await http.get(f"/v1/kv?{query}")
        assert (resp.status_code, resp.json()) == (400, invalid(message)), query
    # keys are path segments, URL-decoded
    assert (await http.get("/v1/kv/%C3%A9")).json() == m("é", V1, 0)
    assert (await http.get("/v1/kv/a%25")).json() == m("a%", V1, 0)
    for path in ("/v1/kv/" + "z" * 257, "/v1/kv/%00"):
        resp = await http.get(path)
        assert (resp.status_code, resp.json()) == (404, {"error": "Key not found"})


async def test_bulk_reads_live_keys_in_request_order(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    await mutate(http, m("a", V1, -1), m("b", V2, -1), m("c", None, -1))
    resp = await http.post("/v1/kv/bulk", json={"keys": ["b", "c", "zz", "a", "b"]})
    assert (resp.status_code, resp.json()) == (200, {"values": [m("b", V2, 0), m("a", V1, 0)]})
    for body, message in (
        ({}, "keys must hold 1 to 100 items"),
        ({"keys": []}, "keys must hold 1 to 100 items"),
        ({"keys": "a"}, "keys must hold 1 to 100 items"),
        ({"keys": ["k"] * 101}, "keys must hold 1 to 100 items"),
        ({"keys": ["a", 1]}, "Invalid key"),
        ({"keys": [""]}, "Invalid key"),
        ({"keys": ["k" * 257]}, "Invalid key"),
    ):
        resp = await http.post("/v1/kv/bulk", json=body)
        assert (resp.status_code, resp.json()) == (400, invalid(message)), body
    resp = await http.post("/v1/kv/bulk", json={"keys": [f"k{i}" for i in range(100)]})
    assert resp.json() == {"values": []}


BAD_MUTATIONS: list[tuple[Any, str]] = [
    ({}, "mutations must hold 1 to 100 items"),
    ({"mutations": []}, "mutations must hold 1 to 100 items"),
    ({"mutations": {"key": "a"}}, "mutations must hold 1 to 100 items"),
    ({"mutations": [m(f"k{i}", V1, -1) for i in range(101)]}, "mutations must hold 1 to 100 items"),
    ({"mutations": ["a"]}, "Invalid mutation"),
    ({"mutations": [m("", V1, -1)]}, "Invalid key"),
    ({"mutations": [m("k" * 257, V1, -1)]}, "Invalid key"),
    ({"mutations": [{"value": V1, "version": -1}]}, "Invalid key"),
    ({"mutations": [m("a\x00", V1, -1)]}, "NUL characters are not accepted"),  # by the core
    ({"mutations": [m("a", "not b64!", -1)]}, "Invalid value"),
    ({"mutations": [m("a", 5, -1)]}, "Invalid value"),  # type: ignore[arg-type]
    ({"mutations": [m("a", b64(b"x" * (64 * 1024 + 1)), -1)]}, "Invalid value"),
    ({"mutations": [m("a", V1, -2)]}, "Invalid version"),
    ({"mutations": [{"key": "a", "value": V1}]}, "Invalid version"),
    ({"mutations": [m("a", V1, 1.5)]}, "Invalid version"),  # type: ignore[arg-type]
    ({"mutations": [m("a", V1, True)]}, "Invalid version"),
    ({"mutations": [m("a", V1, 2**62 + 1)]}, "Invalid version"),
    ({"mutations": [m("a", V1, -1), m("a", V2, -1)]}, "Duplicate keys in mutations"),
]


async def test_bad_mutations_are_400_and_write_nothing(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    for body, message in BAD_MUTATIONS:
        resp = await http.post("/v1/kv", json=body)
        assert (resp.status_code, resp.json()) == (400, invalid(message)), body
    # the largest value fits
    assert (await mutate(http, m("big", b64(b"x" * 64 * 1024), -1)))[0] == 200
    await app.next("update")
    assert [i["key"] for i in (await http.get("/v1/kv")).json()["items"]] == ["big"]
    assert await app.nothing("update", 0.1)
    async with httpx.AsyncClient(base_url=srv.url) as anonymous:
        for method, path in (("GET", "/v1/kv"), ("POST", "/v1/kv"), ("GET", "/v1/kv/big")):
            resp = await anonymous.request(method, path)
            assert resp.status_code == 401, path


async def test_users_have_separate_key_spaces(srv: ServerHarness, http: httpx.AsyncClient) -> None:
    await mutate(http, m("shared", V1, -1))
    bob_app = await srv.client("bob")
    async with await client_of(srv, "bob") as bob:
        assert (await bob.get("/v1/kv/shared")).status_code == 404
        assert (await bob.get("/v1/kv")).json() == {"items": []}
        assert (await bob.post("/v1/kv/bulk", json={"keys": ["shared"]})).json() == {"values": []}
        # bob's "shared" is his own: absent for him, so -1 creates it; alice's version is no help
        assert (await bob.post("/v1/kv", json={"mutations": [m("shared", V2, 0)]})).json() == {
            "success": False,
            "errors": [mismatch("shared", -1, None)],
        }
        resp = await bob.post("/v1/kv", json={"mutations": [m("shared", V2, -1)]})
        assert resp.json() == {"success": True, "results": [{"key": "shared", "version": 0}]}
        assert (await bob.get("/v1/kv/shared")).json() == m("shared", V2, 0)
    assert body_of(await bob_app.next("update"))["changes"] == [m("shared", V2, 0)]
    assert (await http.get("/v1/kv/shared")).json() == m("shared", V1, 0)


async def test_keys_per_account_are_capped(
    srv: ServerHarness, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_service, "MAX_KEYS_PER_ACCOUNT", 3)
    assert (await mutate(http, m("a", V1, -1), m("b", None, -1)))[0] == 200
    assert await mutate(http, m("c", V1, -1), m("d", V1, -1)) == (
        400,
        invalid("At most 3 keys per account"),
    )
    assert (await mutate(http, m("c", V1, -1), m("a", V2, 0)))[0] == 200
    assert (await mutate(http, m("b", V1, 0)))[0] == 200  # a tombstone is already counted
    assert [i["key"] for i in (await http.get("/v1/kv")).json()["items"]] == ["a", "b", "c"]


async def test_racing_batches_with_the_same_versions_exactly_one_wins(
    srv: ServerHarness, http: httpx.AsyncClient
) -> None:
    app = await srv.client("alice")
    writers = 8

    async def race(batches: list[list[dict[str, Any]]]) -> list[tuple[int, Any]]:
        return list(await asyncio.gather(*(mutate(http, *batch) for batch in batches)))

    # creates of one key
    answers = await race([[m("k", b64(f"v{i}".encode()), -1)] for i in range(writers)])
    winners = [i for i, (status, _) in enumerate(answers) if status == 200]
    assert len(winners) == 1, answers
    won = b64(f"v{winners[0]}".encode())
    for i, answer in enumerate(answers):
        if i != winners[0]:
            assert answer == (409, {"success": False, "errors": [mismatch("k", 0, won)]})
    assert body_of(await app.next("update"))["changes"] == [m("k", won, 0)]

    # two-key batches in opposite orders (no deadlock), all expecting the same versions
    await mutate(http, m("j", V1, -1))
    await app.next("update")
    batches = []
    for i in range(writers):
        pair = [m("k", b64(f"k{i}".encode()), 0), m("j", b64(f"j{i}".encode()), 0)]
        batches.append(pair if i % 2 else pair[::-1])
    answers = await race(batches)
    winners = [i for i, (status, _) in enumerate(answers) if status == 200]
    assert len(winners) == 1, answers
    w = winners[0]
    for i, (status, body) in enumerate(answers):
        if i != w:
            assert status == 409
            assert sorted(e["key"] for e in body["errors"]) == ["j", "k"]
            assert all(e["version"] == 1 for e in body["errors"])
    assert (await http.get("/v1/kv/k")).json() == m("k", b64(f"k{w}".encode()), 1)
    assert (await http.get("/v1/kv/j")).json() == m("j", b64(f"j{w}".encode()), 1)
    assert len(body_of(await app.next("update"))["changes"]) == 2
    assert await app.nothing("update", 0.2)
