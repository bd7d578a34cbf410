"""Who is on a socket (Connection) and what a handler receives (Context)."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

if TYPE_CHECKING:
    from .app import App
    from .routing import RecipientFilter, Router
    from .settings import Settings
    from .storage import Database, Unit

T = TypeVar("T")
S = TypeVar("S")


def now_ms() -> int:
    """Unix time in milliseconds: the protocol's clock."""
    return int(time.time() * 1000)


Clock = Callable[[], int]


class ClientType(str, enum.Enum):
    """The ``auth.clientType`` of a socket (docs/protocol.md, "Handshake"); unknown values are USER."""

    USER = "user-scoped"
    SESSION = "session-scoped"
    MACHINE = "machine-scoped"

    @classmethod
    def parse(cls, value: Any) -> ClientType:
        """``value`` as a ClientType, defaulting to USER."""
        for member in cls:
            if value == member.value:
                return member
        return cls.USER


@attrs.frozen(kw_only=True)
class Connection:
    """An authenticated socket: fixed for its whole life."""

    sid: str
    user_id: str
    client_type: ClientType = ClientType.USER
    session_id: str | None = None
    machine_id: str | None = None
    happy_client: str | None = None
    app_state: str | None = None
    auth: dict[str, Any] = attrs.field(factory=dict, repr=False)


class OrderSlot:
    """One ordered event's place in its socket's lane (see :meth:`Context.write`).

    ``gate`` lets the socket's next ordered event start; ``done`` is set when this event
    finished (its ack is on its way); ``previous`` is the previous event's ``done``.
    """

    __slots__ = ("done", "gate", "previous")

    def __init__(self, previous: OrderSlot | None) -> None:
        loop = asyncio.get_running_loop()
        self.gate: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.previous: asyncio.Future[None] | None = None if previous is None else previous.done

    def open_gate(self) -> None:
        """Let the next ordered event of the socket start."""
        if not self.gate.done():
            self.gate.set_result(None)

    async def after_previous(self) -> None:
        """Wait until the previous ordered event of the socket finished."""
        if self.previous is not None and not self.previous.done():
            await self.previous

    def finish(self) -> None:
        """This event finished: open the gate (if still closed) and mark it done."""
        self.open_gate()
        if not self.done.done():
            self.done.set_result(None)


@attrs.frozen(kw_only=True)
class Context:
    """What a handler receives: the connection it serves and the app's services.

    Handlers never touch python-socketio: they emit through :meth:`emit_update`,
    :meth:`emit_ephemeral` and :meth:`reply`, which are bound to this user.
    """

    app: App
    connection: Connection
    plugin: str = "?"
    event: str = "?"
    order: OrderSlot | None = attrs.field(default=None, repr=False)

    @property
    def user_id(self) -> str:
        """The authenticated user."""
        return self.connection.user_id

    @property
    def sid(self) -> str:
        """The socket id of the sender."""
        return self.connection.sid

    @property
    def db(self) -> Database:
        """The shared database."""
        return self.app.db

    @property
    def router(self) -> Router:
        """The router that addresses emits to rooms."""
        return self.app.router

    @property
    def settings(self) -> Settings:
        """The server settings."""
        return self.app.settings

    @property
    def clock(self) -> Clock:
        """Milliseconds now (injectable through the app for tests)."""
        return self.app.clock

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that tags lines with event, user and sid."""
        return logging.LoggerAdapter(
            logging.getLogger(f"happy_socket.{self.plugin}"),
            {"event": self.event, "user": self.user_id, "sid": self.sid},
        )

    @overload
    def service(self, key: type[S]) -> S: ...

    @overload
    def service(self, key: str) -> Any: ...

    def service(self, key: type[S] | str) -> Any:
        """Another plugin's public service, by class (type-checked) or name (see ``App.service``)."""
        return self.app.services.find(key)

    async def write(self, unit: Unit[T]) -> T:
        """Run ``unit`` atomically like ``ctx.db.write`` and return its committed result.

        In an ``ordered`` event on a database that runs writes in queue order (the SQLite
        writer), the socket's next ordered event may start as soon as this unit is queued,
        so one socket's writes share group commits; this call still returns only after the
        commit *and* after the previous ordered event finished, so writes, emits and acks
        keep arrival order. Elsewhere it is exactly ``ctx.db.write(unit)``.
        """
        order = self.order
        if order is None or not self.db.writes_in_order:
            return await self.db.write(unit)
        committed = self.db.submit(unit)
        order.open_gate()
        try:
            return await committed
        finally:
            await order.after_previous()

    async def emit_update(
        self, body: dict[str, Any], to: RecipientFilter, *, skip_sender: bool = False
    ) -> dict[str, Any]:
        """Allocate this user's next seq and emit ``update`` with ``body`` to ``to``."""
        return await self.router.emit_update(
            self.user_id, body, to, skip_sid=self.sid if skip_sender else None
        )

    async def emit_ephemeral(
        self, payload: dict[str, Any], to: RecipientFilter, *, skip_sender: bool = False
    ) -> None:
        """Emit ``ephemeral`` with ``payload`` to ``to`` (no seq, nothing stored)."""
        await self.router.emit_ephemeral(
            self.user_id, payload, to, skip_sid=self.sid if skip_sender else None
        )

    async def reply(self, event: str, data: Any) -> None:
        """Emit ``event`` to the sending socket only."""
        await self.router.emit_to_sid(self.sid, event, data)
