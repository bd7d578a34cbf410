"""uvicorn internals happy-socket relies on (tests/hostile/test_slow_readers.py and
tests/hostile/test_protocol_corners.py fail when they change).

- ``uvicorn.protocols.http.h11_impl.H11Protocol``: its ``connection_made`` /
  ``connection_lost`` / ``handle_events`` and the ``cycle`` attribute (set when a request's
  headers are complete; a websocket upgrade instead hands the transport to another protocol),
  to close a connection that does not finish its request headers in time
  (:func:`http_protocol`). uvicorn's own keep-alive timer only starts after a first
  response, so a connection that never sends a whole request would otherwise stay open.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("happy_socket.http")


def http_protocol(header_timeout_s: float | None = 10.0) -> Any:
    """The HTTP protocol class for ``uvicorn.Config(http=...)`` (h11 with a header deadline)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if header_timeout_s is None:
        return H11Protocol
    deadline: float = header_timeout_s

    class DeadlineH11Protocol(H11Protocol):  # type: ignore[misc]
        """h11 that closes a connection whose first request headers take too long."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_deadline: asyncio.TimerHandle | None = self.loop.call_later(
                deadline, self._headers_too_slow
            )

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
