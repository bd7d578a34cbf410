"""A holder's answer to ``rpc-request`` is input like any other: too deep, or with NUL, the
caller gets ``Invalid RPC response`` at once (never silence, never a traceback), on one
process and across two processes sharing Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from happy_socket.testing import ServerHarness, TestSocket
from tests.hostile.raw import RawSocket

ServerFactory = Callable[..., Awaitable[ServerHarness]]

INVALID_RESPONSE = {"ok": False, "error": "Invalid RPC response"}


def nested(depth: int, inner: str = "1") -> str:
    """JSON text of ``depth`` nested lists around ``inner``."""
    return "[" * depth + inner + "]" * depth


REFUSED_ANSWERS = {
    "list 600 deep": nested(600),
    "list 33 deep": nested(33),
    "object holding a list 40 deep": '{"ok": ' + nested(40) + "}",
    "NUL in a string": '"a\\u0000b"',
    "NUL in a key": '{"a\\u0000": 1}',
    "NUL deep inside": '{"x": [{"y": "\\u0000"}]}',
}


@pytest.fixture
async def raw_holders() -> AsyncIterator[list[RawSocket]]:
    made: list[RawSocket] = []
    yield made
    for raw in made:
        await raw.__aexit__(None, None, None)


async def raw_holder(server: ServerHarness, user: str, method: str, made: list[RawSocket]) -> Any:
    """A hand-spoken socket of ``user`` serving ``method`` (it answers only when told)."""
    raw = RawSocket(server.url)
    await raw.__aenter__()
    made.append(raw)
    assert (await raw.connect({"token": await server.token(user)})).startswith("0{")
    await raw.send("2" + json.dumps(["rpc-register", {"method": method}]))
    assert await raw.recv() == "2" + json.dumps(["rpc-registered", {"method": method}]).replace(
        " ", ""
    )
    return raw


async def answer_next_request(raw: RawSocket, answer_json: str) -> Any:
    """Wait for the next ``rpc-request`` on ``raw`` and ack it with ``answer_json``."""
    packet = await raw.recv(timeout=5)
    assert packet is not None and packet.startswith("2"), packet
    ack_id, _, body = packet[1:].partition("[")
    assert ack_id.isdigit() and json.loads("[" + body)[0] == "rpc-request", packet
    await raw.send(f"3{ack_id}[{answer_json}]")
    return json.loads("[" + body)[1]


async def call_answered_with(
    caller: TestSocket, raw: RawSocket, method: str, answer_json: str
) -> tuple[Any, float]:
    """The caller's ack when the raw holder answers ``answer_json``, and how long it took."""
    started = time.monotonic()
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": method, "params": 1}))
    request = await answer_next_request(raw, answer_json)
    assert request == {"method": method, "params": 1}
    return await asyncio.wait_for(call, 5), time.monotonic() - started


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()[:200]
        for r in caplog.records
        if r.exc_info or "Traceback" in r.getMessage() or "never retrieved" in r.getMessage()
    ]


@pytest.mark.parametrize("answer", list(REFUSED_ANSWERS.values()), ids=list(REFUSED_ANSWERS))
async def test_deep_or_nul_answer_gets_the_caller_invalid_rpc_response_at_once(
    make_server: ServerFactory,
    raw_holders: list[RawSocket],
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0.0, "timeout": 20.0}})
    caller = await server.client("alice")
    raw = await raw_holder(server, "alice", "m", raw_holders)
    reply, took = await call_answered_with(caller, raw, "m", answer)
    assert reply == INVALID_RESPONSE
    assert took < 2  # not the 20 s timeout
    assert tracebacks(caplog) == []
    # the holder stays registered and a sound answer goes through
    reply, _ = await call_answered_with(caller, raw, "m", '{"fine": [1, "two"]}')
    assert reply == {"ok": True, "result": {"fine": [1, "two"]}}
    assert await caller.call("ping") == {}


async def test_answer_at_the_nesting_limit_is_forwarded(
    make_server: ServerFactory, raw_holders: list[RawSocket]
) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0.0}})
    caller = await server.client("alice")
    raw = await raw_holder(server, "alice", "m", raw_holders)
    reply, _ = await call_answered_with(caller, raw, "m", nested(32, '"deep"'))
    expected: Any = "deep"
    for _ in range(32):
        expected = [expected]
    assert reply == {"ok": True, "result": expected}


async def test_refused_answers_are_counted_as_invalid_response(
    make_server: ServerFactory, raw_holders: list[RawSocket]
) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0.0}})
    caller = await server.client("alice")
    raw = await raw_holder(server, "alice", "m", raw_holders)
    for answer in (nested(600), '"\\u0000"'):
        reply, _ = await call_answered_with(caller, raw, "m", answer)
        assert reply == INVALID_RESPONSE
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    assert 'happy_socket_rpc_calls_total{outcome="invalid_response"} 2.0' in text


@pytest.mark.parametrize(
    "answer", [nested(600), '{"k": "\\u0000"}'], ids=["list 600 deep", "NUL in a string"]
)
async def test_deep_or_nul_answer_across_processes_reaches_the_caller(
    make_server: ServerFactory,
    redis_url: str,
    tmp_path: Any,
    raw_holders: list[RawSocket],
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    """Caller on one server, raw holder on another (one Redis prefix): the holder's process
    checks the answer and sends the refusal back over Redis."""
    options = {"rpc": {"redis_prefix": f"hs-test:{uuid.uuid4().hex[:12]}", "grace": 2.0}}
    a = await make_server(redis=redis_url, plugin_options=options)
    b = await make_server(
        redis=redis_url, plugin_options=options, db=f"sqlite:///{tmp_path / 'b.db'}"
    )
    caller = await a.client("alice")
    raw = await raw_holder(b, "alice", "m", raw_holders)
    reply, took = await call_answered_with(caller, raw, "m", answer)
    assert reply == INVALID_RESPONSE
    assert took < 2
    assert tracebacks(caplog) == []
    reply, _ = await call_answered_with(caller, raw, "m", '"fine"')
    assert reply == {"ok": True, "result": "fine"}
