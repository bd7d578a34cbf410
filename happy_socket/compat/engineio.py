"""python-engineio internals happy-socket relies on (pinned ``<5``; tests/core/test_backpressure.py
fails when they change).

- ``AsyncServer.handlers["message"]``: the handler python-socketio registered for engine.io
  messages, which we wrap to pause a socket's reader (backpressure). engine.io awaits it for
  each packet it reads, so while the wrapper waits, nothing more is read from that socket.
- ``AsyncServer.sockets`` and ``AsyncSocket.last_ping`` / ``send``: a paused socket cannot
  read its client's PONG, so it is kept alive by hand (see :func:`keep_alive`).
- ``AsyncSocket.queue`` and ``close(wait, abort)``: the socket whose send queue overflowed is
  found by its queue and closed (:func:`close_socket_of`).
- ``AsyncServer._async["websocket"]`` (the websocket driver), ``AsyncSocket.receive``,
  ``connected``/``upgraded``, ``server.reason``: :mod:`happy_socket.transport`'s loop
  (:func:`install_websocket_driver`); ``AsyncSocket.schedule_ping``/``last_ping``/
  ``closing``/``closed``: its timer-driven PINGs (:func:`set_ping_schedule`).
- ``AsyncServer.sockets`` and ``AsyncSocket.sid``/``closed``: a loop detached from the ASGI
  call (:func:`happy_socket.transport.run_detached`) removes its closed socket from the
  table, as engine.io's ``_handle_connect`` does when its websocket handler returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engineio import packet
from engineio.exceptions import SocketIsClosedError as SocketIsClosedError
from engineio.exceptions import UnknownPacketError as UnknownPacketError

from ..errors import ConfigError

MessageHandler = Callable[[str, Any], Awaitable[Any]]


def check(eio: Any) -> None:
    """Raise ConfigError when the installed engine.io lacks what this module uses."""
    handler = getattr(eio, "handlers", {}).get("message")
    if handler is None or not isinstance(getattr(eio, "sockets", None), dict):
        raise ConfigError(
            "The installed python-engineio has no message handler table or socket table; "
            "happy-socket's backpressure needs python-engineio 4.15.1 to 4.x."
        )


def wrap_message_handler(eio: Any, wrap: Callable[[MessageHandler], MessageHandler]) -> None:
    """Replace engine.io's ``message`` handler with ``wrap(current handler)``."""
    check(eio)
    eio.on("message", wrap(eio.handlers["message"]))


def wrap_connect_handler(eio: Any, wrap: Callable[[MessageHandler], MessageHandler]) -> None:
    """Replace engine.io's ``connect`` handler (``(eio_sid, environ)``) with ``wrap(it)``."""
    check(eio)
    eio.on("connect", wrap(eio.handlers["connect"]))


async def keep_alive(eio: Any, eio_sid: str) -> bool:
    """Keep a socket whose reader is paused from timing out; False when it is gone.

    The server side: the pending ping's clock restarts (its PONG is queued behind the frames
    we are not reading). The client side: a PING, so the client's own timer, which expects one
    every ping interval, does not expire; it answers with a PONG we read on resume.
    """
    socket = eio.sockets.get(eio_sid)
    if socket is None or socket.closed or socket.closing:
        return False
    socket.last_ping = time.time()
    await socket.send(packet.Packet(packet.PING))
    return True


log = logging.getLogger("happy_socket.dispatch")


def queue_of(eio: Any, eio_sid: str) -> Any:
    """The send queue of engine.io socket ``eio_sid`` (None when it is gone)."""
    socket = eio.sockets.get(eio_sid)
    return getattr(socket, "queue", None) if socket is not None else None


def close_socket_of(eio: Any, queue: Any) -> str | None:
    """Close (in the background) the engine.io socket whose send queue is ``queue``; its sid."""
    for eio_sid, socket in list(eio.sockets.items()):
        if socket.queue is queue:
            if not socket.closed and not socket.closing:
                task = asyncio.get_running_loop().create_task(
                    socket.close(wait=False, abort=True), name=f"close-{eio_sid}"
                )
                _closing.add(task)
                task.add_done_callback(_closing.discard)
            return str(eio_sid)
    return None


_closing: set[asyncio.Task[Any]] = set()


# -- the websocket driver (happy_socket.transport) ---------------------------------------


def asgi_websocket_driver() -> Any:
    """engine.io's own ASGI websocket driver class (``async_drivers.asgi.WebSocket``)."""
    from engineio.async_drivers import asgi

    return asgi.WebSocket


def install_websocket_driver(eio: Any, driver: Any) -> None:
    """Make ``eio`` (only this server) open websockets through ``driver``.

    engine.io looks its driver up in ``eio._async['websocket']`` and calls
    ``driver(socket._websocket_handler, eio)(environ)``; ``_async`` is a module-level dict
    shared by every server, so this server gets a copy.
    """
    table = getattr(eio, "_async", None)
    if not isinstance(table, dict) or "websocket" not in table:
        raise ConfigError(
            "The installed python-engineio has no websocket driver table; "
            "happy-socket's websocket transport needs python-engineio 4.15.1 to 4.x."
        )
    eio._async = {**table, "websocket": driver}


def set_ping_schedule(socket: Any, schedule: Callable[[Any], None]) -> None:
    """Make engine.io call ``schedule(socket)`` where it calls ``socket.schedule_ping()``
    (at connect and on every PONG)."""
    if not callable(getattr(socket, "schedule_ping", None)) or not hasattr(socket, "last_ping"):
        raise ConfigError(
            "The installed python-engineio's sockets have no schedule_ping/last_ping; "
            "happy-socket's websocket transport needs python-engineio 4.15.1 to 4.x."
        )
    socket.schedule_ping = functools.partial(schedule, socket)
