"""How fast each socket is read: backpressure, fairness and the packets refused unread.

Every packet a socket's reader takes goes through :meth:`Backpressure._gate` first. A socket
whose unfinished work is full (ordered events pending, other events running, bytes of their
packets held: its own or its account's) is paused: its reader waits before the next packet,
so TCP slows the sender and nothing is refused or lost. A reader also lets the other sockets
run every :data:`FAIR_BURST` packets. Packets the protocol never carries (binary, an
oversized CONNECT) are refused here, before python-socketio parses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .compat import engineio as engineio_compat
from .context import OrderSlot
from .handshake import AUTH_TOO_LARGE
from .packets import (
    NAME_NOT_STRING,
    OVERSIZED_CONNECT,
    connect_error_packet,
    packet_problem,
    unnamed_event,
)

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.dispatch")

DEFAULT_MAX_PENDING = 1000  # ordered events started or waiting, per socket, before it is paused
DEFAULT_MAX_CONCURRENT = 1000  # other events running at once, per socket, before it is paused
DEFAULT_MAX_HELD_BYTES = 8 * 1024 * 1024  # received, unfinished events' packets, per socket
DEFAULT_MAX_HELD_BYTES_PER_USER = 32 * 1024 * 1024  # the same over all of a user's sockets
#: packets one socket's reader may handle in a row before it lets the other sockets run: a
#: reader whose frames are already buffered never waits, so a flood would hold the loop
FAIR_BURST = 16


class SocketWork:
    """One socket's work in progress: its ordered lane and its other running events.

    When either is full, ``room`` is a future and the socket's reader waits on it before it
    reads the next packet (backpressure: TCP then slows the sender); it resolves when a
    finishing event makes room.
    """

    __slots__ = ("burst", "eio_sid", "held", "pending", "queue", "room", "running", "tail", "user")

    def __init__(self, eio_sid: str | None, user: str = "") -> None:
        self.eio_sid = eio_sid
        self.user = user
        self.held = 0  # bytes of received packets whose events have not finished
        self.tail: OrderSlot | None = None  # the lane: a chain of slots
        self.pending = 0  # ordered events started or waiting
        self.running = 0  # other events running
        self.room: asyncio.Future[None] | None = None
        self.burst = 0  # packets read since the reader last let other tasks run
        self.queue: Any = None  # its engine.io send queue, when it counts in shared budgets


class Backpressure:
    """The per-socket work table and the gate in front of engine.io's packet handler."""

    def __init__(self, app: App, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._app = app
        self._work: dict[str, SocketWork] = {}  # by socket.io sid
        self._work_by_eio: dict[str, SocketWork] = {}  # the same, by engine.io sid
        self.max_pending = max_pending
        self.max_concurrent = DEFAULT_MAX_CONCURRENT
        self.max_held_bytes = DEFAULT_MAX_HELD_BYTES
        self.max_held_bytes_per_user = DEFAULT_MAX_HELD_BYTES_PER_USER
        self._held_by_user: dict[str, int] = {}
        self._works_of_user: dict[str, set[SocketWork]] = {}
        self._incoming: tuple[SocketWork, int] | None = None  # the packet being delivered

    def _track(self, sid: str, eio_sid: str | None, user: str) -> None:
        work = SocketWork(eio_sid, user)
        self._works_of_user.setdefault(user, set()).add(work)
        self._work[sid] = work
        if eio_sid is not None:
            self._work_by_eio[eio_sid] = work

    def _joined(self, eio_sid: str) -> bool:
        """True once the engine.io session ``eio_sid`` is an accepted Socket.IO socket."""
        return eio_sid in self._work_by_eio

    def _gate(self, deliver: engineio_compat.MessageHandler) -> engineio_compat.MessageHandler:
        """Wrap engine.io's per-packet handler: a full socket's next packet waits for room."""

        async def on_message(eio_sid: str, data: Any) -> Any:
            work = self._work_by_eio.get(eio_sid)
            if work is not None:
                if work.room is not None:
                    await self._wait_for_room(work)
                work.burst += 1
                if work.burst >= FAIR_BURST:  # fairness: other sockets' packets go first
                    work.burst = 0
                    await asyncio.sleep(0)
            problem = packet_problem(data)
            if problem == NAME_NOT_STRING:
                data = unnamed_event(data)  # answered "Unknown event" like any unknown name
            elif problem == OVERSIZED_CONNECT:  # refused as the handshake would, unparsed
                self._app.metrics.handshake_refusals.labels(AUTH_TOO_LARGE).inc()
                await self._app.sio.eio.send(eio_sid, connect_error_packet(data, AUTH_TOO_LARGE))
                return None
            elif problem is not None:
                await self._close_for(eio_sid, problem)
                return None
            if work is not None and data[:1] == "2":  # an event: held until its handler ends
                self._incoming = (work, len(data))
            try:
                result = await deliver(eio_sid, data)
            except Exception as exc:  # a packet python-socketio cannot parse: close, not limp on
                await self._close_for(eio_sid, f"unreadable packet ({type(exc).__name__})")
                return None
            finally:
                self._incoming = None
            if work is not None and (
                work.pending * 2 >= self.max_pending or work.running * 2 >= self.max_concurrent
            ):
                # nearly full: let the event just delivered claim its place before the next
                # packet is looked at (a polling POST delivers a batch without yielding)
                await asyncio.sleep(0)
            return result

        return on_message

    async def _close_for(self, eio_sid: str, problem: str) -> None:
        """Close a socket that sent a packet the protocol never carries; it may reconnect."""
        log.info("closing eio sid %s: %s", eio_sid, problem)
        self._app.metrics.events.labels("(packet)", "rejected").inc()
        await self._app.sio.eio.disconnect(eio_sid)

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

    def _hold_for(self, task: asyncio.Task[Any]) -> None:
        """Count the packet being delivered as held by its event's task until the task ends."""
        if self._incoming is None:
            return
        work, size = self._incoming
        self._incoming = None
        work.held += size
        self._held_by_user[work.user] = self._held_by_user.get(work.user, 0) + size
        task.add_done_callback(lambda _: self._unhold(work, size))
        self._update_pressure(work)

    def _unhold(self, work: SocketWork, size: int) -> None:
        work.held -= size
        before = self._held_by_user.get(work.user, size)
        left = before - size
        if left > 0:
            self._held_by_user[work.user] = left
        else:
            self._held_by_user.pop(work.user, None)
        if before < self.max_held_bytes_per_user:
            self._update_pressure(work)  # the user's budget paused nobody: only this socket
            return
        for other in self._works_of_user.get(work.user, (work,)):
            if other.room is not None or other is work:
                self._update_pressure(other)

    def _update_pressure(self, work: SocketWork) -> None:
        """Pause a socket whose lane, concurrency or held-bytes bound (its own or its user's)
        is full; resume it when there is room."""
        full = (
            work.pending >= self.max_pending
            or work.running >= self.max_concurrent
            or work.held >= self.max_held_bytes
            or self._held_by_user.get(work.user, 0) >= self.max_held_bytes_per_user
        )
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

    def _forget_work(self, sid: str) -> None:
        work = self._work.pop(sid, None)
        if work is not None:
            works = self._works_of_user.get(work.user)
            if works is not None:
                works.discard(work)
                if not works:
                    del self._works_of_user[work.user]
            if work.eio_sid is not None:
                self._work_by_eio.pop(work.eio_sid, None)
            self._release(work)  # a reader still waiting reads on and finds the socket closed
