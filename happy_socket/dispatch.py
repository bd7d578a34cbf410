"""From socket.io to handlers: handshake, rooms, ordering, and acks that are always answered."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import socketio

from .context import ClientType, Connection, Context, OrderSlot
from .errors import HandlerError, InternalError, InvalidParams, Unauthorized
from .registry import Handler
from .routing import rooms_of

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.dispatch")

MISSING_TOKEN = "Missing authentication token"
MISSING_SESSION = "Session ID required for session-scoped clients"
MISSING_MACHINE = "Machine ID required for machine-scoped clients"
INVALID_TOKEN = "Invalid authentication token"
AUTH_FAILED = "Internal error"  # an authenticate hook raised: the token could not be checked

UNKNOWN_EVENT = "Unknown event"
# No plugin serves the event, so its envelope is unknown: this ack reads as a failure in all
# three (``result``, ``ok``, ``success``) and names the reason in both error fields.
UNKNOWN_EVENT_ACK: dict[str, Any] = {
    "result": "error",
    "ok": False,
    "success": False,
    "error": UNKNOWN_EVENT,
    "message": UNKNOWN_EVENT,
}

DEFAULT_MAX_PENDING = 1000  # ordered events started or waiting, per socket
DEFAULT_MAX_CONCURRENT = 1000  # other events running at once, per socket
MAX_DEPTH = 32  # protocol payloads nest 3 levels; deeper input is refused before any handler


def too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``data`` nests lists/objects deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth >= limit:
            return True
        stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


class TooManyPending(HandlerError):
    """The socket has too many ordered events waiting."""

    default_message = "Too many pending events"


class _Lane:
    """The ordered events of one socket: a chain of slots."""

    __slots__ = ("pending", "tail")

    def __init__(self) -> None:
        self.tail: OrderSlot | None = None
        self.pending = 0


def _text(value: Any, limit: int = 512) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= limit else None


#: Request headers python-socketio's environ keeps after the handshake (``sio.get_environ``).
KEPT_HEADERS = frozenset(
    {"HTTP_HOST", "HTTP_ORIGIN", "HTTP_USER_AGENT", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"}
)


def trim_environ(environ: dict[str, Any]) -> None:
    """Drop what an accepted socket's environ no longer needs (~4 KB per connection).

    The environ lives as long as the socket. engine.io builds a class per request for its
    ``wsgi.input`` and copies every request header; after the handshake only the
    non-header keys and :data:`KEPT_HEADERS` stay.
    """
    environ.pop("wsgi.input", None)
    for key in [k for k in environ if k.startswith("HTTP_") and k not in KEPT_HEADERS]:
        del environ[key]


class Dispatcher:
    """Owns the live connections of this process and runs handlers for their events."""

    def __init__(self, app: App, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._app = app
        self.connections: dict[str, Connection] = {}
        self._lanes: dict[str, _Lane] = {}
        self._running: dict[str, int] = {}  # sid -> events that are not ordered, running
        self.max_pending = max_pending
        self.max_concurrent = DEFAULT_MAX_CONCURRENT
        self.in_flight = 0  # handlers running now (all sockets)
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, sio: socketio.AsyncServer) -> None:
        """Register connect/disconnect and every handler of the registry on ``sio``."""
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        for handler in self._app.registry:
            sio.on(handler.event, self._bind(handler))
        sio.on("*", self.on_unknown_event)

    # -- handshake -----------------------------------------------------------

    async def authenticate(self, sid: str, auth: Any) -> Connection:
        """Turn a handshake ``auth`` into a Connection or refuse with the exact message."""
        auth = auth if isinstance(auth, dict) else {}
        token = auth.get("token")
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError(MISSING_TOKEN)
        client_type = ClientType.parse(auth.get("clientType"))
        session_id = _text(auth.get("sessionId"))
        machine_id = _text(auth.get("machineId"))
        if client_type is ClientType.SESSION and session_id is None:
            raise socketio.exceptions.ConnectionRefusedError(MISSING_SESSION)
        if client_type is ClientType.MACHINE and machine_id is None:
            raise socketio.exceptions.ConnectionRefusedError(MISSING_MACHINE)
        try:
            user_id = await self._app.authenticate(token, auth)
        except Exception:
            # the token may be fine (the database is down, say): don't tell the client it is
            # invalid — a client that believes that drops its credentials
            log.exception("authenticate hook failed for sid %s", sid)
            raise socketio.exceptions.ConnectionRefusedError(AUTH_FAILED) from None
        if user_id is None:
            raise socketio.exceptions.ConnectionRefusedError(INVALID_TOKEN)
        return Connection(
            sid=sid,
            user_id=user_id,
            client_type=client_type,
            session_id=session_id if client_type is ClientType.SESSION else None,
            machine_id=machine_id if client_type is ClientType.MACHINE else None,
            happy_client=_text(auth.get("happyClient")),
            app_state=_text(auth.get("appState"), 64),
            auth=auth,
        )

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """python-socketio's connect handler: events of the socket wait until it returns."""
        try:
            conn = await self.authenticate(sid, auth)
        except socketio.exceptions.ConnectionRefusedError as refused:
            reason = refused.error_args.get("message", "?")
            self._app.metrics.handshake_refusals.labels(reason).inc()
            raise
        try:
            for room in rooms_of(conn):
                await self._app.sio.enter_room(sid, room)
            self.connections[sid] = conn
            self._app.metrics.connections.labels(conn.client_type.value).inc()
            log.info(
                "connect user=%s sid=%s type=%s client=%s",
                conn.user_id,
                sid,
                conn.client_type.value,
                conn.happy_client,
            )
            await self._app.run_hook("on_connect", ctx=self.context(conn, "core", "connect"))
            trim_environ(environ)
        except Exception:  # never leave the client hanging without connect or connect_error
            log.exception("accepting sid %s failed", sid)
            self.connections.pop(sid, None)
            raise socketio.exceptions.ConnectionRefusedError("Internal error") from None

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """python-socketio's disconnect handler."""
        conn = self.connections.pop(sid, None)
        self._lanes.pop(sid, None)
        if conn is None:
            return
        self._app.metrics.connections.labels(conn.client_type.value).dec()
        log.info("disconnect user=%s sid=%s reason=%s", conn.user_id, sid, reason)
        ctx = self.context(conn, "core", "disconnect")
        await self._app.run_hook("on_disconnect", ctx=ctx, reason=str(reason))

    def context(self, conn: Connection, plugin: str, event: str) -> Context:
        """The Context a handler or hook receives for ``conn``."""
        return Context(app=self._app, connection=conn, plugin=plugin, event=event)

    # -- events --------------------------------------------------------------

    async def on_unknown_event(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        """An event no plugin serves: answered ``Unknown event`` when the client asks for an ack."""
        log.debug("unknown event %r from sid %s", event, sid)
        self._app.metrics.events.labels("(unknown)", "rejected").inc()
        return dict(UNKNOWN_EVENT_ACK)

    def _bind(self, handler: Handler) -> Any:
        if handler.ordered:

            async def on_ordered_event(sid: str, *args: Any) -> Any:
                return await self.run_ordered(sid, handler, args[0] if args else None)

            return on_ordered_event

        async def on_event(sid: str, *args: Any) -> Any:
            return await self.run_concurrent(sid, handler, args[0] if args else None)

        return on_event

    async def run_concurrent(self, sid: str, handler: Handler, data: Any) -> Any:
        """Run an event that is not ordered, unless the socket already has too many running."""
        running = self._running.get(sid, 0)
        if running >= self.max_concurrent:
            self._app.metrics.event_done(handler.event, "rejected", 0.0)
            return TooManyPending().render(handler.envelope)
        self._running[sid] = running + 1
        try:
            return await self.run(sid, handler, data)
        finally:
            left = self._running.get(sid, 1) - 1
            if left > 0:
                self._running[sid] = left
            else:
                self._running.pop(sid, None)

    async def run_ordered(self, sid: str, handler: Handler, data: Any) -> Any:
        """Run in arrival order: after the socket's previous ordered event opened its gate
        (it finished, or its write is queued — see ``Context.write``), and answer only after
        that event finished."""
        lane = self._lanes.get(sid)
        if lane is None:
            lane = self._lanes[sid] = _Lane()
        if lane.pending >= self.max_pending:
            self._app.metrics.event_done(handler.event, "rejected", 0.0)
            return TooManyPending().render(handler.envelope)
        previous = lane.tail
        slot = OrderSlot(previous)
        lane.tail = slot
        lane.pending += 1
        try:
            if previous is not None:
                await previous.gate
            result = await self.run(sid, handler, data, slot)
            await slot.after_previous()
            return result
        finally:
            slot.finish()
            lane.pending -= 1
            if lane.tail is slot:
                lane.tail = None

    async def run(
        self, sid: str, handler: Handler, data: Any, order: OrderSlot | None = None
    ) -> Any:
        """Call the handler and turn its outcome into the ack (never raises)."""
        started = time.perf_counter()
        outcome = "ok"
        self.in_flight += 1
        self._idle.clear()
        try:
            conn = self.connections.get(sid)
            if conn is None:
                outcome = "rejected"
                return Unauthorized().render(handler.envelope)
            if too_deep(data):
                outcome = "rejected"
                return InvalidParams().render(handler.envelope)
            try:
                ctx = Context(
                    app=self._app,
                    connection=conn,
                    plugin=handler.plugin,
                    event=handler.event,
                    order=order,
                )
                return await handler.fn(ctx, data)
            except HandlerError as exc:
                outcome = "error"
                return exc.render(handler.envelope)
            except Exception:
                outcome = "internal_error"
                log.exception(
                    "event %r failed: plugin=%s user=%s sid=%s",
                    handler.event,
                    handler.plugin,
                    conn.user_id,
                    sid,
                    extra={
                        "event": handler.event,
                        "user": conn.user_id,
                        "sid": sid,
                        "plugin": handler.plugin,
                    },
                )
                return InternalError().render(handler.envelope)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            self._app.metrics.event_done(handler.event, outcome, time.perf_counter() - started)

    async def drain(self, timeout: float) -> bool:
        """Wait until no handler runs (at most ``timeout`` seconds); False if some still do."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
