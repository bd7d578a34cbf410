"""engine.io's websocket transport without a task, a ``wait_for`` and a queue hop per frame.

engine.io's own websocket loop (``AsyncSocket._websocket_handler``) starts a task and a
``wait_for`` for every frame it reads, and its writer wakes a ``wait_for`` task per batch and
sends each packet through the ASGI ``send`` call (one ``transport.write`` per frame).
:class:`FastWebSocket` runs the same protocol with less per frame when the ASGI server is
happy-socket's uvicorn protocol (:func:`happy_socket.websocket.websocket_protocol`):

- the reader awaits the protocol's receive queue directly (no task, no ``wait_for``; frames
  already parsed are taken without suspending); a timer per socket enforces engine.io's
  read timeout (ping interval + ping timeout) instead of a ``wait_for`` per frame;
- the writer (:class:`Writer`) has no task of its own: the send queue (a
  :class:`~happy_socket.lean.LeanQueue`) calls it on every put, and once per loop turn it
  writes everything queued with one ``transport.write``; while the transport takes no data it
  waits in a task (backpressure and the write-stall abort stay the protocol's), and what is
  queued meanwhile stays queued and counted; the 101 response and engine.io's OPEN packet go
  out in one write too;
- PINGs come from a timer per socket instead of a task per socket and ping cycle;
- once accepted, the loop runs in a task of its own (the protocol's ``detach``): the ASGI
  call returns, and the coroutines of uvicorn, the middleware, engine.io and python-socketio
  that it held for the socket's whole life are freed.

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
        accepted = await accept(socket, proto)
        detach = getattr(proto, "detach", None)
        if accepted and detach is not None and detach(run_detached, socket, proto):
            return ""  # the loop runs on; the ASGI call returns and frees its coroutines
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
    queue = socket.queue
    if callable(getattr(queue, "watch", None)) and callable(getattr(proto, "is_writable", None)):
        writer: Writer | asyncio.Task[None] = Writer(queue, proto, loop)
    else:  # a send queue that is not a LeanQueue: a writer task per socket
        writer = loop.create_task(write_loop(socket, proto))
    max_size = server.max_http_buffer_size
    timeout = ReadTimeout(loop, server.ping_interval + server.ping_timeout, proto)
    try:
        while True:
            timeout.since = loop.time()
            message = await proto.receive()
            timeout.since = None
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
            message = data = None  # not kept while the next read waits (an idle socket)
    finally:
        timeout.handle.cancel()
    await socket.queue.put(None)  # the writer ends after what is queued before this
    await (writer.join() if isinstance(writer, Writer) else writer)
    await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


class ReadTimeout:
    """engine.io's read timeout (ping interval + ping timeout) for one socket: a timer that
    looks every ``limit`` seconds whether the reader has waited that long (then aborts the
    connection: the reader gets ``websocket.disconnect``) instead of a ``wait_for`` per frame."""

    __slots__ = ("handle", "limit", "loop", "proto", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float, proto: Any) -> None:
        self.loop = loop
        self.limit = limit
        self.proto = proto
        self.since: float | None = None  # when the reader started waiting (None: busy)
        self.handle = loop.call_later(limit, self.check)

    def check(self) -> None:
        since = self.since
        if since is not None and self.loop.time() - since >= self.limit:
            self.proto.transport.abort()
        else:
            self.handle = self.loop.call_later(self.limit, self.check)


async def run_detached(socket: Any, proto: Any) -> None:
    """:func:`run`, outside the ASGI call (the protocol's ``detach``); then what engine.io
    does when its websocket handler returns: a closed socket leaves ``server.sockets``."""
    await run(socket, proto)
    sockets = socket.server.sockets
    if socket.closed and sockets.get(socket.sid) is socket:
        del sockets[socket.sid]


def take_queued(queue: Any, frames: list[str | bytes]) -> bool:
    """Append the encoded packets waiting in ``queue`` to ``frames``; True when the end
    marker (None) was among them (what follows it stays queued)."""
    while not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is None:
            return True
        frames.append(pkt.encode())
    return False


class Writer:
    """Writes what engine.io queues for a socket: everything queued in one event-loop turn
    in one ``transport.write``, with no task while nothing waits (the queue's ``watch``
    schedules :meth:`flush`; an idle socket keeps this object only, instead of a task, its
    coroutine and a getter future: ~1 KB). A task exists only while the transport takes no
    data (the protocol's ``wait_writable``: backpressure and the write-stall abort; what is
    queued meanwhile stays queued and counted) and to send the close frame at the end.
    """

    __slots__ = ("closed", "done", "loop", "proto", "queue", "scheduled", "stalled")

    def __init__(self, queue: Any, proto: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.queue = queue
        self.proto = proto
        self.loop = loop
        self.scheduled = False
        self.stalled: asyncio.Task[None] | None = None  # waiting for the transport
        self.closed: asyncio.Task[None] | None = None  # ended: sending the close frame
        self.done: asyncio.Future[None] | None = None  # join() waits on it
        queue.watch(self.wake)
        if not queue.empty():
            self.wake()

    def wake(self) -> None:
        """Something was queued: flush on the next turn of the loop (once per turn)."""
        if not self.scheduled and self.stalled is None and self.closed is None:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued, up to engine.io's end mark (``None``), in one write."""
        self.scheduled = False
        queue = self.queue
        if self.closed is not None or self.stalled is not None or queue.empty():
            return
        proto = self.proto
        if not proto.is_writable():
            self.stalled = self.loop.create_task(self._when_writable())
            return
        frames: list[str | bytes] = []
        try:
            end = take_queued(queue, frames)
            end = (bool(frames) and not proto.write_frames(frames)) or end
        except Exception:  # the writer task used to end on it: close rather than hang
            log.exception("websocket write error")
            end = True
        if end:
            self.end()

    async def _when_writable(self) -> None:
        try:
            await self.proto.wait_writable()  # aborts a peer that takes nothing for too long
        finally:
            self.stalled = None
        self.flush()

    def end(self) -> None:
        """Stop writing (the end mark, or the connection takes no more) and close."""
        self.queue.watch(None)
        self.closed = self.loop.create_task(self._close())
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.proto.send({"type": "websocket.close"})

    async def join(self) -> None:
        """Wait until the writer has ended and its close frame is sent."""
        if self.closed is None:
            self.done = self.loop.create_future()
            await self.done
        assert self.closed is not None
        await self.closed


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
            end = take_queued(queue, frames)
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
