"""Dispatch: every envelope, the unexpected-error path, ordering, bounded lanes, odd inputs."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

from happy_socket import (
    Context,
    Envelope,
    InvalidParams,
    NotFound,
    Registry,
    Settings,
    VersionMismatch,
    create_app,
    hookimpl,
)
from happy_socket.app import App
from happy_socket.context import ClientType, Connection
from happy_socket.registry import Handler
from happy_socket.testing import ServerHarness
from happy_socket.validation import MAX_DEPTH

seen_order: list[int] = []


async def echo(ctx: Context, data: Any) -> Any:
    return {"ok": True, "echo": data, "user": ctx.user_id}


async def not_found(ctx: Context, data: Any) -> Any:
    raise NotFound("Session not found")


async def invalid_without_message(ctx: Context, data: Any) -> Any:
    raise InvalidParams(None)


async def mismatch(ctx: Context, data: Any) -> Any:
    raise VersionMismatch(version=3, metadata="current")


async def boom(ctx: Context, data: Any) -> Any:
    raise RuntimeError("kaboom")


async def ordered(ctx: Context, data: Any) -> Any:
    await asyncio.sleep(random.random() / 200)
    seen_order.append(data["i"])
    return {"i": data["i"]}


class DemoPlugin:
    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("echo", echo)
        for envelope in Envelope:
            registry.add(f"not-found-{envelope.value}", not_found, envelope=envelope)
            registry.add(f"mismatch-{envelope.value}", mismatch, envelope=envelope)
            registry.add(f"boom-{envelope.value}", boom, envelope=envelope)
        registry.add("invalid-bare", invalid_without_message)
        registry.add("ordered", ordered, ordered=True)


def make_app() -> App:
    return create_app(
        Settings(db="sqlite:///:memory:", secret="s" * 32),
        plugins=[("demo", DemoPlugin())],
        load_entry_points=False,
    )


def connect(app: App, sid: str = "sid1", user: str = "alice") -> Connection:
    conn = Connection(sid=sid, user_id=user, client_type=ClientType.USER)
    app.dispatcher.accept(conn)
    return conn


def handler(app: App, event: str) -> Handler:
    h = app.registry.get(event)
    assert h is not None
    return h


async def test_return_value_is_the_ack() -> None:
    app = make_app()
    connect(app)
    assert await app.dispatcher.run("sid1", handler(app, "echo"), [1, "x"]) == {
        "ok": True,
        "echo": [1, "x"],
        "user": "alice",
    }


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ("result", {"result": "error", "message": "Session not found"}),
        ("ok", {"ok": False, "error": "Session not found"}),
        ("success", {"success": False, "error": "Session not found"}),
    ],
)
async def test_typed_errors_render_through_the_envelope(envelope: str, expected: Any) -> None:
    app = make_app()
    connect(app)
    assert await app.dispatcher.run("sid1", handler(app, f"not-found-{envelope}"), {}) == expected


async def test_error_without_message() -> None:
    app = make_app()
    connect(app)
    assert await app.dispatcher.run("sid1", handler(app, "invalid-bare"), None) == {
        "result": "error"
    }


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ("result", {"result": "version-mismatch", "version": 3, "metadata": "current"}),
        ("ok", {"ok": False, "error": "version-mismatch", "version": 3, "metadata": "current"}),
        (
            "success",
            {"success": False, "error": "version-mismatch", "version": 3, "metadata": "current"},
        ),
    ],
)
async def test_version_mismatch_renders_fields(envelope: str, expected: Any) -> None:
    app = make_app()
    connect(app)
    assert await app.dispatcher.run("sid1", handler(app, f"mismatch-{envelope}"), {}) == expected


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ("result", {"result": "error", "message": "Internal error"}),
        ("ok", {"ok": False, "error": "Internal error"}),
        ("success", {"success": False, "error": "Internal error"}),
    ],
)
async def test_unexpected_error_is_logged_and_answered(
    envelope: str, expected: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    connect(app, sid="sidX", user="bob")
    with caplog.at_level(logging.ERROR, logger="happy_socket.dispatch"):
        assert await app.dispatcher.run("sidX", handler(app, f"boom-{envelope}"), {}) == expected
    [record] = [r for r in caplog.records if r.name == "happy_socket.dispatch"]
    text = record.getMessage()
    for part in (f"boom-{envelope}", "plugin=demo", "user=bob", "sid=sidX"):
        assert part in text
    assert record.exc_info is not None and "kaboom" in str(record.exc_info[1])


async def test_event_of_unknown_socket_is_answered_unauthorized() -> None:
    app = make_app()
    assert await app.dispatcher.run("ghost", handler(app, "echo"), {}) == {
        "result": "error",
        "message": "Unauthorized",
    }


async def test_ordered_events_of_one_socket_run_in_arrival_order() -> None:
    app = make_app()
    connect(app)
    seen_order.clear()
    h = handler(app, "ordered")
    tasks = [
        asyncio.ensure_future(app.dispatcher.run_ordered("sid1", h, {"i": i})) for i in range(200)
    ]
    results = await asyncio.gather(*tasks)
    assert seen_order == list(range(200))
    assert [r["i"] for r in results] == list(range(200))


async def test_a_full_lane_pauses_the_socket_and_refuses_nothing() -> None:
    app = make_app()
    app.dispatcher.max_pending = 5
    connect(app)
    gate = asyncio.Event()

    async def slow(ctx: Context, data: Any) -> Any:
        await gate.wait()
        return {"done": data}

    h = Handler("slow", slow, Envelope.SUCCESS, True, "demo")
    tasks = [asyncio.ensure_future(app.dispatcher.run_ordered("sid1", h, i)) for i in range(7)]
    await asyncio.sleep(0.05)
    assert app.dispatcher.paused("sid1")  # its reader would now wait before the next packet
    assert app.metrics.registry.get_sample_value("happy_socket_paused_sockets") == 1
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [{"done": i} for i in range(7)]  # what arrived runs, in order
    assert not app.dispatcher.paused("sid1")
    assert app.metrics.registry.get_sample_value("happy_socket_paused_sockets") == 0
    assert await app.dispatcher.run_ordered("sid1", h, 9) == {"done": 9}


# -- the same through real sockets -------------------------------------------------------


@pytest.fixture
async def demo(make_server: Any) -> ServerHarness:
    return await make_server(plugins=[("demo", DemoPlugin())])


ODD_INPUTS: list[Any] = [
    None,
    0,
    -1,
    2**53,
    1.5,
    True,
    "",
    "x" * 100_000,
    [],
    [1, [2, [3]]],
    {"a": None},
    {"nested": [[[[[[[[[[]]]]]]]]]]},
    "\ud7ff\uffff",
    {"sid": {"$gt": ""}},
]


async def test_every_ack_is_answered_for_odd_inputs(demo: ServerHarness) -> None:
    sock = await demo.client("alice")
    for value in ODD_INPUTS:
        assert (await sock.call("echo", value))["echo"] == value
        assert await sock.call("boom-ok", value) == {"ok": False, "error": "Internal error"}
        assert await sock.call("not-found-success", value) == {
            "success": False,
            "error": "Session not found",
        }
    assert await sock.call("ping") == {}


async def test_callback_only_emit_reaches_handler_with_none(demo: ServerHarness) -> None:
    sock = await demo.client("alice")
    assert await sock.call("echo") == {"ok": True, "echo": None, "user": "alice"}


def nested(levels: int) -> Any:
    """``levels`` lists inside each other: nested(1) == []."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


async def test_nesting_up_to_the_limit_is_accepted_deeper_is_invalid(demo: ServerHarness) -> None:
    sock = await demo.client("alice")
    assert (await sock.call("echo", nested(MAX_DEPTH)))["ok"] is True
    assert await sock.call("echo", nested(MAX_DEPTH + 1)) == {
        "result": "error",
        "message": "Invalid parameters",
    }
    assert await sock.call("echo", nested(400)) == {
        "result": "error",
        "message": "Invalid parameters",
    }
    assert await sock.call("ping") == {}


async def test_ordered_over_a_real_socket(demo: ServerHarness) -> None:
    sock = await demo.client("alice")
    seen_order.clear()
    results = await asyncio.gather(*(sock.call("ordered", {"i": i}) for i in range(300)))
    assert seen_order == list(range(300))
    assert [r["i"] for r in results] == list(range(300))


async def test_nul_anywhere_is_refused_before_the_handler(demo: ServerHarness) -> None:
    sock = await demo.client("alice")
    for value in ("\u0000\ud7ff", {"a": ["x\u0000"]}, {"k\u0000": 1}):
        assert await sock.call("echo", value) == {
            "result": "error",
            "message": "Invalid parameters",
        }
    assert await sock.call("ping") == {}


async def test_a_packet_the_parser_refuses_closes_only_its_socket(demo: ServerHarness) -> None:
    sock = await demo.client("alice")
    other = await demo.client("alice")
    # raw socket.io EVENT packet: the Python client itself cannot encode this depth
    await sock.client.eio.send('2["echo",' + "[" * 1100 + "]" * 1100 + "]")
    for _ in range(100):
        if not sock.client.connected:
            break
        await asyncio.sleep(0.02)
    assert not sock.client.connected  # a socket either works or is closed
    assert await other.call("ping") == {}
    again = await demo.client("alice")
    assert await again.call("ping") == {}
