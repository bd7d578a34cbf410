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

        async def send(self, message: Any) -> None:
            if write_stall_s is not None and not self.writable.is_set():
                try:
                    await asyncio.wait_for(self.writable.wait(), write_stall_s)
                except TimeoutError:
                    log.info("websocket peer took no data for %.0f s: aborting", write_stall_s)
                    self.transport.abort()  # connection_lost follows: the send below fails
                    await asyncio.sleep(0)
            await super().send(message)

    return LeanWebSocketsProtocol
