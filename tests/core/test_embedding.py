"""Embedding (docs/embedding.md): ``app.asgi()`` mounted in FastAPI and in Starlette.

A host runs no lifespan of a mounted app. Mounted in FastAPI (default lifespan) the App starts
on the first request or socket, once, and stops with the server; where nothing could stop it
the host gets one 503 that names the fix; with the host's ``lifespan=happy.lifespan`` it starts
and stops with the host.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from happy_socket import App, Settings, create_app, embed, hookimpl

SECRET = "embed-secret-0123456789abcdef0123456789"
ROOT = Path(__file__).parents[2]


class Lifecycle:
    """Counts startup/shutdown hook calls."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0

    @hookimpl
    async def startup(self) -> None:
        await asyncio.sleep(0.05)  # long enough for concurrent first requests to pile up
        self.started += 1

    @hookimpl
    def shutdown(self) -> None:
        self.stopped += 1


def make_happy(db: str) -> tuple[App, Lifecycle]:
    lifecycle = Lifecycle()
    happy = create_app(Settings(db=db, secret=SECRET), plugins=[("lifecycle", lifecycle)])
    return happy, lifecycle


def fastapi_host(happy: App, **options: Any) -> FastAPI:
    """The natural way: your routes first, happy-socket mounted at / last."""
    api = FastAPI(**options)

    @api.get("/api/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    api.mount("/", happy.asgi())
    return api


def starlette_host(happy: App, **options: Any) -> Starlette:
    async def hello(_: Request) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    return Starlette(routes=[Route("/api/hello", hello), Mount("/", app=happy.asgi())], **options)


@asynccontextmanager
async def serving(host: Any) -> AsyncIterator[str]:
    """Serve ``host`` with uvicorn (lifespan on, as `uvicorn module:app` does); yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(host, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def ping_over_socket(url: str, token: str) -> Any:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        url, socketio_path="/v1/updates", auth={"token": token}, transports=["websocket"]
    )
    try:
        return await client.call("ping", timeout=5)
    finally:
        await client.disconnect()


async def prepared_token(db: str, user: str) -> str:
    """Create ``user``'s account with another App on ``db``: its token is then valid for any
    App with the same secret, before that one touched the database."""
    other = create_app(Settings(db=db, secret=SECRET), load_entry_points=False)
    await other.startup()
    try:
        return await other.issue_token(user)
    finally:
        await other.shutdown()


def unavailable(message: str) -> dict[str, Any]:
    return {"error": "Service Unavailable", "message": message, "statusCode": 503}


# -- FastAPI: mount and go ------------------------------------------------------------------


async def test_fastapi_mount_starts_on_first_request_and_stops_with_the_server(
    db_url: str,
) -> None:
    happy, lifecycle = make_happy(db_url)
    async with serving(fastapi_host(happy)) as url:
        assert not happy.started  # the host's lifespan did not start it
        async with httpx.AsyncClient(base_url=url) as http:
            health = await http.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
            assert (await http.get("/api/hello")).json() == {"hello": "world"}
        assert happy.started and lifecycle.started == 1
        token = await happy.issue_token("alice")
        assert await ping_over_socket(url, token) == {}
    assert not happy.started and lifecycle.stopped == 1  # stopped with the server


async def test_a_socket_can_be_the_first_use(db_url: str) -> None:
    happy, lifecycle = make_happy(db_url)
    async with serving(fastapi_host(happy)) as url:
        token = await prepared_token(db_url, "bob")
        assert await ping_over_socket(url, token) == {}
        assert lifecycle.started == 1
    assert lifecycle.stopped == 1


async def test_concurrent_first_requests_start_it_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    happy, lifecycle = make_happy(db)
    token = await prepared_token(db, "carol")
    async with serving(fastapi_host(happy)) as url, httpx.AsyncClient(base_url=url) as http:
        answers = await asyncio.gather(
            *(http.get("/health") for _ in range(8)), ping_over_socket(url, token)
        )
        assert [a.status_code for a in answers[:-1]] == [200] * 8
        assert answers[-1] == {}
        assert lifecycle.started == 1
    assert lifecycle.stopped == 1


async def test_fastapi_with_the_happy_lifespan_starts_before_the_first_request(
    tmp_path: Path,
) -> None:
    happy, lifecycle = make_happy(f"sqlite:///{tmp_path / 'e.db'}")
    wrapper: list[Any] = []
    api = fastapi_host(happy, lifespan=happy.lifespan)
    wrapper.extend(r.app for r in api.routes if isinstance(r, Mount))
    async with serving(api) as url:
        assert happy.started and lifecycle.started == 1
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).status_code == 200
    assert not happy.started and lifecycle.stopped == 1
    assert wrapper[0].started_on_first_use is False


async def test_a_fastapi_lifespan_of_your_own_enters_the_happy_one(tmp_path: Path) -> None:
    happy, lifecycle = make_happy(f"sqlite:///{tmp_path / 'e.db'}")
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with happy.lifespan():
            seen.append("up")
            yield
        seen.append("down")

    host = fastapi_host(happy, lifespan=lifespan)
    async with serving(host) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).status_code == 200
    assert seen == ["up", "down"] and lifecycle.started == lifecycle.stopped == 1


# -- Starlette: the host's lifespan -----------------------------------------------------------


async def test_starlette_mount_with_the_happy_lifespan(db_url: str) -> None:
    happy, lifecycle = make_happy(db_url)
    async with serving(starlette_host(happy, lifespan=happy.lifespan)) as url:
        assert happy.started
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/api/hello")).json() == {"hello": "world"}
        assert await ping_over_socket(url, await happy.issue_token("dana")) == {}
    assert not happy.started and lifecycle.started == lifecycle.stopped == 1


async def test_a_host_that_cannot_stop_it_gets_one_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    happy, lifecycle = make_happy(f"sqlite:///{tmp_path / 'e.db'}")
    with caplog.at_level(logging.ERROR, logger="happy_socket"):
        async with serving(starlette_host(happy)) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                for _ in range(3):
                    refused = await http.get("/health")
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"] == "1"
                    assert refused.json() == unavailable(embed.NOT_STARTED)
                assert (await http.get("/api/hello")).json() == {"hello": "world"}
            with pytest.raises(socketio.exceptions.ConnectionError):
                await ping_over_socket(url, happy.tokens.issue("erin"))
    assert not happy.started and lifecycle.started == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [embed.NOT_STARTED]  # logged once, not per request
    assert "lifespan=happy.lifespan" in embed.NOT_STARTED
    assert "docs/embedding.md" in embed.NOT_STARTED


async def test_a_fastapi_lifespan_without_the_happy_one_gets_the_clear_error(
    tmp_path: Path,
) -> None:
    happy, _ = make_happy(f"sqlite:///{tmp_path / 'e.db'}")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield  # FastAPI then never runs its shutdown handlers: nothing could stop the App

    host = fastapi_host(happy, lifespan=lifespan)
    async with serving(host) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get("/v1/sessions")
        assert refused.status_code == 503
        assert refused.json() == unavailable(embed.NOT_STARTED)
    assert not happy.started


# -- failures and the end -------------------------------------------------------------------


async def test_a_start_that_fails_answers_503_and_is_tried_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed, "RETRY_AFTER_S", 0.0)
    happy, lifecycle = make_happy("postgresql://postgres@127.0.0.1:1/nowhere")
    api = fastapi_host(happy)
    transport = httpx.ASGITransport(app=api)
    with caplog.at_level(logging.ERROR, logger="happy_socket"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(2):
                refused = await http.get("/health")
                assert refused.status_code == 503
                assert refused.json() == unavailable(embed.START_FAILED)
    failures = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert len(failures) == 2  # tried on each request (after RETRY_AFTER_S)
    assert "Cannot connect to the database" in failures[0]
    assert not happy.started and lifecycle.started == 0


async def test_a_request_after_the_shutdown_does_not_start_it_again(tmp_path: Path) -> None:
    happy, lifecycle = make_happy(f"sqlite:///{tmp_path / 'e.db'}")
    transport = httpx.ASGITransport(app=fastapi_host(happy))  # no lifespan at all
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/health")).status_code == 200
        await happy.shutdown()  # what the host's shutdown handlers do
        late = await http.get("/health")
        assert late.status_code == 503
        assert late.json() == unavailable(embed.STOPPED)
    assert lifecycle.started == lifecycle.stopped == 1


def test_ctrl_c_stops_a_fastapi_host_cleanly(tmp_path: Path) -> None:
    """`uvicorn host:api` then SIGINT: the App's shutdown runs and the process exits."""
    (tmp_path / "host.py").write_text(
        textwrap.dedent(
            """
            import os, pathlib
            from fastapi import FastAPI
            from happy_socket import Settings, create_app, hookimpl

            class Marker:
                @hookimpl
                def shutdown(self):
                    pathlib.Path(os.environ["MARK"]).write_text("stopped")

            happy = create_app(Settings(db=os.environ["DB"], secret="s" * 40),
                               plugins=[("marker", Marker())])
            api = FastAPI()
            api.mount("/", happy.asgi())
            """
        )
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "DB": f"sqlite:///{tmp_path / 'h.db'}",
        "MARK": str(tmp_path / "mark"),
    }
    command = [sys.executable, "-m", "uvicorn", "host:api", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: _get(port, "/health") == 200, 20)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, -signal.SIGINT, 128 + signal.SIGINT), output
    assert (tmp_path / "mark").read_text() == "stopped", output


def _get(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code
    except httpx.HTTPError:
        return None


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_docs_embedding_md_quotes_every_message() -> None:
    page = (ROOT / "docs" / "embedding.md").read_text()
    for message in (embed.NOT_STARTED, embed.START_FAILED, embed.STOPPED):
        assert message in page


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_fastapi_testclient_starts_and_stops_it(tmp_path: Path) -> None:
    """The way docs/embedding.md tells to test a host: TestClient as a context manager."""
    from fastapi.testclient import TestClient

    happy, lifecycle = make_happy(f"sqlite:///{tmp_path / 'e.db'}")
    with TestClient(fastapi_host(happy)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/api/hello").json() == {"hello": "world"}
        assert client.get("/v1/account/profile").status_code == 401
    assert lifecycle.started == lifecycle.stopped == 1 and not happy.started
