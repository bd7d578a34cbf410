"""POST /v1/usage/query: filters, UTC hour/day buckets, per-key sums, errors, scoping and the
memory bounds, on SQLite and PostgreSQL."""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from happy_socket_usage import UsageService, query

from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import FakeClock, make_app

from ..access_keys.support import new_session

HOUR, DAY = 3600, 86400
# 2025-03-10 13:45:30 UTC
T0 = calendar.timegm((2025, 3, 10, 13, 45, 30)) * 1000
DAY0 = calendar.timegm((2025, 3, 10, 0, 0, 0))
HOUR0 = DAY0 + 13 * HOUR


def invalid(message: str) -> dict[str, Any]:
    return {"error": "Error", "message": message, "statusCode": 400}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def srv(make_server: Any, db_url: str, clock: FakeClock) -> ServerHarness:
    return await make_server(app=make_app(db_url, clock))  # type: ignore[no-any-return]


@pytest.fixture
async def http(srv: ServerHarness) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {await srv.token('alice')}"}
    async with httpx.AsyncClient(base_url=srv.url, headers=headers) as client:
        yield client


async def save(
    srv: ServerHarness,
    user: str,
    key: str,
    tokens: dict[str, Any],
    cost: dict[str, Any],
    session_id: str | None = None,
) -> None:
    await srv.app.accounts.ensure(user)  # a write never creates the account
    await srv.app.service(UsageService).save(user, session_id, key, tokens, cost)


async def post(http: httpx.AsyncClient, body: Any) -> tuple[int, Any]:
    resp = await http.post("/v1/usage/query", json=body)
    return resp.status_code, resp.json()


async def test_sums_per_hour_and_day_with_filters(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sid = await new_session(srv.app, "alice")
    # through the socket event, as the CLI reports: stored at T0
    daemon = await srv.client("alice", client_type="session-scoped", session_id=sid)
    ack = await daemon.call(
        "usage-report",
        {"key": "a", "tokens": {"total": 10, "input": 7}, "cost": {"total": 0.5}, "sessionId": sid},
    )
    assert ack["success"] is True
    clock.advance(20 * 60_000)  # 14:05:30, the next hour, the same day
    await save(srv, "alice", "b", {"total": 5, "output": 5}, {"total": 0.25, "extra": 1}, sid)
    clock.advance(DAY * 1000)  # the next day
    await save(srv, "alice", "c", {"total": 1}, {"total": 1})
    await save(srv, "bob", "a", {"total": 1000}, {"total": 1000})
    # re-reporting key "a" later keeps its first report time (createdAt) and replaces its data
    # (only numbers are summed: strings, booleans, objects and arrays are skipped)
    tokens = {"total": 12, "input": 8, "note": "x", "on": True, "nested": {"a": 1}, "list": [1]}
    await daemon.call(
        "usage-report", {"key": "a", "tokens": tokens, "cost": {"total": 0.5}, "sessionId": sid}
    )

    day = {
        "usage": [
            {
                "timestamp": DAY0,
                "tokens": {"total": 17, "input": 8, "output": 5},
                "cost": {"total": 0.75, "extra": 1},
                "reportCount": 2,
            },
            {
                "timestamp": DAY0 + DAY,
                "tokens": {"total": 1},
                "cost": {"total": 1},
                "reportCount": 1,
            },
        ],
        "groupBy": "day",
        "totalReports": 3,
    }
    assert await post(http, {}) == (200, day)
    assert await post(http, {"groupBy": None, "sessionId": None, "startTime": None}) == (200, day)
    assert await post(http, {"sessionId": ""}) == (200, day)
    hour = await post(http, {"groupBy": "hour", "startTime": T0 // 1000, "endTime": 2_000_000_000})
    assert hour == (
        200,
        {
            "usage": [
                {
                    "timestamp": HOUR0,
                    "tokens": {"total": 12, "input": 8},
                    "cost": {"total": 0.5},
                    "reportCount": 1,
                },
                {
                    "timestamp": HOUR0 + HOUR,
                    "tokens": {"total": 5, "output": 5},
                    "cost": {"total": 0.25, "extra": 1},
                    "reportCount": 1,
                },
                {
                    "timestamp": HOUR0 + HOUR + DAY,
                    "tokens": {"total": 1},
                    "cost": {"total": 1},
                    "reportCount": 1,
                },
            ],
            "groupBy": "hour",
            "totalReports": 3,
        },
    )
    # the session's reports only; bounds are inclusive, in seconds
    only = await post(http, {"sessionId": sid, "endTime": T0 // 1000})
    assert only == (
        200,
        {
            "usage": [
                {
                    "timestamp": DAY0,
                    "tokens": {"total": 12, "input": 8},
                    "cost": {"total": 0.5},
                    "reportCount": 1,
                }
            ],
            "groupBy": "day",
            "totalReports": 1,
        },
    )
    for end, count in ((1199, 0), (1200, 1)):  # "b" was stored 1200 s after T0
        window = {"startTime": T0 // 1000 + 1, "endTime": T0 // 1000 + end}
        assert (await post(http, window))[1]["totalReports"] == count
    empty = {"usage": [], "groupBy": "hour", "totalReports": 0}
    assert await post(http, {"startTime": 5, "endTime": 4, "groupBy": "hour"}) == (200, empty)
    # a JSON content type is fine, and bob sees only his own report
    headers = {"Authorization": f"Bearer {await srv.token('bob')}"}
    resp = await http.post("/v1/usage/query", content=b"{}", headers=headers)
    assert resp.json()["totalReports"] == 1
    assert resp.json()["usage"][0]["tokens"] == {"total": 1000}


async def test_errors(srv: ServerHarness, http: httpx.AsyncClient) -> None:
    bob_session = await new_session(srv.app, "bob")
    await save(srv, "bob", "a", {"total": 1}, {"total": 1}, bob_session)
    resp = await http.post("/v1/usage/query")
    assert (resp.status_code, resp.json()) == (400, invalid("Request body is required"))
    resp = await http.post(
        "/v1/usage/query", content=b"  ", headers={"Content-Type": "application/json"}
    )
    assert (resp.status_code, resp.json()) == (400, invalid("Request body is required"))
    resp = await http.post("/v1/usage/query", content=b"{x")
    assert (resp.status_code, resp.json()) == (400, invalid("Invalid JSON body"))
    cases: list[tuple[Any, str]] = [
        ([], "Request body must be a JSON object"),
        ({"startTime": 0}, "Invalid startTime"),
        ({"startTime": -5}, "Invalid startTime"),
        ({"startTime": 1.5}, "Invalid startTime"),
        ({"startTime": "1"}, "Invalid startTime"),
        ({"endTime": True}, "Invalid endTime"),
        ({"endTime": 2**53}, "Invalid endTime"),
        ({"groupBy": "week"}, "Invalid groupBy"),
        ({"groupBy": ["day"]}, "Invalid groupBy"),
        ({"groupBy": 1}, "Invalid groupBy"),
        ({"sessionId": 5}, "Invalid sessionId"),
        ({"sessionId": "a\x00b"}, "Invalid sessionId"),
    ]
    for body, message in cases:
        assert await post(http, body) == (400, invalid(message)), body
    for sid in (bob_session, "no-such-session", "x" * 1000):
        assert await post(http, {"sessionId": sid}) == (404, {"error": "Session not found"})
    async with httpx.AsyncClient(base_url=srv.url) as anonymous:
        resp = await anonymous.post("/v1/usage/query", json={})
        assert (resp.status_code, resp.json()) == (401, {"error": "Missing authorization header"})


async def test_pages_and_bounds(
    srv: ServerHarness, http: httpx.AsyncClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query, "PAGE", 2)
    # five reports with the same createdAt: the pages are keyed by (createdAt, id)
    for i in range(5):
        await save(srv, "alice", f"k{i}", {"total": i, "big": 2**53}, {"total": 1})
    status, answer = await post(http, {"groupBy": "hour"})
    assert status == 200
    assert answer["totalReports"] == 5
    assert answer["usage"] == [
        {
            "timestamp": HOUR0,
            "tokens": {"total": 10, "big": float(5 * 2**53)},
            "cost": {"total": 5},
            "reportCount": 5,
        }
    ]
    monkeypatch.setattr(query, "MAX_REPORTS", 4)
    assert await post(http, {}) == (
        400,
        invalid("More than 4 usage reports match; narrow the range"),
    )
    monkeypatch.setattr(query, "MAX_REPORTS", 100)
    monkeypatch.setattr(query, "MAX_SUMS", 2)
    clock.advance(HOUR * 1000)
    await save(srv, "alice", "wide", {"total": 1, "a": 1, "b": 1}, {"total": 1})
    assert await post(http, {"startTime": T0 // 1000 + 1}) == (
        400,
        invalid("More than 2 usage sums would be answered; narrow the range"),
    )
    monkeypatch.setattr(query, "MAX_SUMS", 4)
    assert (await post(http, {"startTime": T0 // 1000 + 1}))[1]["usage"][0]["tokens"] == {
        "total": 1,
        "a": 1,
        "b": 1,
    }
