"""The ASGI application ``App.asgi()`` returns: Socket.IO plus HTTP, started on first use.

Hosts do not run a mounted application's lifespan (FastAPI's ``mount``, Starlette's ``Mount``),
so the App's ``startup`` would never run: no database, every socket refused. This wrapper sees
the first HTTP request or Socket.IO connection that finds the App stopped, and then

- in a FastAPI host with its default lifespan, starts the App (once, under a lock; the request
  waits) and adds its shutdown to the host's shutdown handlers: it stops when the server does;
- anywhere else (no hook to stop it when the server stops: shutdown would not run, and the
  SQLite reader thread would keep the process from exiting), answers 503 and logs, once, the
  one-line fix: give the host ``lifespan=app.lifespan``.

docs/embedding.md shows both hosts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
import socketio

from .errors import ConfigError

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RETRY_AFTER_S = 1.0  # a failed start is not attempted again for this long

NOT_STARTED = (
    "happy-socket is mounted in a host that does not start it (hosts never run a mounted "
    "app's lifespan): pass lifespan=happy.lifespan to FastAPI(...) or Starlette(...), or enter "
    "'async with happy.lifespan():' in your own lifespan (docs/embedding.md)"
)
START_FAILED = "happy-socket could not start (see the server log)"
STOPPED = "happy-socket has been shut down"


class EmbeddedASGI(socketio.ASGIApp):  # type: ignore[misc]
    """``socketio.ASGIApp`` for ``app`` that starts it on first use where the host lets it."""

    def __init__(self, app: App, http: Any, *, socketio_path: str) -> None:
        super().__init__(app.sio, other_asgi_app=http, socketio_path=socketio_path)
        self.happy = app
        self.started_on_first_use = False
        self._lock: asyncio.Lock | None = None
        self._ran = False  # the App ran under this wrapper: stopped now means shut down
        self._told = False  # NOT_STARTED was logged
        self._failed_at = -RETRY_AFTER_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._watch_lifespan(send))
            return
        if not self.happy.started:
            problem = await self._start_on_first_use(scope)
            if problem is not None:
                await unavailable(scope, receive, send, problem)
                return
        self._ran = True
        await super().__call__(scope, receive, send)

    def _watch_lifespan(self, send: Send) -> Send:
        async def watched(message: Message) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                self._ran = True  # a request arriving after this must not start it again
            await send(message)

        return watched

    async def _start_on_first_use(self, scope: Scope) -> str | None:
        """Start the App; None when it runs, else why it does not."""
        if self._ran:
            return STOPPED  # it ran and was shut down: the host is stopping
        on_shutdown = host_shutdown_handlers(scope)
        if on_shutdown is None:
            if not self._told:
                self._told = True
                log.error("%s", NOT_STARTED)
            return NOT_STARTED
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.happy.started:
                return None
            if time.monotonic() - self._failed_at < RETRY_AFTER_S:
                return START_FAILED
            try:
                await self.happy.startup()
            except ConfigError as exc:
                self._failed_at = time.monotonic()
                log.error("happy-socket could not start: %s", exc)
                return START_FAILED
            except Exception:
                self._failed_at = time.monotonic()
                log.exception("happy-socket could not start")
                return START_FAILED
            self.started_on_first_use = True
            on_shutdown.append(self.happy.shutdown)
            log.info("happy-socket started on first use; it stops with its FastAPI host")
            return None


def host_shutdown_handlers(scope: Scope) -> list[Any] | None:
    """The shutdown handler list of the host application in ``scope``, when the host runs it
    when the server stops: FastAPI's ``on_shutdown``, under FastAPI's default lifespan (a
    lifespan of your own replaces it, and then the list is never run)."""
    host = scope.get("app")
    router = getattr(host, "router", None)
    handlers = getattr(router, "on_shutdown", None)
    lifespan = type(getattr(router, "lifespan_context", None))
    fastapi_host = any(
        c.__name__ == "FastAPI" and c.__module__.startswith("fastapi") for c in type(host).__mro__
    )
    if (
        fastapi_host
        and isinstance(handlers, list)
        and lifespan.__name__
        == "_DefaultLifespan"  # FastAPI's own, or Starlette's in older FastAPI
        and lifespan.__module__.startswith(("fastapi", "starlette"))
    ):
        return handlers
    return None


async def unavailable(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    """503 ``{"error", "message", "statusCode"}`` for HTTP; a refused handshake for a websocket."""
    if scope["type"] == "http":
        body = {"error": "Service Unavailable", "message": message, "statusCode": 503}
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(body)})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1011})
