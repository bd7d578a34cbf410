"""``happy-socket serve`` and ``happy-socket token`` as an operator runs them (subprocesses).

The issue's "done when": a served database, a token from the CLI or from /v1/auth, the stock
Node client connects and pings; /health; SIGTERM; one-sentence operator errors; env variables.
"""

from __future__ import annotations

import datetime
import signal
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest
import socketio

from . import serve_process as sp
from .node import results

SECRET = "env-secret-0123456789abcdef0123456789"


def token_for(user_id: str, *args: str, **kwargs: object) -> str:
    """``happy-socket token USER_ID ARGS`` -> the printed token."""
    done = sp.run("token", user_id, *args, **kwargs)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0]


async def node_ping(url: str, token: str) -> list[object]:
    """Connect the stock JS client with ``token`` and ping; the step results."""
    return await results(
        url,
        [
            {"op": "connect", "auth": {"token": token}},
            {"op": "emit", "event": "ping", "ack": True},
        ],
    )


def assert_one_sentence(stderr: str, *fragments: str) -> None:
    """Exactly one line on stderr, a sentence (``Error: ... .``) naming ``fragments``."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("Error: ") and line.endswith("."), line
    for fragment in fragments:
        assert fragment in line, line


async def test_fresh_database_token_js_client_health_and_sigterm(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    port = sp.free_port()
    with sp.serve(["--db", db], tmp_path, port=port) as served:
        secret_file = tmp_path / "x.db.secret"
        assert secret_file.exists()
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

        token = token_for("alice", "--db", db)
        connected, pong = await node_ping(served.url, token)
        assert connected["connected"] is True  # type: ignore[index]
        assert pong == {"ack": {}, "ackArgs": [{}]}

        async with httpx.AsyncClient() as http:
            health = await http.get(served.url + "/health", timeout=5)
        assert health.status_code == 200
        body = health.json()
        assert set(body) == {"status", "timestamp", "service"}
        assert (body["status"], body["service"]) == ("ok", "happy-socket")
        stamp = datetime.datetime.fromisoformat(body["timestamp"])
        assert stamp.tzinfo is not None
        now = datetime.datetime.now(datetime.UTC)
        assert abs((now - stamp).total_seconds()) < 60

        # the other way in: /v1/auth with a tweetnacl key, then the socket
        login, connected, pong = await results(
            served.url,
            [
                {"op": "login"},
                {"op": "connect", "useToken": True},
                {"op": "emit", "event": "ping", "ack": True},
            ],
        )
        assert login["status"] == 200 and login["body"]["success"] is True
        assert connected["connected"] is True
        assert pong["ack"] == {}

        # SIGTERM with a client still connected: a clean exit, soon
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            served.url,
            socketio_path="/v1/updates",
            auth={"token": token},
            transports=["websocket"],
            wait_timeout=5,
        )
        started = time.monotonic()
        assert served.terminate(within=10) == 0, served.output()
        stopped_in = time.monotonic() - started
        await client.disconnect()
        assert "Traceback" not in served.output()
        assert "happy-socket stopped" in served.output()  # the shutdown hooks ran
    print(f"serve stopped {stopped_in:.2f} s after SIGTERM with a client connected")

    # the generated secret is kept: a restarted server accepts the old token
    with sp.serve(["--db", db], tmp_path, port=sp.free_port()) as again:
        connected, pong = await node_ping(again.url, token)
        assert pong == {"ack": {}, "ackArgs": [{}]}
        assert again.terminate() == 0


async def test_defaults_in_the_working_directory(tmp_path: Path) -> None:
    """No flags: happy-socket.db and its secret in the working directory; Ctrl-C stops it."""
    port = sp.free_port()
    with sp.serve([], tmp_path, env={"HAPPY_SOCKET_PORT": str(port)}) as served:
        assert served.port == port
        assert (tmp_path / "happy-socket.db").exists()
        assert (tmp_path / "happy-socket.db.secret").exists()
        token = token_for("bob", cwd=tmp_path)
        _, pong = await node_ping(served.url, token)
        assert pong == {"ack": {}, "ackArgs": [{}]}
        assert served.terminate(sig=signal.SIGINT) == 0  # Ctrl-C
        assert "happy-socket stopped" in served.output()


async def test_environment_variables_are_honoured(tmp_path: Path) -> None:
    env = {
        "HAPPY_SOCKET_PORT": str(sp.free_port()),
        "HAPPY_SOCKET_HOST": "127.0.0.1",
        "HAPPY_SOCKET_DB": f"sqlite:///{tmp_path / 'env.db'}",
        "HAPPY_SOCKET_SECRET": SECRET,
        "HAPPY_SOCKET_WITHOUT": "ping",
        "HAPPY_SOCKET_LOG_LEVEL": "warning",
    }
    with sp.serve([], tmp_path, env=env) as served:
        assert (tmp_path / "env.db").exists()
        assert not (tmp_path / "env.db.secret").exists()  # the given secret is used
        token = token_for("carol", env=env)
        connected, pong = await results(
            served.url,
            [
                {"op": "connect", "auth": {"token": token}},
                {"op": "emit", "event": "ping", "ack": True, "timeoutMs": 3000},
            ],
        )
        assert connected["connected"] is True  # the token was signed with HAPPY_SOCKET_SECRET
        # HAPPY_SOCKET_WITHOUT=ping left the event out: nobody serves it
        assert pong["ack"]["error"] == "Unknown event"
        assert served.terminate() == 0
    events = sp.run("events", env={"HAPPY_SOCKET_WITHOUT": "ping"})
    assert events.returncode == 0
    assert "ping" not in [line.split("\t")[0] for line in events.stdout.splitlines()]


def test_token_command_signs_with_the_given_secret(tmp_path: Path) -> None:
    from happy_socket.auth import Tokens

    db = f"sqlite:///{tmp_path / 't.db'}"
    token = token_for("dave", "--db", db, "--secret", SECRET)
    assert Tokens(SECRET).verify(token) == "dave"
    assert Tokens("other-secret-0123456789abcdef0123456789").verify(token) is None


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["serve", "--db", "mysql://x"], {}, ["mysql"]),
        (["serve"], {"HAPPY_SOCKET_DB": "mysql://x"}, ["mysql"]),
        (["serve", "--without", "nope"], {}, ["nope"]),
        (["serve", "--db", "postgresql://nobody@127.0.0.1:1/x", "--secret", SECRET], {}, []),
        (["serve", "--db", "sqlite:////nonexistent-dir/x/y.db", "--secret", SECRET], {}, ["y.db"]),
        (
            ["serve", "--redis", "redis://127.0.0.1:1/0", "--secret", SECRET],
            {},
            ["Redis", "127.0.0.1:1"],
        ),
        (["token", "alice", "--db", "mysql://x"], {}, ["mysql"]),
        (["events", "--without", "nope"], {}, ["nope"]),
    ],
)
def test_operator_errors_are_one_sentence(
    tmp_path: Path, args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    if args[0] == "serve":
        args = [*args, "--port", str(sp.free_port())]
    done = sp.run(*args, env=env, cwd=tmp_path)
    assert done.returncode != 0
    assert_one_sentence(done.stderr, *fragments)


def test_port_in_use_is_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = sp.run(
            "serve", "--port", str(port), "--db", f"sqlite:///{tmp_path / 'p.db'}", cwd=tmp_path
        )
    assert done.returncode != 0
    assert_one_sentence(done.stderr, str(port), "in use")


async def test_serve_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL needs an explicit secret (every process must share it); then it serves."""
    done = sp.run("serve", "--port", str(sp.free_port()), "--db", pg_url, cwd=tmp_path)
    assert done.returncode != 0
    assert_one_sentence(done.stderr, "secret")

    env = {"HAPPY_SOCKET_SECRET": SECRET}
    with sp.serve(["--db", pg_url], tmp_path, port=sp.free_port(), env=env) as served:
        token = token_for("erin", "--db", pg_url, env=env)
        login, connected, pong = await results(
            served.url,
            [
                {"op": "login"},
                {"op": "connect", "auth": {"token": token}},
                {"op": "emit", "event": "ping", "ack": True},
            ],
        )
        assert login["status"] == 200
        assert connected["connected"] is True
        assert pong == {"ack": {}, "ackArgs": [{}]}
        assert served.terminate() == 0
