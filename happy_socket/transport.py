"""engine.io's websocket transport without a task, a ``wait_for`` and a queue hop per frame.

engine.io's own websocket loop (``AsyncSocket._websocket_handler``) starts a task and a
``wait_for`` for every frame it reads, and its writer wakes a ``wait_for`` task per batch and
sends each packet through the ASGI ``send`` call (one ``transport.write`` per frame).
:class:`FastWebSocket` runs the same protocol with less per frame when the ASGI server is
happy-socket's uvicorn protocol (:func:`happy_socket.websocket.websocket_protocol`):

- the reader awaits the protocol's receive queue directly (no task, no ``wait_for``; frames
  already parsed are taken without suspending); a timer per socket enforces engine.io's
  read timeout (ping interval + ping timeout) instead of a ``wait_for`` per frame;
- the writer waits until the transport is writable (backpressure and the write-stall abort
  stay the protocol's), then takes everything queued since it last ran and writes those
  frames with one ``transport.write``; the 101 response and engine.io's OPEN packet go out
  in one write too;
- PINGs come from a timer per socket instead of a task per socket and ping cycle.

Everything else is engine.io's: ``AsyncSocket.receive`` for each packet (so the dispatcher's
packet gate, backpressure and binary refusal apply unchanged), its send queue (the byte cap
of :class:`happy_socket.sendqueue.SendQueue`), the ping timeout, ``close``. Upgrades from
polling and other ASGI servers take engine.io's own loop. The engine.io internals used are
listed in :mod:`happy_socket.compat.engineio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from engineio import packet

from .compat import engineio as engineio_compat

log = logging.getLogger("happy_socket.transport")


def fast_protocol(send: Any) -> Any:
    """The uvicorn protocol behind an ASGI ``send``, if it offers the fast path; else None."""
    proto = getattr(send, "__self__", None)
    if all(
        callable(getattr(proto, m, None)) for m in ("write_frames", "wait_writable", "accept_with")
    ):
        return proto
    return None


class FastWebSocket:
    """engine.io's websocket driver (``_async['websocket']``), with the fast loop above."""

    __slots__ = ("handler", "server")

    def __init__(self, handler: Any, server: Any) -> None:
        self.handler = handler  # the socket's bound ``_websocket_handler``
        self.server = server

    async def __call__(self, environ: dict[str, Any]) -> str:
        socket = getattr(self.handler, "__self__", None)
        proto = fast_protocol(environ.get("asgi.send"))
        if proto is None or socket is None or socket.connected:  # another server, or an upgrade
            fallback = engineio_compat.asgi_websocket_driver()(self.handler, self.server)
            return str(await fallback(environ))
        await accept(socket, proto)
        await run(socket, proto)  # not accepted: its receive reports the disconnect at once
        return ""


async def accept(socket: Any, proto: Any) -> bool:
    """Accept the websocket, with what engine.io queued already (its OPEN packet) in the
    same write as the 101 response."""
    queue = socket.queue
    frames: list[str | bytes] = []
    while not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is None:  # closed before it opened: engine.io's end mark stays for the writer
            queue.put_nowait(None)
            break
        frames.append(pkt.encode())
    return bool(await proto.accept_with(frames))


async def run(socket: Any, proto: Any) -> None:
    """Serve engine.io ``socket`` over the accepted websocket of uvicorn protocol ``proto``."""
    server = socket.server
    socket.connected = True
    socket.upgraded = True
    loop = asyncio.get_running_loop()
    writer = loop.create_task(write_loop(socket, proto))
    limit = server.ping_interval + server.ping_timeout
    max_size = server.max_http_buffer_size
    waiting_since: list[float | None] = [None]

    def watchdog() -> None:
        since = waiting_since[0]
        if since is not None and loop.time() - since >= limit:
            proto.transport.abort()  # the receive below gets websocket.disconnect
        else:
            handle[0] = loop.call_later(limit, watchdog)

    handle = [loop.call_later(limit, watchdog)]
    try:
        while True:
            waiting_since[0] = loop.time()
            message = await proto.receive()
            waiting_since[0] = None
            if message["type"] != "websocket.receive":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
                if data is None:
                    break
            if len(data) > max_size:
                break
            try:
                await socket.receive(packet.Packet(encoded_packet=data))
            except engineio_compat.UnknownPacketError:
                pass
            except engineio_compat.SocketIsClosedError:
                break
            except Exception:
                log.exception("engine.io receive error")
    finally:
        handle[0].cancel()
    await socket.queue.put(None)  # the writer ends after what is queued before this
    await writer
    await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def write_loop(socket: Any, proto: Any) -> None:
    """Write what ``socket`` queues, a batch per wake-up in one write, until ``None``."""
    queue = socket.queue
    try:
        while True:
            pkt = await queue.get()
            queue.task_done()
            if pkt is None:
                break
            await proto.wait_writable()  # the rest stays queued (and counted) meanwhile
            frames: list[str | bytes] = [pkt.encode()]
            end = False
            while not queue.empty():
                pkt = queue.get_nowait()
                queue.task_done()
                if pkt is None:
                    end = True
                    break
                frames.append(pkt.encode())
            if frames and not proto.write_frames(frames):
                break
            if end:
                break
    finally:
        with contextlib.suppress(Exception):
            await proto.send({"type": "websocket.close"})


def install(eio: Any) -> None:
    """Serve ``eio``'s websockets through :class:`FastWebSocket` (this server only), and
    schedule every socket's PINGs with a timer instead of a task (:func:`schedule_ping`).

    Safe under any ASGI server: a connection whose protocol is not
    :func:`happy_socket.websocket.websocket_protocol`'s, and every upgrade from polling,
    keeps engine.io's own loop.
    """
    engineio_compat.install_websocket_driver(eio, FastWebSocket)

    def timed_pings(connected: engineio_compat.MessageHandler) -> engineio_compat.MessageHandler:
        async def on_connect(eio_sid: str, environ: Any) -> Any:
            socket = eio.sockets.get(eio_sid)
            if socket is not None:  # engine.io schedules its first PING after this handler
                engineio_compat.set_ping_schedule(socket, schedule_ping)
            return await connected(eio_sid, environ)

        return on_connect

    engineio_compat.wrap_connect_handler(eio, timed_pings)


def schedule_ping(socket: Any) -> None:
    """engine.io's ``AsyncSocket.schedule_ping`` with a timer instead of a task.

    engine.io starts a task per socket and ping cycle (``_send_ping``: sleep the ping
    interval, then send a PING). The timer does the same without a task, a coroutine and a
    sleep future per socket; the PING is queued as ``AsyncSocket.send`` queues it (the
    ping-timeout check ``send`` makes first cannot fail right after ``last_ping`` is set).
    """
    if socket.last_ping:  # only after the previous cycle completed (its PONG arrived)
        socket.last_ping = None
        asyncio.get_running_loop().call_later(socket.server.ping_interval, _send_ping, socket)


def _send_ping(socket: Any) -> None:
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(packet.Packet(packet.PING))
