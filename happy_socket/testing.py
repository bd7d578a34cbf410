"""Helpers for tests of happy-socket and of plugins: a real server on a random port, real clients.

async with ServerHarness(create_app(Settings(db=...), plugins=[my_plugin])) as server:
    alice = await server.client("alice")
    assert await alice.call("ping") == {}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import defaultdict
from types import TracebackType
from typing import Any

import socketio

from .app import App
from .compat.uvicorn import http_protocol
from .websocket import websocket_protocol


class TestSocket:
    """A python-socketio client that records every event it receives."""

    __test__ = False  # not a pytest class

    def __init__(self, client: socketio.AsyncClient, user_id: str) -> None:
        self.client = client
        self.user_id = user_id
        self.events: dict[str, list[Any]] = defaultdict(list)
        self._arrived: dict[str, asyncio.Condition] = defaultdict(asyncio.Condition)
        self._cursor: dict[str, int] = defaultdict(int)
        client.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        self.events[event].append(args[0] if len(args) == 1 else list(args))
        cond = self._arrived[event]
        async with cond:
            cond.notify_all()

    @property
    def sid(self) -> str:
        """This socket's id on the server."""
        return str(self.client.get_sid())

    async def emit(self, event: str, *args: Any) -> None:
        """Emit without asking for an ack."""
        await self.client.emit(event, args[0] if len(args) == 1 else (tuple(args) or None))

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        """Emit asking for an ack and return the ack's first argument."""
        return await self.client.call(
            event, args[0] if len(args) == 1 else (tuple(args) or None), timeout=timeout
        )

    async def next(self, event: str, timeout: float = 3.0) -> Any:
        """The next not yet consumed ``event`` payload, waiting up to ``timeout`` seconds."""
        cond = self._arrived[event]
        async with cond:
            await asyncio.wait_for(
                cond.wait_for(lambda: len(self.events[event]) > self._cursor[event]), timeout
            )
        payload = self.events[event][self._cursor[event]]
        self._cursor[event] += 1
        return payload

    async def nothing(self, event: str, within: float = 0.3) -> bool:
        """True when no new ``event`` arrives within ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await self.next(event, timeout=within)
            return False
        return True

    async def disconnect(self) -> None:
        """Close the socket."""
        await self.client.disconnect()


class ServerHarness:
    """Serves ``app`` with uvicorn on 127.0.0.1 and a free port, inside the running loop."""

    def __init__(self, app: App, *, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = 0
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._sockets: list[TestSocket] = []

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def protocols(self) -> list[Any]:
        """uvicorn's protocol objects of the open HTTP and websocket connections.

        For tests of what each connection keeps (uvicorn's ``Server.server_state``).
        """
        if self._server is None:
            return []
        return list(self._server.server_state.connections)

    async def __aenter__(self) -> ServerHarness:
        import uvicorn

        await self.app.startup()
        # IPPROTO_TCP, as `happy-socket serve` does: asyncio then sets TCP_NODELAY on accepted
        # sockets (with proto 0, Nagle + delayed ACK add ~40 ms to keep-alive requests)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app.asgi(lifespan=False),
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws=websocket_protocol(self.app.settings.write_stall_s),
            http=http_protocol(self.app.settings.header_timeout_s),
            ws_per_message_deflate=self.app.settings.per_message_deflate,
            ws_max_size=self.app.settings.max_packet_bytes,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # uvicorn < 0.29
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s in self._sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.disconnect(), 2)
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        await self.app.shutdown()

    async def token(self, user_id: str) -> str:
        """A token for ``user_id`` (the account is created)."""
        return await self.app.issue_token(user_id)

    async def client(
        self,
        user_id: str = "alice",
        *,
        client_type: str | None = None,
        session_id: str | None = None,
        machine_id: str | None = None,
        transport: str = "websocket",
        **auth: Any,
    ) -> TestSocket:
        """A connected socket of ``user_id`` (closed with the harness)."""
        payload: dict[str, Any] = {"token": await self.token(user_id), **auth}
        if client_type is not None:
            payload["clientType"] = client_type
        if session_id is not None:
            payload["sessionId"] = session_id
        if machine_id is not None:
            payload["machineId"] = machine_id
        return await self.connect(payload, user_id=user_id, transport=transport)

    async def connect(
        self, auth: Any, *, user_id: str = "?", transport: str = "websocket"
    ) -> TestSocket:
        """A socket connected with exactly ``auth`` (raises socketio ConnectionError if refused)."""
        client = socketio.AsyncClient(reconnection=False)
        test_socket = TestSocket(client, user_id)
        await client.connect(
            self.url,
            socketio_path=self.app.settings.socketio_path,
            auth=auth,
            transports=[transport],
            wait_timeout=5,
        )
        self._sockets.append(test_socket)
        return test_socket

    async def refusal(self, auth: Any) -> str | None:
        """The ``connect_error`` message for ``auth``, or None when it was accepted."""
        client = socketio.AsyncClient(reconnection=False)
        message: list[Any] = []

        async def connect_error(data: Any) -> None:
            message.append(data.get("message") if isinstance(data, dict) else data)

        client.on("connect_error", connect_error)

        try:
            await client.connect(
                self.url,
                socketio_path=self.app.settings.socketio_path,
                auth=auth,
                transports=["websocket"],
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError:
            return str(message[0]) if message else "?"
        await client.disconnect()
        return None


class AppClient:
    """An in-process HTTP client for ``app`` (httpx over ASGI; no sockets, no uvicorn).

    async with AppClient(app) as http:
        reply = await http.get("/v1/sessions", user="alice")  # bearer token of alice

    Starts the app on enter (unless already started) and stops it on exit if it started it.
    """

    def __init__(self, app: App, *, origin: str = "http://testserver") -> None:
        self.app = app
        self.origin = origin
        self._client: Any = None
        self._started_here = False

    async def __aenter__(self) -> AppClient:
        import httpx

        if not self.app.started:
            await self.app.startup()
            self._started_here = True
        transport = httpx.ASGITransport(app=self.app.asgi(lifespan=False))
        self._client = httpx.AsyncClient(transport=transport, base_url=self.origin)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        if self._started_here:
            await self.app.shutdown()

    async def request(
        self, method: str, path: str, *, user: str | None = None, **kwargs: Any
    ) -> Any:
        """An ``httpx.Response``; ``user`` adds ``Authorization: Bearer <token of user>``."""
        if user is not None:
            headers = dict(kwargs.pop("headers", None) or {})
            headers["Authorization"] = f"Bearer {await self.app.issue_token(user)}"
            kwargs["headers"] = headers
        return await self._client.request(method, path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> Any:
        """``GET path``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Any:
        """``POST path``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Any:
        """``PUT path``."""
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Any:
        """``DELETE path``."""
        return await self.request("DELETE", path, **kwargs)

    async def options(self, path: str, **kwargs: Any) -> Any:
        """``OPTIONS path``."""
        return await self.request("OPTIONS", path, **kwargs)


def use_fast_path(app: App, enabled: bool) -> None:
    """Make ``app``'s router emit through its fast paths (python-socketio internals) or only
    through python-socketio's public API, so a test can run both (tests/core/test_routing.py).

    The router otherwise decides once, at its first emit (``Router.fast``).
    """
    app.router.fast = enabled


def ci() -> bool:
    """True when running under CI (services must be there: fail, don't skip)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
