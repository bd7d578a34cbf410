"""From socket.io to handlers: handshake, rooms, ordering, and acks that are always answered."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import socketio

from .backpressure import DEFAULT_MAX_PENDING, Backpressure
from .compat import engineio as engineio_compat
from .compat import socketio as socketio_compat
from .context import Connection, Context, OrderSlot
from .errors import HandlerError, InternalError, InvalidParams, Unauthorized
from .handshake import connection_for
from .packets import trim_environ
from .registry import Handler
from .routing import rooms_of
from .sendqueue import SendQueue
from .validation import refused_input

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.dispatch")

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


class Dispatcher(Backpressure):
    """Owns the live connections of this process and runs handlers for their events (and,
    through :class:`~happy_socket.backpressure.Backpressure`, how fast each is read)."""

    def __init__(self, app: App, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        super().__init__(app, max_pending=max_pending)
        self.connections: dict[str, Connection] = {}
        self._per_user: dict[str, int] = {}  # accepted sockets of each user in this process
        self._closing: set[asyncio.Task[Any]] = set()
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
        socketio_compat.watch_event_tasks(sio, self._hold_for)
        engineio_compat.wrap_connect_handler(sio.eio, self._handshake_deadline)

    def _handshake_deadline(
        self, connected: engineio_compat.MessageHandler
    ) -> engineio_compat.MessageHandler:
        """Close an engine.io session that has not joined Socket.IO within the deadline."""

        async def on_eio_connect(eio_sid: str, environ: Any) -> Any:
            result = await connected(eio_sid, environ)
            if result is not False:
                loop = asyncio.get_running_loop()
                loop.call_later(self._app.settings.handshake_timeout_s, self._expire, eio_sid)
            return result

        return on_eio_connect

    def _expire(self, eio_sid: str) -> None:
        if self._joined(eio_sid) or eio_sid not in self._app.sio.eio.sockets:
            return  # joined Socket.IO, or already gone
        log.info("closing eio sid %s: no Socket.IO handshake within the deadline", eio_sid)
        self._app.metrics.handshake_refusals.labels("handshake timeout").inc()
        task = asyncio.get_running_loop().create_task(self._app.sio.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- handshake -----------------------------------------------------------

    async def authenticate(self, sid: str, auth: Any) -> Connection:
        """Turn a handshake ``auth`` into a Connection or refuse with the exact message."""
        return await connection_for(self._app, sid, auth, lambda user: self._per_user.get(user, 0))

    async def on_connect(
        self, sid: str, environ: Any = None, auth: Any = None, *extra: Any
    ) -> dict[str, Any] | None:
        """python-socketio's connect handler: events of the socket wait until it returns.

        A client can also *send* an event named ``connect`` (``42["connect",{},{...}]``);
        python-socketio routes it here too. Such a frame comes from an accepted socket and is
        answered ``Unknown event``: it never reaches the handshake.
        """
        if sid in self.connections or not isinstance(environ, dict):
            return self._reserved_from_client("connect", sid)
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
            log.debug(
                "connect user=%s sid=%s type=%s client=%s",
                conn.user_id,
                sid,
                conn.client_type.value,
                conn.happy_client,
            )
            await self._app.run_hook("on_connect", ctx=self.context(conn, "core", "connect"))
            trim_environ(environ)
            return None
        except Exception:  # never leave the client hanging without connect or connect_error
            log.exception("accepting sid %s failed", sid)
            self._forget_connection(sid)
            raise socketio.exceptions.ConnectionRefusedError("Internal error") from None

    async def on_disconnect(self, sid: str, reason: Any = None, *extra: Any) -> Any:
        """python-socketio's disconnect handler (a client's event named ``disconnect`` —
        the socket is still connected then — is answered ``Unknown event`` and changes nothing)."""
        if self._app.sio.manager.is_connected(sid, "/"):
            return self._reserved_from_client("disconnect", sid)
        conn = self._forget_connection(sid)
        if conn is None:
            return
        self._app.metrics.connections.labels(conn.client_type.value).dec()
        log.debug("disconnect user=%s sid=%s reason=%s", conn.user_id, sid, reason)
        ctx = self.context(conn, "core", "disconnect")
        await self._app.run_hook("on_disconnect", ctx=ctx, reason=str(reason))

    def accept(self, conn: Connection, eio_sid: str | None = None) -> None:
        """Count ``conn`` as a live socket of this process (in-process tests call it directly)."""
        self.connections[conn.sid] = conn
        self._per_user[conn.user_id] = self._per_user.get(conn.user_id, 0) + 1
        self._track(conn.sid, eio_sid, conn.user_id)
        queue = engineio_compat.queue_of(self._app.sio.eio, eio_sid) if eio_sid else None
        if isinstance(queue, SendQueue):  # its bytes count in the account's and process's too
            self._app.queue_budgets.join(queue, conn.user_id)
            self._work[conn.sid].queue = queue

    def _forget_connection(self, sid: str) -> Connection | None:
        conn = self.connections.pop(sid, None)
        work = self._work.get(sid)
        if conn is not None and work is not None and work.queue is not None:
            self._app.queue_budgets.leave(work.queue, conn.user_id)
        if conn is not None:
            left = self._per_user.get(conn.user_id, 1) - 1
            if left > 0:
                self._per_user[conn.user_id] = left
            else:
                self._per_user.pop(conn.user_id, None)
        self._forget_work(sid)
        return conn

    def context(self, conn: Connection, plugin: str, event: str) -> Context:
        """The Context a handler or hook receives for ``conn``."""
        return Context(app=self._app, connection=conn, plugin=plugin, event=event)

    # -- events --------------------------------------------------------------

    async def on_unknown_event(self, event: Any, sid: Any = None, *args: Any) -> dict[str, Any]:
        """An event no plugin serves: answered ``Unknown event`` when the client asks for an ack.

        python-socketio calls the catch-all as ``(event, sid, *args)``, but an event *named*
        ``*`` as ``(sid, *args)``; either way the answer is the same.
        """
        log.debug("unknown event %r from sid %s", event, sid)
        self._app.metrics.events.labels("(unknown)", "rejected").inc()
        return dict(UNKNOWN_EVENT_ACK)

    def _reserved_from_client(self, event: str, sid: str) -> dict[str, Any]:
        log.info("refused a client event named %r from sid %s", event, sid)
        self._app.metrics.events.labels("(reserved)", "rejected").inc()
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
            if refused_input(data) is not None:
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
