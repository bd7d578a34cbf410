"""The uvicorn websocket protocol ``happy-socket serve`` runs: lighter per connection.

uvicorn's websockets-sansio protocol with its receive queue and ``writable`` event replaced by
:class:`~happy_socket.lean.LeanQueue` and :class:`~happy_socket.lean.LeanEvent` (about 4 KB
less per connection), and reads of at most :data:`READ_SLICE` bytes, so one event-loop turn
parses a few hundred small frames at most: asyncio reads 256 KB at a time, which is ten
thousand tiny frames, and parsing them in one callback held the loop for up to 65 ms while
other sockets waited. Embedders
running their own uvicorn can pass :func:`websocket_protocol` as ``uvicorn.Config(ws=...)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from . import upgrade
from .compat import websockets as websockets_compat
from .compat.asyncio import set_read_size
from .compat.uvicorn import detach_supported, sansio_protocol, upgrade_takeover_supported
from .lean import LeanEvent, LeanQueue

log = logging.getLogger("happy_socket.websocket")

READ_SLICE = 16384  # bytes read (and parsed) from one websocket per event-loop turn


def websocket_protocol(write_stall_s: float | None = 60.0) -> Any:
    """The protocol class for ``uvicorn.Config(ws=...)``, or ``"auto"`` (logged) if uvicorn
    lacks what it builds on (:func:`happy_socket.compat.uvicorn.sansio_protocol`).

    ``write_stall_s``: a send that waits this long for the peer to take data (the transport's
    buffer stays full: the client stopped reading) aborts the connection, so a reader that
    never reads cannot hold the connection and its writer forever (None: wait forever).
    """
    if sansio_protocol() is None:  # logged: uvicorn < 0.35, or its internals changed
        return "auto"
    from uvicorn.protocols.utils import (
        ClientDisconnected,
        get_client_addr,
        get_path_with_query_string,
    )
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.exceptions import InvalidState

    takeover = upgrade_takeover_supported() and websockets_compat.open_protocol_supported()
    detachable = detach_supported()

    class LeanWebSocketsProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """websockets-sansio with a lean receive queue and ``writable`` event."""

        #: ``Sec-WebSocket-Accept`` of a handshake taken over from h11 (:meth:`take_upgrade`)
        accept_value: bytes | None = None
        #: the task of the transport loop :meth:`detach` moved out of the ASGI call
        detached: asyncio.Task[None] | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = LeanQueue()  # type: ignore[assignment]
            self.writable = LeanEvent()  # type: ignore[assignment]
            self.writable.set()

        @classmethod
        def take_upgrade(cls, h11: Any, event: Any) -> Any:
            """This protocol for the upgrade request h11 parsed (``event``; h11's ``headers``
            and ``scope``), started without websockets parsing the request again; None (the
            caller takes uvicorn's path) unless :func:`happy_socket.upgrade.accept_key`
            accepts it as websockets would, or with per-message deflate (negotiated by
            websockets)."""
            config = h11.config
            if not takeover or config.ws_per_message_deflate:
                return None
            accept = upgrade.accept_key(event.method, event.target, h11.headers)
            if accept is None:
                return None
            kwargs = {"config": config, "server_state": h11.server_state}
            if hasattr(h11, "app_state"):
                kwargs["app_state"] = h11.app_state
            proto = cls(**kwargs)
            proto.connection_made(h11.transport)
            proto.conn = websockets_compat.open_protocol(config.ws_max_size, proto.conn.logger)
            proto.accept_value = accept
            proto.handshake_initiated = True
            proto.scope = upgrade.websocket_scope(h11.scope, proto.scheme)  # type: ignore[assignment]
            proto.queue.put_nowait({"type": "websocket.connect"})  # as uvicorn's handle_connect
            task = proto.loop.create_task(proto.run_asgi())
            task.add_done_callback(proto.on_task_complete)
            proto.tasks.add(task)
            return proto

        def _write_accept(self, message: Any, frames: list[str | bytes]) -> None:
            """The 101 response to a taken-over handshake, as uvicorn's ``send`` writes it
            for ``websocket.accept``, and ``frames`` after it in the same write."""
            if self.logger.isEnabledFor(logging.INFO):
                self.logger.info(
                    '%s - "WebSocket %s" [accepted]',
                    get_client_addr(self.scope),
                    get_path_with_query_string(self.scope),
                )
            if self.transport.is_closing():
                return
            assert self.accept_value is not None
            head = upgrade.response_head(
                self.accept_value,
                self.default_headers,
                message.get("headers", ()),
                message.get("subprotocol"),
            )
            self.handshake_complete = True
            self.conn.logger.info("connection open")  # websockets' send_response logs it
            conn = self.conn
            for frame in frames:
                if isinstance(frame, str):
                    conn.send_text(frame.encode())
                else:
                    conn.send_binary(frame)
            self.transport.write(b"".join([head, *conn.data_to_send()]))
            self.start_keepalive()

        def _accepting(self) -> bool:
            return (
                self.accept_value is not None
                and not self.handshake_complete
                and self.initial_response is None
            )

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            set_read_size(transport, READ_SLICE)
            self.backlog = False

        def data_received(self, data: bytes) -> None:
            self.backlog = not self.queue.empty()  # the app has not taken the last read yet
            super().data_received(data)

        def send_receive_event_to_app(self) -> None:
            """Queue a message; stop reading only when the app is a read behind.

            uvicorn pauses the transport's reading after every message and resumes it when
            the app has taken it: two ``epoll_ctl`` calls per frame. Here reading pauses
            when a read (at most :data:`READ_SLICE` bytes) arrives while messages of the
            previous one are still queued, so a socket whose app stops taking messages
            still stops being read (TCP then slows the sender) with at most two reads
            buffered.
            """
            paused = self.read_paused
            self.read_paused = True  # uvicorn's own pause is skipped
            try:
                super().send_receive_event_to_app()
            finally:
                self.read_paused = paused
            if self.backlog and not paused and not self.transport.is_closing():
                self.read_paused = True
                self.transport.pause_reading()

        def is_writable(self) -> bool:
            """True when the transport takes data now (:meth:`wait_writable` would not wait)."""
            return self.writable.is_set()

        async def wait_writable(self) -> None:
            """Wait until the transport takes data; abort after ``write_stall_s``."""
            if write_stall_s is not None and not self.writable.is_set():
                try:
                    await asyncio.wait_for(self.writable.wait(), write_stall_s)
                except TimeoutError:
                    log.info("websocket peer took no data for %.0f s: aborting", write_stall_s)
                    self.transport.abort()  # connection_lost follows: the send below fails
                    await asyncio.sleep(0)
            await self.writable.wait()

        def detach(self, loop: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> bool:
            """Run ``loop(*args)`` (:mod:`happy_socket.transport`'s loop, which owns the
            accepted connection from here) as a task of its own, so that the ASGI call
            returns and its chain of coroutines (uvicorn, middleware, engine.io,
            python-socketio: ~4 KB) is freed for as long as the socket stays open; the
            connection closes when the loop ends, as when the app returns. False (nothing
            done) when uvicorn's ``run_asgi`` is not the one :meth:`run_asgi` mirrors."""
            if not detachable or self.detached is not None:
                return False
            self.detached = task = self.loop.create_task(self._run_detached(loop(*args)))
            task.add_done_callback(self.on_task_complete)
            self.tasks.add(task)  # uvicorn's shutdown waits for it (then cancels it)
            return True

        async def _run_detached(self, loop: Coroutine[Any, Any, None]) -> None:
            try:
                await loop
            except ClientDisconnected:
                pass
            except BaseException:
                self.logger.exception("Exception in ASGI application\n")
            if self.close_timer is None:
                self.transport.close()

        async def run_asgi(self) -> None:
            """uvicorn's ``run_asgi``, except that the connection stays open when the app
            returns after :meth:`detach` (the detached loop closes it)."""
            if not detachable:
                await super().run_asgi()
                return
            try:
                result = await self.app(self.scope, self.receive, self.send)
            except ClientDisconnected:
                pass
            except BaseException:
                self.logger.exception("Exception in ASGI application\n")
                self.send_500_response()
            else:
                if not self.handshake_complete:
                    self.logger.error("ASGI callable returned without completing handshake.")
                    self.send_500_response()
                elif result is not None:
                    self.logger.error(
                        "ASGI callable should return None, but returned '%s'.", result
                    )
            if self.close_timer is None and self.detached is None:
                self.transport.close()

        async def send(self, message: Any) -> None:
            await self.wait_writable()
            if message["type"] == "websocket.accept" and self._accepting():
                if self.disconnected:
                    raise ClientDisconnected()
                self._write_accept(message, [])
                return
            await super().send(message)

        async def accept_with(self, frames: list[str | bytes]) -> bool:
            """Accept the websocket (ASGI ``websocket.accept``) and send ``frames`` in the
            same ``transport.write`` as the 101 response; False if it could not be accepted."""
            if self._accepting():
                await self.wait_writable()
                if self.disconnected:
                    raise ClientDisconnected()
                if self._accepting():
                    self._write_accept({}, frames)
                    return self.handshake_complete and not self.close_sent
            real = self.transport
            cork = _Cork(real)
            self.transport = cork  # type: ignore[assignment]
            try:
                await self.send({"type": "websocket.accept"})
            finally:
                self.transport = real
            sent = self.write_frames(frames, cork.parts) if frames else False
            if not sent and cork.parts:
                real.write(b"".join(cork.parts))
            return self.handshake_complete and not self.close_sent

        def write_frames(
            self, frames: list[str | bytes], before: list[bytes] | None = None
        ) -> bool:
            """Send ``frames`` as websocket messages in one transport write; False when the
            connection no longer takes data (closed, closing, or not accepted yet).

            The caller waits for :meth:`wait_writable` first (backpressure). ``before``: bytes
            to write ahead of the frames, in the same write.
            """
            if self.disconnected or self.close_sent or not self.handshake_complete:
                return False
            if self.initial_response is not None:
                return False
            conn = self.conn
            try:
                for frame in frames:
                    if isinstance(frame, str):
                        conn.send_text(frame.encode())
                    else:
                        conn.send_binary(frame)
            except InvalidState:
                return False
            out = conn.data_to_send()
            self.transport.write(b"".join(before + out if before else out))
            return True

    return LeanWebSocketsProtocol


class _Cork:
    """A transport stand-in that keeps what is written (see ``accept_with``)."""

    __slots__ = ("parts", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
