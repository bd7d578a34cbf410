"""RPC registrations are bounded on one process: method name length, methods per socket,
methods per user. A refusal is the documented ``rpc-error`` and stores nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from happy_socket.testing import ServerHarness, TestSocket

from .test_rpc_events import NOT_AVAILABLE, answer_with, register, unregister

ServerFactory = Callable[..., Awaitable[ServerHarness]]

INVALID_NAME = {"type": "register", "error": "Invalid method name"}
ON_SOCKET = {"type": "register", "error": "Too many RPC methods on this socket"}
FOR_USER = {"type": "register", "error": "Too many RPC methods for this user"}


async def limited(make_server: ServerFactory, **options: Any) -> ServerHarness:
    return await make_server(plugin_options={"rpc": {"grace": 0.0, **options}})


async def refused(sock: TestSocket, method: str, error: dict[str, str]) -> None:
    await sock.emit("rpc-register", {"method": method})
    assert await sock.next("rpc-error") == error
    assert await sock.nothing("rpc-registered", within=0.05)


def stored(server: ServerHarness) -> list[tuple[str, str, str]]:
    """Every registration of the process as (user, method, sid)."""
    return sorted((u, m, s) for u, m, s, _ in server.app.service("rpc").local.items())


async def closed(server: ServerHarness, sock: TestSocket) -> None:
    """Disconnect ``sock`` and wait until the server forgot its registrations."""
    sid = sock.sid
    await sock.disconnect()
    for _ in range(100):
        if all(s != sid for _, _, s in stored(server)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the closed socket's registrations are still there")


async def test_default_limits_fit_a_daemon_and_many_sessions(make_server: ServerFactory) -> None:
    rpc = (await make_server()).app.service("rpc")
    assert (rpc.max_method_length, rpc.max_per_socket, rpc.max_per_user) == (256, 100, 1000)
    assert rpc.cleanup_slice == 500


async def test_method_name_of_256_characters_is_accepted_257_refused(
    make_server: ServerFactory,
) -> None:
    server = await limited(make_server)
    sock = await server.client("alice")
    longest = "m" * 36 + ":" + "x" * 219
    assert len(longest) == 256
    await register(sock, longest)
    await refused(sock, longest + "x", INVALID_NAME)
    assert stored(server) == [("alice", longest, sock.sid)]
    # a name nobody can register cannot be called or unregistered either
    assert await sock.call("rpc-call", {"method": longest + "x"}) == {
        "ok": False,
        "error": "Invalid parameters: method is required",
    }
    await sock.emit("rpc-unregister", {"method": longest + "x"})
    assert await sock.next("rpc-error") == {"type": "unregister", "error": "Invalid method name"}


async def test_method_name_length_is_an_option(make_server: ServerFactory) -> None:
    server = await limited(make_server, max_method_length=8)
    sock = await server.client("alice")
    await register(sock, "12345678")
    await refused(sock, "123456789", INVALID_NAME)


async def test_methods_per_socket_refused_beyond_the_limit_and_nothing_stored(
    make_server: ServerFactory,
) -> None:
    server = await limited(make_server, max_methods_per_socket=3)
    sock, other = await server.client("alice"), await server.client("alice")
    answer_with(sock, "sock")
    for i in range(3):
        await register(sock, f"m{i}")
    await refused(sock, "m3", ON_SOCKET)
    assert [m for _, m, _ in stored(server)] == ["m0", "m1", "m2"]
    assert await other.call("rpc-call", {"method": "m3"}) == NOT_AVAILABLE
    await register(sock, "m1")  # re-registering a held method takes no new place
    await register(other, "m3")  # the limit is per socket: another socket has its own
    assert len(stored(server)) == 4


async def test_unregister_frees_a_place_on_the_socket(make_server: ServerFactory) -> None:
    server = await limited(make_server, max_methods_per_socket=2)
    sock, caller = await server.client("alice"), await server.client("alice")
    answer_with(sock, "sock")
    await register(sock, "a")
    await register(sock, "b")
    await refused(sock, "c", ON_SOCKET)
    await unregister(sock, "never-held")  # frees nothing
    await refused(sock, "c", ON_SOCKET)
    await unregister(sock, "a")
    await register(sock, "c")
    assert (await caller.call("rpc-call", {"method": "c", "params": 1}))["ok"] is True


async def test_methods_per_user_span_the_users_sockets(make_server: ServerFactory) -> None:
    server = await limited(make_server, max_methods_per_socket=3, max_methods_per_user=5)
    daemon, session = await server.client("alice"), await server.client("alice")
    for i in range(3):
        await register(daemon, f"d{i}")
    await register(session, "s0")
    await register(session, "s1")
    await refused(session, "s2", FOR_USER)
    await refused(daemon, "d3", ON_SOCKET)  # the socket limit is checked first
    assert len(stored(server)) == 5
    # another user is not affected by alice's count
    bob = await server.client("bob")
    for i in range(3):
        await register(bob, f"d{i}")


async def test_a_closed_socket_frees_its_users_places(make_server: ServerFactory) -> None:
    server = await limited(make_server, max_methods_per_user=2)
    first, second = await server.client("alice"), await server.client("alice")
    await register(first, "a")
    await register(first, "b")
    await refused(second, "c", FOR_USER)
    await closed(server, first)
    await register(second, "c")
    await register(second, "d")
    await refused(second, "e", FOR_USER)
    assert [m for _, m, _ in stored(server)] == ["c", "d"]


async def test_one_socket_flooding_registrations_keeps_only_the_limit(
    make_server: ServerFactory,
) -> None:
    """The measured attack: many long names from one socket. All are answered, at most the
    per-socket limit is held, and the socket keeps working."""
    server = await limited(make_server)
    sock = await server.client("alice")
    for i in range(150):
        await sock.emit("rpc-register", {"method": f"{i:04d}:" + "x" * 250})
    errors = [await sock.next("rpc-error") for _ in range(50)]
    assert errors == [ON_SOCKET] * 50
    assert len(stored(server)) == 100
    assert await sock.call("ping") == {}


@pytest.mark.parametrize("name", ["max_methods_per_socket", "max_methods_per_user"])
@pytest.mark.parametrize("value", [0, -1, "many"])
def test_limits_must_be_positive_integers(sqlite_url: str, name: str, value: Any) -> None:
    from happy_socket import ConfigError, Settings, create_app

    with pytest.raises(ConfigError, match=rf"rpc\.{name}"):
        create_app(Settings(db=sqlite_url, plugin_options={"rpc": {name: value}}))


def test_limits_from_the_environment(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from happy_socket import Settings, create_app

    monkeypatch.setenv("HAPPY_SOCKET_RPC_MAX_METHODS_PER_SOCKET", "7")
    monkeypatch.setenv("HAPPY_SOCKET_RPC_MAX_METHODS_PER_USER", "70")
    monkeypatch.setenv("HAPPY_SOCKET_RPC_MAX_METHOD_LENGTH", "64")
    monkeypatch.setenv("HAPPY_SOCKET_RPC_CLEANUP_SLICE", "50")
    rpc = create_app(Settings(db=sqlite_url)).service("rpc")
    assert (rpc.max_per_socket, rpc.max_per_user, rpc.max_method_length) == (7, 70, 64)
    assert rpc.cleanup_slice == 50
