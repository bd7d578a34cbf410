"""python-socketio internals happy-socket relies on (pinned ``<6``; tests/core/test_compat_socketio.py
fails when they change).

- ``AsyncServer._send_packet`` / ``_send_eio_packet`` and ``packet_class``: the router's fast
  paths encode a packet once and append it to each recipient's queue (no task per recipient),
  and send an RPC request with an ack id straight to a local socket.
- ``BaseManager._generate_ack_id`` and ``callbacks``: the ack id of such a request, and
  forgetting it when the caller gives up.
- ``BaseManager.basic_enter_room`` / ``basic_leave_room`` / ``basic_disconnect`` (overridden by
  :class:`happy_socket.rooms.RoomIndex`) and ``pending_connect`` / ``pending_disconnect`` (a
  disconnect drops the socket from them, as python-socketio's own ``basic_disconnect`` does).
- ``AsyncPubSubManager``'s subclassing interface: ``host_id``, ``_publish``, ``_listen``,
  ``_thread``, ``_handle_emit``, ``_handle_callback``, ``_return_callback`` — the per-user
  fan-out manager (:mod:`happy_socket.fanout`) is one.

:func:`check` runs at start: without the fast-path internals the router takes the public path
(``sio.emit``/``sio.emit(callback=...)``), without the pub/sub interface the app falls back to
python-socketio's own Redis manager (one channel for the cluster); each logs which.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager
from socketio.base_manager import BaseManager

log = logging.getLogger("happy_socket.compat")

SERVER_INTERNALS = ("_send_packet", "_send_eio_packet", "packet_class")
MANAGER_INTERNALS = ("_generate_ack_id", "get_participants", "eio_sid_from_sid")
MANAGER_STATE = ("callbacks", "pending_disconnect", "rooms")
#: newer python-socketio releases keep ``pending_connect`` too; 5.11.0 has none to clean up
OPTIONAL_MANAGER_STATE = ("pending_connect",)
ROOM_HOOKS = {
    "basic_enter_room": ("self", "sid", "namespace", "room", "eio_sid"),
    "basic_leave_room": ("self", "sid", "namespace", "room"),
    "basic_disconnect": ("self", "sid", "namespace"),
}
PUBSUB_INTERFACE = (
    "_publish",
    "_listen",
    "_thread",
    "_handle_emit",
    "_handle_callback",
    "_return_callback",
)


def _params(fn: Any) -> tuple[str, ...]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    return tuple(
        p.name for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD
    )


def missing_room_hooks() -> list[str]:
    """What :class:`~happy_socket.rooms.RoomIndex` needs of ``BaseManager`` and is not there."""
    missing = [
        f"BaseManager.{name}{params}"
        for name, params in ROOM_HOOKS.items()
        if _params(getattr(BaseManager, name, None))[: len(params)] != params
    ]
    state = BaseManager()
    missing += [
        f"BaseManager().{n}" for n in MANAGER_STATE if not isinstance(getattr(state, n, None), dict)
    ]
    return missing


def missing_fast_path(sio: Any) -> list[str]:
    """The server and manager internals the router's fast paths use that ``sio`` lacks."""
    missing = [f"AsyncServer.{n}" for n in SERVER_INTERNALS if not hasattr(sio, n)]
    manager = sio.manager
    missing += [f"manager.{n}" for n in MANAGER_INTERNALS if not hasattr(manager, n)]
    missing += [
        f"manager.{n}" for n in ("callbacks",) if not isinstance(getattr(manager, n, None), dict)
    ]
    return missing


def missing_pubsub_interface() -> list[str]:
    """The ``AsyncPubSubManager`` subclassing interface the fan-out manager overrides or calls."""
    missing = [
        f"AsyncPubSubManager.{n}" for n in PUBSUB_INTERFACE if not hasattr(AsyncPubSubManager, n)
    ]
    if "host_id" not in inspect.getsource(AsyncPubSubManager.__init__):
        missing.append("AsyncPubSubManager().host_id")
    return missing


def has_fast_path(sio: Any) -> bool:
    """True when the router may use the fast paths; logs once what is missing otherwise."""
    missing = missing_fast_path(sio)
    if missing:
        log.warning(
            "python-socketio lacks %s: the router uses the public emit API (slower)",
            ", ".join(missing),
        )
    return not missing


def event_frames(sio: Any, event: str, data: Any) -> list[str] | None:
    """The encoded Socket.IO EVENT packet ``[event, data]`` on ``/``; None when it is binary."""
    encoded = sio.packet_class(sio_packet.EVENT, namespace="/", data=[event, data]).encode()
    if isinstance(encoded, list):
        return None if any(not isinstance(part, str) for part in encoded) else list(encoded)
    return [encoded]


def eio_messages(frames: Iterable[str]) -> list[Any]:
    """Engine.IO MESSAGE packets carrying ``frames``."""
    return [eio_packet.Packet(eio_packet.MESSAGE, frame) for frame in frames]


async def deliver(sio: Any, rooms: Any, packets: list[Any], skip_sid: str | None) -> int:
    """Append ``packets`` to the send queue of every local socket in ``rooms`` (one copy per
    socket, ``skip_sid`` skipped); returns the sockets reached."""
    send = sio._send_eio_packet
    reached = 0
    for sid, eio_sid in sio.manager.get_participants("/", rooms):
        if sid != skip_sid:
            reached += 1
            for pkt in packets:
                await send(eio_sid, pkt)
    return reached


def new_ack(manager: Any, sid: str, callback: Any) -> int:
    """Register ``callback`` for the next ack id of ``sid``; the id."""
    ack_id: int = manager._generate_ack_id(sid, callback)
    return ack_id


def forget_ack(manager: Any, sid: str, ack_id: int) -> None:
    """Forget a pending ack (its caller gave up)."""
    manager.callbacks.get(sid, {}).pop(ack_id, None)


async def send_with_ack(sio: Any, eio_sid: str, event: str, data: Any, ack_id: int) -> None:
    """Send ``[event, data]`` with ``ack_id`` to one engine.io socket."""
    pkt = sio.packet_class(sio_packet.EVENT, namespace="/", data=[event, data], id=ack_id)
    await sio._send_packet(eio_sid, pkt)


def drop_socket_state(manager: Any, sid: str, namespace: str) -> None:
    """What ``BaseManager.basic_disconnect`` does besides leaving rooms: pending acks and the
    pending connect/disconnect lists."""
    manager.callbacks.pop(sid, None)
    for name in (*OPTIONAL_MANAGER_STATE, "pending_disconnect"):
        pending = getattr(manager, name, None)
        if pending is None:
            continue
        sids = pending.get(namespace)
        if sids is not None and sid in sids:
            sids.remove(sid)
            if not sids:
                del pending[namespace]


EVENT_TASK_TARGET = "_handle_event_internal"


def watch_event_tasks(sio: Any, on_task: Any) -> bool:
    """Call ``on_task(task)`` for each task python-socketio starts to run a client event.

    python-socketio (``async_handlers=True``) starts that task synchronously inside its
    engine.io message handler, so the caller knows which packet it belongs to. False (and
    nothing wrapped) when ``AsyncServer._handle_event_internal`` is missing.
    """
    if not callable(getattr(type(sio), EVENT_TASK_TARGET, None)) or not sio.async_handlers:
        log.warning(
            "python-socketio has no %s (or runs handlers inline): the bytes held by a "
            "socket's unfinished events are not counted",
            EVENT_TASK_TARGET,
        )
        return False
    start = sio.start_background_task

    def start_background_task(target: Any, *args: Any, **kwargs: Any) -> Any:
        task = start(target, *args, **kwargs)
        if getattr(target, "__name__", None) == EVENT_TASK_TARGET:
            on_task(task)
        return task

    sio.start_background_task = start_background_task
    return True
