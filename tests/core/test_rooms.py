"""The sid -> rooms index: same rooms as python-socketio's own manager, O(own rooms) disconnect."""

from __future__ import annotations

import itertools
import random
from typing import Any

import socketio

from happy_socket.rooms import IndexedManager
from happy_socket.testing import ServerHarness


class _Eio:
    def __init__(self) -> None:
        self._ids = itertools.count()

    def generate_id(self) -> str:
        return f"s{next(self._ids)}"


class _Server:
    packet_class = socketio.packet.Packet

    def __init__(self) -> None:
        self.eio = _Eio()


def _state(manager: Any) -> tuple[Any, ...]:
    rooms = {ns: {r: dict(m) for r, m in by_room.items()} for ns, by_room in manager.rooms.items()}
    return rooms, manager.pending_connect, manager.pending_disconnect


async def test_matches_python_socketio_over_random_operations() -> None:
    rng = random.Random(3)
    ours, stock = IndexedManager(), socketio.AsyncManager()
    for manager in (ours, stock):
        manager.set_server(_Server())
    live: list[str] = []
    for step in range(4000):
        op = rng.random()
        if op < 0.3 or not live:
            eio_sid = f"e{step}"
            sid = await ours.pre_connect(eio_sid, "/")
            assert await stock.pre_connect(eio_sid, "/") == sid
            if rng.random() < 0.8:  # else it stays pending (refused or not answered yet)
                await ours.connect(sid, "/")
                await stock.connect(sid, "/")
            live.append(sid)
        elif op < 0.6:
            sid, room = rng.choice(live), f"room{rng.randrange(12)}"
            for manager in (ours, stock):
                await manager.enter_room(sid, "/", room)
        elif op < 0.75:
            sid, room = rng.choice(live), f"room{rng.randrange(12)}"
            for manager in (ours, stock):
                await manager.leave_room(sid, "/", room)
        elif op < 0.8:
            room = f"room{rng.randrange(12)}"
            for manager in (ours, stock):
                await manager.close_room(room, "/")
        else:
            sid = live.pop(rng.randrange(len(live)))
            for manager in (ours, stock):
                manager.pre_disconnect(sid, "/")
                await manager.disconnect(sid, "/")
        assert _state(ours) == _state(stock)
        probe = rng.choice(live) if live else "nobody"
        assert sorted(ours.get_rooms(probe, "/")) == sorted(stock.get_rooms(probe, "/"))
    for sid in live:
        await ours.disconnect(sid, "/")
    assert ours.rooms == {} and ours.rooms_of == {}


async def test_a_served_socket_is_indexed_and_forgotten(server: ServerHarness) -> None:
    manager = server.app.sio.manager
    assert isinstance(manager, IndexedManager)
    alice = await server.client("alice")
    bob = await server.client("bob")
    alice_rooms = server.app.sio.rooms(alice.sid)
    assert alice.sid in alice_rooms and any("alice" in str(r) for r in alice_rooms)
    assert not any("bob" in str(r) for r in alice_rooms)
    await alice.disconnect()
    for _ in range(100):
        if alice.sid not in manager.rooms_of.get("/", {}):
            break
        await bob.call("ping", {})
    assert alice.sid not in manager.rooms_of.get("/", {})
    assert all(alice.sid not in members for members in manager.rooms["/"].values())
    assert bob.sid in manager.rooms_of["/"]
