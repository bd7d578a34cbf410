"""From socket.io to handlers: handshake, rooms, ordering, and acks that are always answered."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import socketio

from .compat import engineio as engineio_compat
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

DEFAULT_MAX_PENDING = 1000  # ordered events started or waiting, per socket, before it is paused
DEFAULT_MAX_CONCURRENT = 1000  # other events running at once, per socket, before it is paused
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


class SocketWork:
    """One socket's work in progress: its ordered lane and its other running events.

    When either is full, ``room`` is a future and the socket's reader waits on it before it
    reads the next packet (backpressure: TCP then slows the sender); it resolves when a
    finishing event makes room.
    """

    __slots__ = ("eio_sid", "pending", "room", "running", "tail")

    def __init__(self, eio_sid: str | None) -> None:
        self.eio_sid = eio_sid
        self.tail: OrderSlot | None = None  # the lane: a chain of slots
        self.pending = 0  # ordered events started or waiting
        self.running = 0  # other events running
        self.room: asyncio.Future[None] | None = None


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
        self._work: dict[str, SocketWork] = {}  # by socket.io sid
        self._work_by_eio: dict[str, SocketWork] = {}  # the same, by engine.io sid
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
        engineio_compat.wrap_message_handler(sio.eio, self._gate)

    # -- backpressure --------------------------------------------------------

    def _gate(self, deliver: engineio_compat.MessageHandler) -> engineio_compat.MessageHandler:
        """Wrap engine.io's per-packet handler: a full socket's next packet waits for room."""

        async def on_message(eio_sid: str, data: Any) -> Any:
            work = self._work_by_eio.get(eio_sid)
            if work is not None and work.room is not None:
                await self._wait_for_room(work)
            result = await deliver(eio_sid, data)
            if work is not None and (
                work.pending * 2 >= self.max_pending or work.running * 2 >= self.max_concurrent
            ):
                # nearly full: let the event just delivered claim its place before the next
                # packet is looked at (a polling POST delivers a batch without yielding)
                await asyncio.sleep(0)
            return result

        return on_message

    async def _wait_for_room(self, work: SocketWork) -> None:
        """Wait until ``work`` has room, keeping the socket alive while its reader is paused."""
        interval = self._app.settings.ping_interval
        started = time.perf_counter()
        while work.room is not None:
            room = work.room
            try:
                await asyncio.wait_for(asyncio.shield(room), interval)
            except TimeoutError:
                if work.eio_sid is None or not await engineio_compat.keep_alive(
                    self._app.sio.eio, work.eio_sid
                ):
                    break
        self._app.metrics.paused_seconds.observe(time.perf_counter() - started)

    def _update_pressure(self, work: SocketWork) -> None:
        """Pause a socket whose lane or concurrency bound is full; resume it when there is room."""
        full = work.pending >= self.max_pending or work.running >= self.max_concurrent
        if full and work.room is None:
            work.room = asyncio.get_running_loop().create_future()
            self._app.metrics.paused_sockets.inc()
        elif not full and work.room is not None:
            self._release(work)

    def _release(self, work: SocketWork) -> None:
        if work.room is not None:
            if not work.room.done():
                work.room.set_result(None)
            work.room = None
            self._app.metrics.paused_sockets.dec()

    def paused(self, sid: str) -> bool:
        """True while the reader of socket ``sid`` waits for room."""
        work = self._work.get(sid)
        return work is not None and work.room is not None

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
            self.accept(conn, self._app.sio.manager.eio_sid_from_sid(sid, "/"))
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
            self._forget_work(sid)
            raise socketio.exceptions.ConnectionRefusedError("Internal error") from None

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """python-socketio's disconnect handler."""
        conn = self.connections.pop(sid, None)
        self._forget_work(sid)
        if conn is None:
            return
        self._app.metrics.connections.labels(conn.client_type.value).dec()
        log.info("disconnect user=%s sid=%s reason=%s", conn.user_id, sid, reason)
        ctx = self.context(conn, "core", "disconnect")
        await self._app.run_hook("on_disconnect", ctx=ctx, reason=str(reason))

    def accept(self, conn: Connection, eio_sid: str | None = None) -> None:
        """Count ``conn`` as a live socket of this process (in-process tests call it directly)."""
        self.connections[conn.sid] = conn
        work = SocketWork(eio_sid)
        self._work[conn.sid] = work
        if eio_sid is not None:
            self._work_by_eio[eio_sid] = work

    def _forget_work(self, sid: str) -> None:
        work = self._work.pop(sid, None)
        if work is not None:
            if work.eio_sid is not None:
                self._work_by_eio.pop(work.eio_sid, None)
            self._release(work)  # a reader still waiting reads on and finds the socket closed

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
        """Run an event that is not ordered; the socket pauses while too many are running."""
        work = self._work.get(sid)
        if work is None:  # not (or no longer) connected: ``run`` answers it
            return await self.run(sid, handler, data)
        work.running += 1
        self._update_pressure(work)
        try:
            return await self.run(sid, handler, data)
        finally:
            work.running -= 1
            self._update_pressure(work)

    async def run_ordered(self, sid: str, handler: Handler, data: Any) -> Any:
        """Run in arrival order: after the socket's previous ordered event opened its gate
        (it finished, or its write is queued — see ``Context.write``), and answer only after
        that event finished. The socket pauses while its lane is full."""
        work = self._work.get(sid)
        if work is None:
            return await self.run(sid, handler, data)
        previous = work.tail
        slot = OrderSlot(previous)
        work.tail = slot
        work.pending += 1
        self._update_pressure(work)
        try:
            if previous is not None:
                await previous.gate
            result = await self.run(sid, handler, data, slot)
            await slot.after_previous()
            return result
        finally:
            slot.finish()
            work.pending -= 1
            if work.tail is slot:
                work.tail = None
            self._update_pressure(work)

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
