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
from typing import Any

from .compat.asyncio import set_read_size
from .compat.uvicorn import sansio_protocol
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
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.exceptions import InvalidState

    class LeanWebSocketsProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """websockets-sansio with a lean receive queue and ``writable`` event."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = LeanQueue()  # type: ignore[assignment]
            self.writable = LeanEvent()  # type: ignore[assignment]
            self.writable.set()

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

        async def send(self, message: Any) -> None:
            await self.wait_writable()
            await super().send(message)

        async def accept_with(self, frames: list[str | bytes]) -> bool:
            """Accept the websocket (ASGI ``websocket.accept``) and send ``frames`` in the
            same ``transport.write`` as the 101 response; False if it could not be accepted."""
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
