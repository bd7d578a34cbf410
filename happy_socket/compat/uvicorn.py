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
- ``uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol`` (uvicorn
  0.35+): :mod:`happy_socket.websocket` subclasses it and replaces the ``queue`` and
  ``writable`` its ``__init__`` sets (lighter ones), lowers the read size of the
  ``transport`` in ``connection_made``, and wraps ``send`` (a peer that takes no data for a
  minute is aborted). Its ``write_frames`` encodes frames with the protocol's websockets
  ``conn`` and writes them to the transport itself, unless ``disconnected``,
  ``close_sent``, not ``handshake_complete`` or an ``initial_response`` is pending.
  :func:`sansio_protocol` checks them; without them websockets run on uvicorn's ``"auto"``
  protocol and the log says so.
- The handshake taken over from h11 (:mod:`happy_socket.upgrade`): ``H11Protocol.
  handle_events`` sets ``self.headers`` (names lowercased) and ``self.scope`` before it calls
  ``handle_websocket_upgrade(event)``, which the h11 protocol here overrides; the
  websocket protocol then does what ``WebSocketsSansIOProtocol.handle_connect`` does
  (``scope``, ``handshake_initiated``, the ``websocket.connect`` message, the ``run_asgi``
  task in ``tasks`` with ``on_task_complete``) and, on ``websocket.accept``, what its ``send``
  does (``default_headers``, ``handshake_complete``, ``start_keepalive``).
  :func:`upgrade_takeover_supported` checks them; without them the request takes uvicorn's
  path (websockets parses it again) and the log says so.
- ``Server._captured_signals``: uvicorn 0.29+ re-raises the signals it captured when
  ``capture_signals()`` exits, which kills the process before the app's shutdown hooks run;
  ``happy-socket serve`` clears the list first (:func:`forget_captured_signals`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

log = logging.getLogger("happy_socket.http")

LINGER_S = 2.0  # after answering early, how long the rest of a request body is dropped


def http_protocol(header_timeout_s: float | None = 10.0) -> Any:
    """The HTTP protocol class for ``uvicorn.Config(http=...)`` (h11 with a header deadline)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    deadline = header_timeout_s
    takeover = upgrade_takeover_supported()

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

        def handle_websocket_upgrade(self, event: Any) -> None:
            """Hand the upgrade to the websocket protocol as parsed here (its ``take_upgrade``)
            instead of writing the request out for websockets to parse again; uvicorn's
            path when it declines (see :mod:`happy_socket.upgrade`)."""
            take = getattr(self.ws_protocol_class, "take_upgrade", None) if takeover else None
            protocol = take(self, event) if take is not None else None
            if protocol is None:
                super().handle_websocket_upgrade(event)
                return
            self.connections.discard(self)
            self.transport.set_protocol(protocol)

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


#: what :mod:`happy_socket.websocket` uses of WebSocketsSansIOProtocol: attributes its
#: ``__init__`` / ``connection_made`` set, and the methods it overrides
SANSIO_ATTRIBUTES = {
    "__init__": (
        "self.queue",
        "self.writable",
        "self.transport",
        "self.conn",
        "self.handshake_complete",
        "self.close_sent",
        "self.disconnected",
        "self.initial_response",
    ),
    "connection_made": ("self.transport",),
}
SANSIO_METHODS = ("connection_made", "send", "data_received", "connection_lost")


def sansio_protocol() -> Any:
    """uvicorn's websockets-sansio protocol class, or None (logged) when it is missing or
    lacks what :mod:`happy_socket.websocket` relies on."""
    import uvicorn

    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError as exc:
        _websocket_fallback(f"uvicorn {uvicorn.__version__} has no websockets-sansio ({exc})")
        return None
    missing = [
        f"{n}()" for n in SANSIO_METHODS if not callable(getattr(WebSocketsSansIOProtocol, n, None))
    ]
    for method, attributes in SANSIO_ATTRIBUTES.items():
        try:
            source = inspect.getsource(getattr(WebSocketsSansIOProtocol, method))
        except (AttributeError, OSError, TypeError):
            source = ""
        missing += [
            f"{a} (in {method})"
            for a in attributes
            if f"{a} =" not in source and f"{a}:" not in source
        ]
    if missing:
        _websocket_fallback(
            f"uvicorn {uvicorn.__version__}'s WebSocketsSansIOProtocol lacks {', '.join(missing)}"
        )
        return None
    return WebSocketsSansIOProtocol


#: what the handshake takeover (:mod:`happy_socket.upgrade`) uses: method -> strings its
#: source must contain (``module:Class.method``)
TAKEOVER_SOURCES = {
    "uvicorn.protocols.http.h11_impl:H11Protocol.handle_events": (
        "self.headers = ",
        "self.scope = ",
        "self.handle_websocket_upgrade(event)",
    ),
    "uvicorn.protocols.http.h11_impl:H11Protocol.handle_websocket_upgrade": (
        "self.connections.discard(self)",
        "self.ws_protocol_class(",
        "self.transport.set_protocol(protocol)",
    ),
    "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol.handle_connect": (
        "self.scope",
        "self.handshake_initiated = True",
        '{"type": "websocket.connect"}',
        "self.run_asgi()",
        "self.on_task_complete",
        "self.tasks.add(task)",
    ),
    "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol.send": (
        "self.default_headers",
        "self.handshake_complete = True",
        "self.start_keepalive()",
        "self.response.headers",
    ),
}


def upgrade_takeover_supported() -> bool:
    """True when uvicorn has what the handshake takeover relies on (TAKEOVER_SOURCES);
    else False, logged once: upgrade requests then take uvicorn's path."""
    global _takeover
    if _takeover is None:
        import importlib

        missing = []
        for where, needles in TAKEOVER_SOURCES.items():
            module, _, qualname = where.partition(":")
            owner, _, method = qualname.partition(".")
            try:
                source = inspect.getsource(
                    getattr(getattr(importlib.import_module(module), owner), method)
                )
            except (AttributeError, ImportError, OSError, TypeError):
                source = ""
            missing += [f"{n!r} (in {qualname})" for n in needles if n not in source]
        _takeover = not missing
        if missing:
            import uvicorn

            logging.getLogger("happy_socket.websocket").warning(
                "uvicorn %s lacks %s: websocket handshakes take uvicorn's path (parsed twice)",
                uvicorn.__version__,
                ", ".join(missing),
            )
    return _takeover


_takeover: bool | None = None

#: ``WebSocketsSansIOProtocol.run_asgi`` as :mod:`happy_socket.websocket` mirrors it (its
#: ``detach``: the connection stays open when the app returns)
RUN_ASGI_SOURCE = (
    "result = await self.app(self.scope, self.receive, self.send)",
    "except ClientDisconnected:",
    "except BaseException:",
    'self.logger.exception("Exception in ASGI application\\n")',
    "self.send_500_response()",
    "if not self.handshake_complete:",
    "elif result is not None:",
    "if self.close_timer is None:",
    "self.transport.close()",
)


def detach_supported() -> bool:
    """True when ``WebSocketsSansIOProtocol.run_asgi`` is the one happy_socket.websocket
    mirrors (RUN_ASGI_SOURCE) and ``on_task_complete`` exists; else False, logged: the
    websocket loop then runs inside the ASGI call, as before."""
    sansio = sansio_protocol()
    try:
        source = inspect.getsource(sansio.run_asgi) if sansio is not None else ""
    except (AttributeError, OSError, TypeError):
        source = ""
    missing = [n for n in RUN_ASGI_SOURCE if n not in source]
    if sansio is not None and not callable(getattr(sansio, "on_task_complete", None)):
        missing.append("on_task_complete()")
    if missing:
        logging.getLogger("happy_socket.websocket").warning(
            "uvicorn's WebSocketsSansIOProtocol.run_asgi lacks %s: websocket loops run inside "
            "the ASGI call (~4 KB more per open socket)",
            ", ".join(missing),
        )
    return not missing


def _websocket_fallback(why: str) -> None:
    logging.getLogger("happy_socket.websocket").warning(
        "%s: websockets use uvicorn's 'auto' protocol (heavier per connection, no read-size "
        "limit, no write-stall timeout)",
        why,
    )


def forget_captured_signals(server: Any) -> None:
    """Keep ``server.capture_signals()`` from re-raising the signals it caught (SIGTERM on
    shutdown), so the app's shutdown hooks run and the process exits with 0."""
    captured = getattr(server, "_captured_signals", None)
    if isinstance(captured, list):
        captured.clear()
    elif not _warned_signals:
        _warn_signals()


def _warn_signals() -> None:
    global _warned_signals
    _warned_signals = True
    import uvicorn

    log.warning(
        "uvicorn %s has no Server._captured_signals: if it re-raises SIGTERM after serving, "
        "the process exits by the signal before the shutdown hooks run",
        uvicorn.__version__,
    )


_warned_signals = False
