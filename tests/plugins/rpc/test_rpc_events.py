"""RPC (docs/events.md) on one process: every rpc event path with its exact JSON."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from happy_socket.testing import ServerHarness, TestSocket

ServerFactory = Callable[..., Awaitable[ServerHarness]]

NOT_AVAILABLE = {"ok": False, "error": "RPC method not available"}
DISCONNECTED = {"ok": False, "error": "RPC target disconnected"}
SAME_SOCKET = {"ok": False, "error": "Cannot call RPC on the same socket"}
NO_METHOD = {"ok": False, "error": "Invalid parameters: method is required"}
TIMED_OUT = {"ok": False, "error": "operation has timed out"}


async def rpc_server(make_server: ServerFactory, **options: Any) -> ServerHarness:
    options = {"grace": 0.0, "timeout": 10.0, **options}
    return await make_server(plugin_options={"rpc": options})


def answer_with(sock: TestSocket, name: str) -> list[Any]:
    """Make ``sock`` answer every rpc-request with ``{"by": name, "echo": data}``."""
    seen: list[Any] = []

    async def on_request(data: Any) -> Any:
        seen.append(data)
        return {"by": name, "echo": data}

    sock.client.on("rpc-request", on_request)
    return seen


async def register(sock: TestSocket, method: str) -> None:
    await sock.emit("rpc-register", {"method": method})
    assert await sock.next("rpc-registered") == {"method": method}


async def unregister(sock: TestSocket, method: str) -> None:
    await sock.emit("rpc-unregister", {"method": method})
    assert await sock.next("rpc-unregistered") == {"method": method}


async def test_register_and_unregister_replies(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    sock = await server.client("alice")
    await register(sock, "m1:bash")
    await unregister(sock, "m1:bash")
    await unregister(sock, "never-registered")  # answered even when not held


@pytest.mark.parametrize(
    "payload",
    [
        None,
        42,
        "m",
        [1],
        {},
        {"method": ""},
        {"method": 7},
        {"method": None},
        {"method": ["a"]},
        {"method": "x" * 5000},
    ],
)
async def test_invalid_method_names(make_server: ServerFactory, payload: Any) -> None:
    server = await rpc_server(make_server)
    sock = await server.client("alice")
    await sock.emit("rpc-register", payload)
    assert await sock.next("rpc-error") == {"type": "register", "error": "Invalid method name"}
    await sock.emit("rpc-unregister", payload)
    assert await sock.next("rpc-error") == {"type": "unregister", "error": "Invalid method name"}
    assert await sock.call("rpc-call", payload) == NO_METHOD
    assert await sock.nothing("rpc-registered", within=0.1)


async def test_call_without_any_argument(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    sock = await server.client("alice")
    assert await sock.call("rpc-call") == NO_METHOD


async def test_call_reaches_holder_and_returns_its_answer(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    daemon = await server.client("alice", client_type="machine-scoped", machine_id="M1")
    app = await server.client("alice")
    seen = answer_with(daemon, "daemon")
    await register(daemon, "M1:spawn")
    params = {"nested": [1, "two", None], "s": "x" * 1000}
    reply = await app.call("rpc-call", {"method": "M1:spawn", "params": params})
    assert reply == {
        "ok": True,
        "result": {"by": "daemon", "echo": {"method": "M1:spawn", "params": params}},
    }
    assert seen == [{"method": "M1:spawn", "params": params}]
    # params may be missing: forwarded as null
    assert await app.call("rpc-call", {"method": "M1:spawn"}) == {
        "ok": True,
        "result": {"by": "daemon", "echo": {"method": "M1:spawn", "params": None}},
    }


async def test_holder_answers_with_nothing_or_several_values(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    holder, caller = await server.client("alice"), await server.client("alice")

    async def several(data: Any) -> Any:
        return ("first", "second") if data["params"] == "two" else None

    holder.client.on("rpc-request", several)
    await register(holder, "m")
    assert await caller.call("rpc-call", {"method": "m", "params": "two"}) == {
        "ok": True,
        "result": "first",
    }
    assert await caller.call("rpc-call", {"method": "m", "params": "none"}) == {
        "ok": True,
        "result": None,
    }


async def test_unknown_method_with_grace_zero_fails_at_once(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server, grace=0.0)
    sock = await server.client("alice")
    assert await sock.call("rpc-call", {"method": "nobody", "params": 1}, timeout=2) == (
        NOT_AVAILABLE
    )


async def test_grace_expires_without_registration(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server, grace=0.5)
    sock = await server.client("alice")
    started = time.monotonic()
    assert await sock.call("rpc-call", {"method": "nobody"}, timeout=5) == NOT_AVAILABLE
    assert time.monotonic() - started >= 0.45  # it did wait for the grace window


async def test_grace_finds_a_late_registration(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server, grace=8.0)
    caller = await server.client("alice")
    late = await server.client("alice", client_type="machine-scoped", machine_id="M1")
    answer_with(late, "late")
    call = asyncio.ensure_future(
        caller.call("rpc-call", {"method": "M1:x", "params": 1}, timeout=8)
    )
    await asyncio.sleep(0.3)
    assert not call.done()
    started = time.monotonic()
    await register(late, "M1:x")
    reply = await call
    assert reply == {"ok": True, "result": {"by": "late", "echo": {"method": "M1:x", "params": 1}}}
    assert time.monotonic() - started < 3  # woken by the registration, not by the 8 s grace


async def test_same_socket(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server, grace=5.0)
    holder = await server.client("alice")
    answer_with(holder, "holder")
    await register(holder, "m")
    # answered at once, without waiting for the grace window
    assert await holder.call("rpc-call", {"method": "m"}, timeout=2) == SAME_SOCKET


async def test_caller_holding_the_method_reaches_the_other_holder(
    make_server: ServerFactory,
) -> None:
    server = await rpc_server(make_server)
    first, second = await server.client("alice"), await server.client("alice")
    answer_with(first, "first")
    answer_with(second, "second")
    await register(first, "m")
    await register(second, "m")
    reply = await second.call("rpc-call", {"method": "m", "params": None})
    assert reply["result"]["by"] == "first"


async def test_latest_registration_wins_and_falls_back(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    caller = await server.client("alice")
    h1, h2 = await server.client("alice"), await server.client("alice")
    answer_with(h1, "h1")
    answer_with(h2, "h2")

    async def who() -> Any:
        reply = await caller.call("rpc-call", {"method": "m", "params": None})
        return reply["result"]["by"] if reply.get("ok") else reply

    await register(h1, "m")
    assert await who() == "h1"
    await register(h2, "m")
    assert await who() == "h2"
    await unregister(h2, "m")
    assert await who() == "h1"
    await register(h2, "m")
    assert await who() == "h2"
    await register(h1, "m")  # re-registering makes it the latest again
    assert await who() == "h1"
    await h1.disconnect()
    assert await who() == "h2"
    await unregister(caller, "m")  # another socket's unregister removes nothing
    assert await who() == "h2"
    await unregister(h2, "m")
    assert await who() == NOT_AVAILABLE


async def test_methods_never_cross_users(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    alice = await server.client("alice")
    bob = await server.client("bob")
    seen = answer_with(alice, "alice")
    await register(alice, "m")
    assert await bob.call("rpc-call", {"method": "m"}) == NOT_AVAILABLE
    assert seen == []


async def test_holder_disconnect_mid_call_fails_fast(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server, timeout=10.0)
    caller, holder = await server.client("alice"), await server.client("alice")
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(data: Any) -> Any:
        arrived.set()
        await release.wait()
        return "too late"

    holder.client.on("rpc-request", slow)
    await register(holder, "m")
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "m"}, timeout=10))
    await asyncio.wait_for(arrived.wait(), 3)
    started = time.monotonic()
    await holder.disconnect()
    try:
        assert await asyncio.wait_for(call, 3) == DISCONNECTED  # not after the 10 s timeout
    finally:
        release.set()
    assert time.monotonic() - started < 3


async def test_holder_that_never_answers_times_out(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server, timeout=0.5)
    caller, holder = await server.client("alice"), await server.client("alice")
    release = asyncio.Event()

    async def silent(data: Any) -> Any:
        await release.wait()

    holder.client.on("rpc-request", silent)
    await register(holder, "m")
    try:
        assert await caller.call("rpc-call", {"method": "m"}, timeout=5) == TIMED_OUT
    finally:
        release.set()


async def test_concurrent_calls_are_independent(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    caller, holder = await server.client("alice"), await server.client("alice")
    answer_with(holder, "h")
    await register(holder, "m")
    replies = await asyncio.gather(
        *(caller.call("rpc-call", {"method": "m", "params": i}) for i in range(20))
    )
    assert [r["result"]["echo"]["params"] for r in replies] == list(range(20))


async def test_registrations_vanish_with_the_socket(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    holder = await server.client("alice")
    await register(holder, "a")
    await register(holder, "b")
    rpc = server.app.service("rpc")
    assert len(rpc.local) == 2
    await holder.disconnect()
    for _ in range(50):
        if len(rpc.local) == 0:
            break
        await asyncio.sleep(0.02)
    assert len(rpc.local) == 0


def test_options_from_settings_and_environment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from happy_socket import ConfigError, Settings, create_app

    rpc = create_app(Settings(db=sqlite_url)).service("rpc")
    assert (rpc.grace, rpc.timeout, rpc.prefix) == (10.0, 30.0, "happy-socket:rpc")
    monkeypatch.setenv("HAPPY_SOCKET_RPC_TIMEOUT", "2.5")
    monkeypatch.setenv("HAPPY_SOCKET_RPC_REDIS_PREFIX", "mine")
    rpc = create_app(
        Settings(db=sqlite_url, plugin_options={"rpc": {"grace": 0, "timeout": 7}})
    ).service("rpc")
    assert (rpc.grace, rpc.timeout, rpc.prefix) == (0.0, 7.0, "mine")  # settings win
    monkeypatch.setenv("HAPPY_SOCKET_RPC_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match=r"rpc\.timeout"):
        create_app(Settings(db=sqlite_url))


async def test_calls_are_counted_in_metrics_by_outcome(make_server: ServerFactory) -> None:
    server = await rpc_server(make_server)
    holder = await server.client("alice", client_type="machine-scoped", machine_id="m1")
    answer_with(holder, "holder")
    await register(holder, "m1:bash")
    caller = await server.client("alice")
    assert (await caller.call("rpc-call", {"method": "m1:bash", "params": 1}))["ok"] is True
    assert await caller.call("rpc-call", {"method": "m1:none"}) == NOT_AVAILABLE
    assert await holder.call("rpc-call", {"method": "m1:bash"}) == SAME_SOCKET
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    for label, count in (("ok", 1), ("not_available", 1), ("same_socket", 1)):
        assert f'happy_socket_rpc_calls_total{{outcome="{label}"}} {count}.0' in text
        assert f'happy_socket_rpc_call_seconds_count{{outcome="{label}"}} {count}.0' in text
    assert 'outcome="disconnected"' not in text
