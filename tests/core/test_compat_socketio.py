"""Tripwires for every python-socketio internal happy-socket uses (happy_socket.compat.socketio).

Each test fails when the installed python-socketio changes what the compat module relies on;
re-read the module's docstring and the release notes before loosening one.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
import socketio
from socketio.async_pubsub_manager import AsyncPubSubManager
from socketio.base_manager import BaseManager

from happy_socket import Settings, create_app
from happy_socket.compat import socketio as compat
from happy_socket.fanout import UserFanoutManager
from happy_socket.rooms import IndexedManager, IndexedRedisManager


def test_the_installed_release_has_every_internal() -> None:
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=IndexedManager())
    assert compat.missing_fast_path(sio) == []
    assert compat.missing_room_hooks() == []
    assert compat.missing_pubsub_interface() == []


def test_server_send_internals_keep_their_shape() -> None:
    for name in ("_send_packet", "_send_eio_packet"):
        params = list(inspect.signature(getattr(socketio.AsyncServer, name)).parameters)
        assert params == ["self", "eio_sid", params[2]], name
        assert inspect.iscoroutinefunction(getattr(socketio.AsyncServer, name))
    sio = socketio.AsyncServer(async_mode="asgi")
    assert issubclass(sio.packet_class, socketio.packet.Packet)


def test_ack_ids_and_pending_lists_are_plain_dicts() -> None:
    manager = BaseManager()
    first = compat.new_ack(manager, "sid1", print)
    second = compat.new_ack(manager, "sid1", len)
    assert (first, second) == (1, 2)
    assert manager.callbacks["sid1"][2] is len
    compat.forget_ack(manager, "sid1", 2)
    assert 2 not in manager.callbacks["sid1"]
    has_pending_connect = hasattr(manager, "pending_connect")  # not in python-socketio 5.11
    if has_pending_connect:
        manager.pending_connect["/"] = ["sid1", "sid2"]
    manager.pending_disconnect["/"] = ["sid1"]
    compat.drop_socket_state(manager, "sid1", "/")
    assert "sid1" not in manager.callbacks
    if has_pending_connect:
        assert manager.pending_connect == {"/": ["sid2"]}
    assert manager.pending_disconnect == {}


def test_the_pubsub_interface_is_what_the_fanout_manager_overrides() -> None:
    """``_thread`` reads ``_listen``, dispatches ``emit`` to ``_handle_emit`` and ``callback``
    to ``_handle_callback``, and skips the messages of its own ``host_id``."""
    source = inspect.getsource(AsyncPubSubManager._thread)
    for needle in ("self._listen()", "_handle_emit(data)", "_handle_callback(data)", "host_id"):
        assert needle in source, needle
    assert "_publish(" in inspect.getsource(AsyncPubSubManager._return_callback)
    manager = UserFanoutManager("redis://127.0.0.1:1/0", channel="x")
    assert isinstance(manager.host_id, str) and len(manager.host_id) == 32  # the frame prefix
    assert inspect.isasyncgenfunction(UserFanoutManager._listen)


def test_room_hooks_are_called_by_python_socketio_itself() -> None:
    """RoomIndex overrides ``basic_*``: python-socketio must route room changes through them."""
    assert "basic_enter_room" in inspect.getsource(BaseManager.pre_connect)
    assert "basic_leave_room" in inspect.getsource(BaseManager.basic_disconnect)
    assert "basic_disconnect" in inspect.getsource(socketio.AsyncManager.disconnect)
    assert "basic_enter_room" in inspect.getsource(socketio.AsyncManager.enter_room)


def test_a_release_without_the_fast_path_takes_the_public_one_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Bare:
        manager = BaseManager()

    with caplog.at_level(logging.WARNING, logger="happy_socket.compat"):
        assert compat.has_fast_path(Bare()) is False
    assert "public emit API" in caplog.text and "AsyncServer._send_packet" in caplog.text


def test_a_release_without_the_pubsub_interface_falls_back_to_its_redis_manager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db="sqlite:///:memory:", secret="s" * 32, redis="redis://127.0.0.1:1/0")
    assert isinstance(create_app(settings, load_entry_points=False).sio.manager, UserFanoutManager)
    monkeypatch.setattr(compat, "PUBSUB_INTERFACE", (*compat.PUBSUB_INTERFACE, "_gone"))
    with caplog.at_level(logging.WARNING, logger="happy_socket"):
        app = create_app(settings, load_entry_points=False)
    manager: Any = app.sio.manager
    assert isinstance(manager, IndexedRedisManager)
    assert "AsyncPubSubManager._gone" in caplog.text and "per-user fan-out" in caplog.text


def test_event_frames_are_what_python_socketio_sends() -> None:
    sio = socketio.AsyncServer(async_mode="asgi")
    assert compat.event_frames(sio, "update", {"a": 1}) == ['2["update",{"a":1}]']
    assert compat.event_frames(sio, "update", {"b": b"\x00"}) is None  # binary: its own path


def test_event_tasks_are_started_by_handle_event_internal() -> None:
    """``watch_event_tasks`` recognises python-socketio's per-event task by its target."""
    import socketio

    from happy_socket.compat.socketio import EVENT_TASK_TARGET, watch_event_tasks

    sio = socketio.AsyncServer(async_mode="asgi")
    assert sio.async_handlers and callable(getattr(sio, EVENT_TASK_TARGET))
    assert watch_event_tasks(sio, lambda task: None)
    assert not watch_event_tasks(
        socketio.AsyncServer(async_mode="asgi", async_handlers=False), print
    )
