"""Rooms and recipient filters (docs/protocol.md), and the Router that emits through them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from socketio.async_pubsub_manager import AsyncPubSubManager

from .compat import socketio as sio_compat
from .context import ClientType, Connection, now_ms
from .ids import random_id

if TYPE_CHECKING:
    from .app import App


def _room_user(user_id: str) -> str:
    """The user id inside room names, with ``%`` and ``:`` escaped.

    Without escaping, user ``a`` with a session-scoped socket for session ``x`` would join
    ``user:a:session:x``, the user room of a user whose id is ``a:session:x``. Ids without
    ``%`` or ``:`` (the built-in accounts' ids) are unchanged.
    """
    if "%" in user_id or ":" in user_id:
        return user_id.replace("%", "%25").replace(":", "%3A")
    return user_id


def user_room(user_id: str) -> str:
    """Every socket of the user."""
    return f"user:{_room_user(user_id)}"


def user_scoped_room(user_id: str) -> str:
    """The user's user-scoped sockets (apps)."""
    return f"user:{_room_user(user_id)}:user-scoped"


def session_room(user_id: str, session_id: str) -> str:
    """The user's session-scoped sockets of one session."""
    return f"user:{_room_user(user_id)}:session:{session_id}"


def machine_room(user_id: str, machine_id: str) -> str:
    """The user's machine-scoped sockets of one machine."""
    return f"user:{_room_user(user_id)}:machine:{machine_id}"


def room_owner(room: Any) -> str | None:
    """The (escaped) user id every room name of that user starts with; None for other rooms.

    ``user:U``, ``user:U:user-scoped``, ``user:U:session:S``, ``user:U:machine:M`` all give ``U``
    (escaped: ``:`` cannot occur in it), a socket's own sid room gives None.
    """
    if not isinstance(room, str) or not room.startswith("user:"):
        return None
    end = room.find(":", 5)
    return room[5:] if end < 0 else room[5:end]


def rooms_of(conn: Connection) -> list[str]:
    """The rooms an accepted socket joins."""
    rooms = [user_room(conn.user_id)]
    if conn.client_type is ClientType.SESSION and conn.session_id is not None:
        rooms.append(session_room(conn.user_id, conn.session_id))
    elif conn.client_type is ClientType.MACHINE and conn.machine_id is not None:
        rooms.append(machine_room(conn.user_id, conn.machine_id))
    else:
        rooms.append(user_scoped_room(conn.user_id))
    return rooms


class RecipientFilter(Protocol):
    """Which of one user's sockets receive an emit; ``rooms`` is never empty."""

    name: str

    def rooms(self, user_id: str) -> list[str]:
        """The rooms of ``user_id`` this filter addresses."""
        ...


@attrs.frozen
class AllUserConnections:
    """``all-user-authenticated-connections``: every socket of the user."""

    name = "all-user-authenticated-connections"

    def rooms(self, user_id: str) -> list[str]:
        return [user_room(user_id)]


@attrs.frozen
class UserScopedOnly:
    """``user-scoped-only``: the user's apps."""

    name = "user-scoped-only"

    def rooms(self, user_id: str) -> list[str]:
        return [user_scoped_room(user_id)]


@attrs.frozen
class InterestedInSession:
    """``all-interested-in-session(S)``: session S's sockets and the apps."""

    session_id: str
    name = "all-interested-in-session"

    def rooms(self, user_id: str) -> list[str]:
        return [session_room(user_id, self.session_id), user_scoped_room(user_id)]


@attrs.frozen
class MachineScopedOnly:
    """``machine-scoped-only(M)``: machine M's daemon sockets and the apps."""

    machine_id: str
    name = "machine-scoped-only"

    def rooms(self, user_id: str) -> list[str]:
        return [machine_room(user_id, self.machine_id), user_scoped_room(user_id)]


def has_fast_path(sio: Any) -> bool:
    """True when ``sio`` has the python-socketio internals the router's fast paths use."""
    return not sio_compat.missing_fast_path(sio)


class Router:
    """Addresses emits to one user's rooms; it can never reach another user's sockets."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._fast: bool | None = None  # has_fast_path(sio), known at the first emit

    @property
    def _sio(self) -> Any:
        return self._app.sio

    @property
    def fast(self) -> bool:
        """Whether the fast paths (``request``, local emits) use python-socketio internals."""
        if self._fast is None:
            self._fast = sio_compat.has_fast_path(self._sio)  # logs the path it takes
        return self._fast

    @fast.setter
    def fast(self, enabled: bool) -> None:
        """Force the fast paths on (when the internals are there) or off (public API only)."""
        self._fast = enabled and sio_compat.has_fast_path(self._sio)

    async def emit_update(
        self,
        user_id: str,
        body: dict[str, Any],
        to: RecipientFilter,
        *,
        skip_sid: str | None = None,
    ) -> dict[str, Any]:
        """Allocate the user's next update seq, then emit ``update``; returns the payload."""
        seq = await self._app.accounts.next_seq(user_id)
        return await self.send_update(user_id, seq, body, to, skip_sid=skip_sid)

    async def send_update(
        self,
        user_id: str,
        seq: int,
        body: dict[str, Any],
        to: RecipientFilter,
        *,
        skip_sid: str | None = None,
    ) -> dict[str, Any]:
        """Emit ``update`` with a seq already allocated (inside a write unit, say)."""
        payload = {"id": random_id(12), "seq": seq, "body": body, "createdAt": now_ms()}
        await self._emit("update", payload, to.rooms(user_id), skip_sid)
        return payload

    async def emit_ephemeral(
        self,
        user_id: str,
        payload: dict[str, Any],
        to: RecipientFilter,
        *,
        skip_sid: str | None = None,
    ) -> None:
        """Emit ``ephemeral`` to ``to``."""
        await self._emit("ephemeral", payload, to.rooms(user_id), skip_sid)

    async def emit_to_sid(self, sid: str, event: str, data: Any) -> None:
        """Emit ``event`` to one socket."""
        await self._sio.emit(event, data, to=sid)

    async def request(self, sid: str, event: str, data: Any) -> asyncio.Future[tuple[Any, ...]]:
        """Send ``event`` with an ack request to a socket *of this process*.

        Returns a future of the ack's arguments (a tuple); it never resolves if the socket
        leaves without answering, so race it against your own timeout and disconnect signal,
        and cancel it when you give up (that forgets the pending ack). Unlike ``sio.call()``, no
        task, event or ``wait_for`` per request, and never a trip through Redis. Raises
        ``LookupError`` when ``sid`` is not connected here.
        """
        sio = self._sio
        manager = sio.manager
        if not manager.is_connected(sid, "/"):
            raise LookupError(f"socket {sid} is not connected to this process")
        answer: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            if not answer.done():
                answer.set_result(args)

        eio_sid = manager.eio_sid_from_sid(sid, "/") if self.fast else None
        if eio_sid is None:  # the public API (a pending ack of a socket that left is dropped)
            await sio.emit(event, data, to=sid, callback=on_ack)
            return answer
        ack_id = sio_compat.new_ack(manager, sid, on_ack)

        def forget(fut: asyncio.Future[tuple[Any, ...]]) -> None:
            if fut.cancelled():  # given up: drop the pending ack (python-socketio's call leaks it)
                sio_compat.forget_ack(manager, sid, ack_id)

        answer.add_done_callback(forget)
        await sio_compat.send_with_ack(sio, eio_sid, event, data, ack_id)
        return answer

    async def _emit(self, event: str, data: Any, rooms: list[str], skip_sid: str | None) -> None:
        if not rooms:  # python-socketio would broadcast to everyone
            raise ValueError("refusing to emit to an empty room list")
        sio = self._sio
        if self.fast and not isinstance(sio.manager, AsyncPubSubManager):  # one process
            await self._emit_local(sio, event, data, rooms, skip_sid)
        else:  # the manager delivers locally and publishes (fanout.UserFanoutManager: per user)
            await sio.emit(event, data, to=rooms, skip_sid=skip_sid)

    @staticmethod
    async def _emit_local(
        sio: Any, event: str, data: Any, rooms: list[str], skip_sid: str | None
    ) -> None:
        """What ``AsyncManager.emit`` does, without a task per recipient.

        python-socketio encodes the packet once, then creates a task per recipient and waits
        for all of them; each task only appends the frame to that socket's send queue, so
        appending in a loop delivers the same frames in the same order with two event-loop
        round trips less per emit. One copy per socket (participants are deduplicated).
        """
        frames = sio_compat.event_frames(sio, event, data)
        if frames is None:  # binary: python-socketio's own path
            await sio.emit(event, data, to=rooms, skip_sid=skip_sid)
            return
        await sio_compat.deliver(sio, rooms, sio_compat.eio_messages(frames), skip_sid)
