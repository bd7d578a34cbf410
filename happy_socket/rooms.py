"""python-socketio client managers that know each socket's rooms.

python-socketio keeps ``rooms[namespace][room] -> {sid: eio_sid}`` only, so finding the rooms
of one socket scans every room of the namespace, and there is one room per socket:
``basic_disconnect`` costs O(sockets), and a server with 10,000 sockets spends about 1 ms of
CPU per disconnect (tens of seconds when they all reconnect after a restart). The managers
here keep the reverse index ``sid -> rooms`` beside it, so a disconnect and ``rooms(sid)``
touch only that socket's rooms. Everything else is python-socketio's own code; the hooks
overridden here are python-socketio internals (:mod:`happy_socket.compat.socketio`). The
per-user Redis fan-out manager is :class:`happy_socket.fanout.UserFanoutManager`.
"""

from __future__ import annotations

from typing import Any

import socketio

from .compat import socketio as sio_compat


class RoomIndex:
    """Mixin for a python-socketio manager: a ``sid -> rooms`` index kept beside ``rooms``."""

    rooms: dict[str, dict[Any, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # namespace -> sid -> the rooms it is in (a dict as an ordered set; None = all sockets)
        self.rooms_of: dict[str, dict[str, dict[Any, None]]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self.rooms_of.setdefault(namespace, {}).setdefault(sid, {})[room] = None

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        by_sid = self.rooms_of.get(namespace)
        if by_sid is not None and sid in by_sid:
            by_sid[sid].pop(room, None)
            if not by_sid[sid]:
                del by_sid[sid]
                if not by_sid:
                    del self.rooms_of[namespace]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """``BaseManager.basic_disconnect``, leaving the indexed rooms instead of scanning all."""
        if namespace not in self.rooms:
            return
        for room in list(self.rooms_of.get(namespace, {}).get(sid, ())):
            self.basic_leave_room(sid, namespace, room)
        sio_compat.drop_socket_state(self, sid, namespace)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        """The rooms ``sid`` is in (its own sid room included), in the order it entered them."""
        return [r for r in self.rooms_of.get(namespace, {}).get(sid, ()) if r is not None]


class IndexedManager(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    """``socketio.AsyncManager`` (one process) with the ``sid -> rooms`` index."""


class IndexedRedisManager(RoomIndex, socketio.AsyncRedisManager):  # type: ignore[misc]
    """``socketio.AsyncRedisManager`` (several processes) with the ``sid -> rooms`` index."""
