"""uvicorn internals happy-socket relies on (tests/hostile/test_slow_readers.py and
tests/hostile/test_protocol_corners.py fail when they change).

- ``uvicorn.protocols.http.h11_impl.H11Protocol``: its ``connection_made`` /
  ``connection_lost`` / ``handle_events`` and the ``cycle`` attribute (set when a request's
  headers are complete; a websocket upgrade instead hands the transport to another protocol),
  to close a connection that does not finish its request headers in time
  (:func:`http_protocol`). uvicorn's own keep-alive timer only starts after a first
  response, so a connection that never sends a whole request would otherwise stay open.
- ``H11Protocol.on_response_complete`` / ``data_received`` and ``conn.their_state`` (h11's
  state machine): a response sent before its request body was read whole (a 413, say) is
  followed by a *lingering close*, as nginx does: uvicorn would otherwise parse and drop the
  rest of the body through h11 (a 250 MB body costs seconds of CPU), or, if told to close at
  once, reset the connection before the client reads the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("happy_socket.http")

LINGER_S = 2.0  # after answering early, how long the rest of a request body is dropped


def http_protocol(header_timeout_s: float | None = 10.0) -> Any:
    """The HTTP protocol class for ``uvicorn.Config(http=...)`` (h11 with a header deadline)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    deadline = header_timeout_s

    class DeadlineH11Protocol(H11Protocol):  # type: ignore[misc]
        """h11 that closes a connection whose first request headers take too long, and
        drops unparsed the rest of a body it answered early (a lingering close)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._lingering = False
            self._header_deadline: asyncio.TimerHandle | None = None
            if deadline is not None:
                self._header_deadline = self.loop.call_later(deadline, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return  # the rest of a body we answered already: dropped, never parsed
            super().data_received(data)

        def on_response_complete(self) -> None:
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self._linger()
                return
            super().on_response_complete()

        def _linger(self) -> None:
            """Answered before the body was read: end our side, drop theirs, then close."""
            self._lingering = True
            self.server_state.total_requests += 1
            self.flow.resume_reading()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self._close_lingering)

        def _close_lingering(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            # a whole request arrived (a cycle), or it was a websocket upgrade: the transport
            # now belongs to the websocket protocol, whose own timers apply
            upgraded = self.transport.get_protocol() is not self
            if (self.cycle is not None or upgraded) and self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
            super().connection_lost(exc)

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            mine = self.transport.get_protocol() is self
            if self.cycle is None and mine and not self.transport.is_closing():
                log.info(
                    "closing a connection that sent no whole request in %.0f s", header_timeout_s
                )
                self.transport.close()

    return DeadlineH11Protocol
