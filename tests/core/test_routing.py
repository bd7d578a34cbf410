"""Rooms and recipient filters (docs/protocol.md): who receives what, skip-sender, one copy each."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from happy_socket import (
    AllUserConnections,
    InterestedInSession,
    MachineScopedOnly,
    UserScopedOnly,
)
from happy_socket.routing import has_fast_path
from happy_socket.testing import ServerHarness, TestSocket, use_fast_path


def test_filters_name_their_rooms() -> None:
    assert AllUserConnections().rooms("U") == ["user:U"]
    assert UserScopedOnly().rooms("U") == ["user:U:user-scoped"]
    assert InterestedInSession("S").rooms("U") == ["user:U:session:S", "user:U:user-scoped"]
    assert MachineScopedOnly("M").rooms("U") == ["user:U:machine:M", "user:U:user-scoped"]
    names = {
        f.name
        for f in (
            AllUserConnections(),
            UserScopedOnly(),
            InterestedInSession("S"),
            MachineScopedOnly("M"),
        )
    }
    assert names == {
        "all-user-authenticated-connections",
        "user-scoped-only",
        "all-interested-in-session",
        "machine-scoped-only",
    }


@pytest.fixture
async def server(make_server: Any) -> ServerHarness:
    """Only the core: no plugin emits anything on its own."""
    harness: ServerHarness = await make_server(load_entry_points=False)
    return harness


@pytest.fixture
async def sockets(server: ServerHarness) -> dict[str, TestSocket]:
    return {
        "app": await server.client("alice"),
        "s1": await server.client("alice", client_type="session-scoped", session_id="S1"),
        "s2": await server.client("alice", client_type="session-scoped", session_id="S2"),
        "m1": await server.client("alice", client_type="machine-scoped", machine_id="M1"),
        "m2": await server.client("alice", client_type="machine-scoped", machine_id="M2"),
        "bob": await server.client("bob"),
        "bob_s1": await server.client("bob", client_type="session-scoped", session_id="S1"),
    }


@pytest.fixture(params=["fast", "public"])
def emit_path(request: pytest.FixtureRequest, server: ServerHarness) -> str:
    """Each test using it runs through the router's fast path and python-socketio's API."""
    assert has_fast_path(server.app.sio)  # the installed python-socketio has the internals
    use_fast_path(server.app, request.param == "fast")
    return str(request.param)


async def receivers(sockets: dict[str, TestSocket], event: str) -> set[str]:
    await asyncio.sleep(0.2)
    return {name for name, s in sockets.items() if s.events.get(event)}


@pytest.mark.parametrize(
    ("recipients", "expected"),
    [
        (AllUserConnections(), {"app", "s1", "s2", "m1", "m2"}),
        (UserScopedOnly(), {"app"}),
        (InterestedInSession("S1"), {"app", "s1"}),
        (MachineScopedOnly("M1"), {"app", "m1"}),
    ],
)
async def test_each_filter_reaches_exactly_its_sockets(
    server: ServerHarness,
    sockets: dict[str, TestSocket],
    recipients: Any,
    expected: set[str],
    emit_path: str,
) -> None:
    await server.app.emit_ephemeral("alice", {"type": "probe"}, recipients)
    assert await receivers(sockets, "ephemeral") == expected


async def test_update_carries_id_seq_body_created_at_and_seq_grows(
    server: ServerHarness, sockets: dict[str, TestSocket]
) -> None:
    first = await server.app.emit_update("alice", {"t": "probe"}, UserScopedOnly())
    second = await server.app.emit_update("alice", {"t": "probe"}, UserScopedOnly())
    got = [await sockets["app"].next("update"), await sockets["app"].next("update")]
    assert got == [first, second]
    assert set(first) == {"id", "seq", "body", "createdAt"}
    assert len(first["id"]) == 12 and first["body"] == {"t": "probe"}
    assert second["seq"] == first["seq"] + 1
    assert isinstance(first["createdAt"], int)
    # bob's counter is his own
    bob = await server.app.emit_update("bob", {"t": "probe"}, UserScopedOnly())
    assert bob["seq"] == 1


async def test_skip_sender(
    server: ServerHarness, sockets: dict[str, TestSocket], emit_path: str
) -> None:
    await server.app.router.emit_ephemeral(
        "alice", {"type": "probe"}, InterestedInSession("S1"), skip_sid=sockets["s1"].sid
    )
    assert await receivers(sockets, "ephemeral") == {"app"}


async def test_a_socket_in_two_target_rooms_gets_one_copy(
    server: ServerHarness, sockets: dict[str, TestSocket], emit_path: str
) -> None:
    await server.app.sio.enter_room(sockets["app"].sid, "user:alice:session:S1")
    await server.app.emit_ephemeral("alice", {"type": "probe"}, InterestedInSession("S1"))
    await asyncio.sleep(0.3)
    assert len(sockets["app"].events["ephemeral"]) == 1
    assert len(sockets["s1"].events["ephemeral"]) == 1


async def test_empty_room_list_is_refused_not_broadcast(
    server: ServerHarness, sockets: dict[str, TestSocket]
) -> None:
    class Nobody:
        name = "nobody"

        def rooms(self, user_id: str) -> list[str]:
            return []

    with pytest.raises(ValueError, match="empty room list"):
        await server.app.emit_ephemeral("alice", {"type": "probe"}, Nobody())
    assert await receivers(sockets, "ephemeral") == set()


async def test_request_reaches_one_local_socket_and_resolves_with_its_ack(
    server: ServerHarness, emit_path: str
) -> None:
    sock = await server.client("alice")

    async def answer(data: Any) -> Any:
        return {"echo": data}

    sock.client.on("question", answer)
    router = server.app.router
    reply = await router.request(sock.sid, "question", {"n": 1})
    assert await asyncio.wait_for(reply, 3) == ({"echo": {"n": 1}},)
    manager = server.app.sio.manager
    if emit_path == "fast":  # a request given up is forgotten (no pending ack left behind)
        silent = await server.client("alice")
        pending = await router.request(silent.sid, "nobody-answers", None)
        assert len(manager.callbacks[silent.sid]) == 2  # the id counter + this ack
        pending.cancel()
        await asyncio.sleep(0)
        assert len(manager.callbacks[silent.sid]) == 1
    with pytest.raises(LookupError):
        await router.request("no-such-sid", "question", None)
