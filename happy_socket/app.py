"""create_app(): assembles plugins, handlers, tables, routes and the Socket.IO server."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, overload

import socketio
import sqlalchemy as sa
from starlette.applications import Starlette

from . import jsonmod, transport
from .auth import Tokens, resolve_secret
from .compat import engineio as engineio_compat
from .compat import socketio as socketio_compat
from .context import Clock, Connection, now_ms
from .dispatch import Dispatcher
from .embed import EmbeddedASGI
from .errors import ConfigError, reason_of
from .fanout import UserFanoutManager
from .fanout_link import check_redis
from .http import Routes, unmatched
from .metrics import Metrics
from .plugins import CORE_PLUGINS, HookCalls, make_plugin_manager, plugin_names
from .registry import Registry
from .revocation import Revocation
from .rooms import IndexedManager, IndexedRedisManager
from .routing import RecipientFilter, Router
from .sendqueue import QueueBudgets, SendQueue
from .settings import Settings
from .storage import Accounts, Database, Migrations, SchemaStatus, accounts, upgrade

log = logging.getLogger("happy_socket")

S = TypeVar("S")
DRAIN_TIMEOUT_S = 3.0  # how long shutdown waits for running event handlers


class Collector(Protocol):
    """What an assembly hook fills (Registry, Routes, Migrations, Services): it records each
    addition under ``current_plugin``, which the core sets before calling each plugin."""

    current_plugin: str


class Services(dict[str, Any]):
    """Public service objects of plugins, by name (``register_services``)."""

    current_plugin = "?"

    def add(self, name: str, service: Any) -> None:
        """Publish ``service`` as ``name``."""
        if name in self:
            raise ConfigError(
                f"Service {name!r} is published twice (plugin {self.current_plugin!r})."
            )
        self[name] = service

    def find(self, key: type[S] | str) -> Any:
        """The service named ``key``, or the first that is an instance of class ``key``."""
        if isinstance(key, str):
            return self.get(key)
        for service in self.values():
            if isinstance(service, key):
                return service
        raise LookupError(f"No enabled plugin publishes a {key.__name__} service.")


class App:
    """One happy-socket server: plugins, storage, Socket.IO server and HTTP routes."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        plugins: Iterable[object | tuple[str, object]] = (),
        load_entry_points: bool = True,
        clock: Clock = now_ms,
    ) -> None:
        self.settings = settings or Settings()
        self.clock = clock
        self.pm = make_plugin_manager(
            without=self.settings.without, plugins=plugins, load_entry_points=load_entry_points
        )
        self.hooks = HookCalls(self.pm)  # every hook is called through it, one plugin at a time
        self.metrics = Metrics()
        self.db = Database(self.settings.db, on_batch=self.metrics.db_batch_size.observe)
        self.accounts = Accounts(self.db)
        self.revocation = Revocation(self)  # deleted accounts' tokens and sockets, everywhere
        self.router = Router(self)
        self.registry = Registry()
        self.metadata = sa.MetaData()
        self.tables: dict[str, list[sa.Table]] = {"core": [accounts]}
        self.migrations = Migrations()
        self.routes = Routes(self)
        self.services = Services()
        self.sio = self._make_sio()
        self.dispatcher = Dispatcher(self)
        self._tokens: Tokens | None = None
        self.started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._assemble()

    @property
    def plugin_names(self) -> list[str]:
        """Enabled plugins."""
        return plugin_names(self.pm)

    def _make_sio(self) -> socketio.AsyncServer:
        s = self.settings
        manager: socketio.AsyncManager = IndexedManager()
        if s.redis:
            manager = self._redis_manager(s)
        sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            cors_allowed_origins=s.socketio_cors,
            cors_credentials=False,  # bearer tokens only, never cookies
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            max_http_buffer_size=s.max_packet_bytes,
            json=jsonmod,
            logger=False,
            engineio_logger=False,
            transports=["polling", "websocket"],
        )
        # engine.io's per-socket send queue (its documented factory): lighter, and capped
        # per socket, per account and for the process (the dispatcher files each socket's)
        self.queue_budgets = QueueBudgets(s.max_queued_bytes_per_user, s.max_queued_bytes_total)
        sio.eio.create_queue = functools.partial(  # type: ignore[method-assign]
            SendQueue, s.max_queued_bytes, self._send_queue_overflowed
        )
        # websockets served by happy-socket's uvicorn protocol skip engine.io's task, wait_for
        # and queue hop per frame (other ASGI servers and polling keep engine.io's loop)
        transport.install(sio.eio)
        return sio

    def _redis_manager(self, s: Settings) -> socketio.AsyncManager:
        """The per-user fan-out manager; python-socketio's one-channel Redis manager when the
        installed python-socketio lacks the interface it builds on (logged)."""
        missing = socketio_compat.missing_pubsub_interface() + socketio_compat.missing_room_hooks()
        if not missing:
            return UserFanoutManager(
                s.redis or "",
                channel=s.redis_channel,
                mode=s.redis_pubsub,
                metrics=self.metrics.registry,
            )
        log.warning(
            "python-socketio lacks %s: using its own Redis manager (every process receives "
            "every emit) instead of per-user fan-out",
            ", ".join(missing),
        )
        return IndexedRedisManager(s.redis, channel=s.redis_channel, json=jsonmod)

    def _send_queue_overflowed(self, queue: SendQueue) -> None:
        """A socket's unsent data passed ``max_queued_bytes`` (or it was the largest queue of a
        full account or process budget): close it (it may reconnect)."""
        eio_sid = engineio_compat.close_socket_of(self.sio.eio, queue)
        self.metrics.send_overflows.inc()
        log.warning(
            "closed eio sid %s: more than %d bytes waiting for it (it does not read)",
            eio_sid,
            queue.limit,
        )

    def _assemble(self) -> None:
        """Run the assembly hooks, telling each collector which plugin is adding to it."""
        collectors: list[tuple[str, str, Collector]] = [
            ("register_services", "services", self.services),
            ("register_handlers", "registry", self.registry),
            ("register_migrations", "migrations", self.migrations),
            ("register_routes", "routes", self.routes),
        ]
        for hook, arg, collector in collectors:
            for name, call in self.hooks.each(hook):
                collector.current_plugin = name
                call(app=self, **{arg: collector})
        for name, call in self.hooks.each("register_tables"):
            own = sa.MetaData()  # the plugin's tables are what it adds here
            call(metadata=own, app=self)
            self._add_tables(name, own)
        self.dispatcher.attach(self.sio)

    def _add_tables(self, plugin: str, metadata: sa.MetaData) -> None:
        owners = {t.key: name for name, tables in self.tables.items() for t in tables}
        for key, table in metadata.tables.items():
            if key in owners:
                raise ConfigError(
                    f"Table {key!r} of plugin {plugin!r} is declared by plugin {owners[key]!r} too."
                )
            self.tables.setdefault(plugin, []).append(table.to_metadata(self.metadata))

    # -- lifecycle -----------------------------------------------------------

    @property
    def tokens(self) -> Tokens:
        """Token issuer/verifier (the secret is resolved on first use)."""
        if self._tokens is None:
            self._tokens = Tokens(resolve_secret(self.settings))
        return self._tokens

    async def startup(self) -> list[SchemaStatus]:
        """Connect and migrate the database, check Redis, then run ``startup`` hooks."""
        if self.started:
            return []
        _ = self.tokens
        try:
            await self.db.connect()
        except Exception as exc:
            raise ConfigError(
                f"Cannot connect to the database {self.settings.db}: {reason_of(exc)}."
            ) from exc
        try:
            report = await upgrade(self.db, self.tables, self.migrations)
            if self.settings.redis:
                await check_redis(self.settings.redis)
                if isinstance(self.sio.manager, UserFanoutManager):
                    await self.sio.manager.start()
            await self.run_hook("startup", app=self, errors="raise")
        except BaseException:
            if isinstance(self.sio.manager, UserFanoutManager):
                await self.sio.manager.stop()
            await self.db.disconnect()
            raise
        self.started = True
        return report

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until shutdown (then it is cancelled); errors are logged."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def shutdown(self) -> None:
        """Let running handlers finish (≤ ``DRAIN_TIMEOUT_S``), run ``shutdown`` hooks, cancel
        background tasks, then close the database."""
        if not self.started:
            return
        self.started = False
        if not await self.dispatcher.drain(DRAIN_TIMEOUT_S):
            log.warning(
                "shutdown: %d event handlers still running after %.0f s; closing anyway",
                self.dispatcher.in_flight,
                DRAIN_TIMEOUT_S,
            )
        await self.run_hook("shutdown", app=self)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(self.sio.manager, UserFanoutManager):
            await self.sio.manager.stop()
        await self.db.disconnect()

    @asynccontextmanager
    async def lifespan(self, _: Any = None) -> AsyncIterator[None]:
        """ASGI lifespan: startup on enter, shutdown on exit."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    def asgi(self, *, lifespan: bool = True) -> socketio.ASGIApp:
        """The ASGI application: Socket.IO at ``settings.socketio_path`` plus HTTP routes.

        The HTTP side is wrapped by every ``asgi_wrapper`` hook (the cors plugin's among them).
        ``lifespan``: answer the ASGI lifespan with :meth:`startup`/:meth:`shutdown`. A host
        that mounts the application runs no lifespan of it: then the first request or
        Socket.IO connection starts the App (:class:`~happy_socket.embed.EmbeddedASGI`).
        """
        http = Starlette(
            routes=self.routes.routes,
            lifespan=self.lifespan if lifespan else None,
            exception_handlers={404: unmatched, 405: unmatched},
        )
        http.state.happy_app = self
        wrapped: Any = http
        for wrapper in self.pm.hook.asgi_wrapper(app=self):
            if wrapper is not None:
                wrapped = wrapper(wrapped)
        return EmbeddedASGI(self, wrapped, socketio_path=self.settings.socketio_path.strip("/"))

    async def run_hook(self, hook: str, *, errors: str = "log", **kwargs: Any) -> list[Any]:
        """Call ``hook`` on every plugin in turn (through pluggy), awaiting awaitables.

        A plugin's failure is logged and the next plugin is called; ``errors="raise"``
        raises it instead (``startup``).
        """
        results = []
        for name, call in self.hooks.each(hook):
            try:
                result = call(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                if errors == "raise":
                    raise
                log.exception("hook %s of plugin %s failed", hook, name)
                continue
            results.append(result)
        return results

    # -- library API (docs/protocol.md) ---------------------------------------

    async def authenticate(self, token: str, auth: dict[str, Any]) -> str | None:
        """The user id for ``token`` from the first ``authenticate`` hook that knows it."""
        for name, call in self.hooks.each("authenticate"):
            result = call(app=self, token=token, auth=auth)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                if name not in CORE_PLUGINS:  # a host's own users: made on first use
                    await self.accounts.ensure(str(result))
                return str(result)
        return None

    def connections(self) -> list[Connection]:
        """The sockets connected to this process (authenticated, in their rooms)."""
        return list(self.dispatcher.connections.values())

    def connection(self, sid: str) -> Connection | None:
        """The connection of socket ``sid`` in this process, or None."""
        return self.dispatcher.connections.get(sid)

    async def issue_token(self, user_id: str) -> str:
        """Create the account ``user_id`` if needed and return a token for it."""
        await self.accounts.ensure(user_id)
        return self.tokens.issue(user_id)

    async def emit_update(
        self,
        user_id: str,
        body: dict[str, Any],
        to: RecipientFilter,
        *,
        skip_sid: str | None = None,
    ) -> dict[str, Any]:
        """Emit an ``update`` to a user's sockets (allocates the user's next seq)."""
        return await self.router.emit_update(user_id, body, to, skip_sid=skip_sid)

    async def emit_ephemeral(
        self, user_id: str, payload: dict[str, Any], to: RecipientFilter
    ) -> None:
        """Emit an ``ephemeral`` to a user's sockets."""
        await self.router.emit_ephemeral(user_id, payload, to)

    @overload
    def service(self, key: type[S]) -> S: ...

    @overload
    def service(self, key: str) -> Any: ...

    def service(self, key: type[S] | str) -> Any:
        """A plugin's public service: by class or runtime-checkable Protocol (type-checked;
        LookupError when no enabled plugin publishes one), or by name (None when missing)."""
        return self.services.find(key)


def create_app(
    settings: Settings | None = None,
    *,
    plugins: Iterable[object | tuple[str, object]] = (),
    load_entry_points: bool = True,
    clock: Clock = now_ms,
) -> App:
    """Assemble an App from installed plugins (minus ``settings.without``) and ``plugins``."""
    return App(settings, plugins=plugins, load_entry_points=load_entry_points, clock=clock)
