"""Playing the happy app against the real happy CLI (tests/e2e/test_happy_cli.py and the
scale-out variant): an account, its encryption, the CLI's processes, a pseudo-terminal."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import socketio
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey


class App:
    """The app's side: an account, its encryption secret, HTTP and a user-scoped socket."""

    def __init__(self, url: str) -> None:
        self.url = url
        key = SigningKey.generate()
        challenge = os.urandom(32)
        reply = httpx.post(
            url + "/v1/auth",
            json={
                "publicKey": b64(bytes(key.verify_key)),
                "challenge": b64(challenge),
                "signature": b64(key.sign(challenge).signature),
            },
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        self.token: str = reply.json()["token"]
        self.secret = os.urandom(32)
        self.box = SecretBox(self.secret)

    def encrypt(self, value: Any) -> str:
        nonce = os.urandom(SecretBox.NONCE_SIZE)
        return b64(nonce + self.box.encrypt(json.dumps(value).encode(), nonce).ciphertext)

    def decrypt(self, text: str) -> Any:
        raw = base64.b64decode(text)
        return json.loads(
            self.box.decrypt(raw[SecretBox.NONCE_SIZE :], raw[: SecretBox.NONCE_SIZE])
        )

    def on(self, url: str) -> App:
        """The same account (token, secret) talking to the server at ``url``."""
        other = copy.copy(self)
        other.url = url
        return other

    def get(self, path: str) -> Any:
        reply = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        assert reply.status_code == 200, reply.text
        return reply.json()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cli_environ(home: Path, url: str) -> dict[str, str]:
    # without CI variables: under CI the CLI's terminal screens (ink) draw nothing
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HAPPY_", "CLAUDE", "CI_"))
        and k not in ("CI", "CONTINUOUS_INTEGRATION")
    }
    env.update({"HAPPY_SERVER_URL": url, "HAPPY_HOME_DIR": str(home), "HOME": str(home.parent)})
    return env


def processes_of(home: Path) -> list[int]:
    """Pids of the processes started with this test's ``HAPPY_HOME_DIR`` (daemon, sessions)."""
    marker = f"HAPPY_HOME_DIR={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def cleaned_up(home: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for pid in processes_of(home):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def happy(cli: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cli), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def wait_until(what: str, check: Any, within: float = 20) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within} s")


def logged_in(app: App, home: Path) -> None:
    """The credentials ``happy auth login`` writes (legacy format: token + account secret)."""
    home.mkdir(parents=True)
    (home / "access.key").write_text(json.dumps({"secret": b64(app.secret), "token": app.token}))


def start_daemon(cli: Path, app: App, env: dict[str, str]) -> str:
    """``happy daemon start``; the id of its machine once the server shows it online."""
    started = happy(cli, env, "daemon", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    return str(online_machine(app))


def online_machine(app: App, within: float = 20) -> str:
    machines = wait_until(
        "the daemon's machine going online",
        lambda: [m for m in app.get("/v1/machines") if m["active"]],
        within,
    )
    return str(machines[0]["id"])


async def user_socket(app: App) -> socketio.AsyncClient:
    sio = socketio.AsyncClient()
    await sio.connect(
        app.url,
        socketio_path="/v1/updates",
        transports=["websocket"],
        auth={"token": app.token, "clientType": "user-scoped"},
        wait_timeout=10,  # as patient as socket.io-client (20 s), not python-socketio's 1 s
    )
    return sio


async def rpc(sio: socketio.AsyncClient, app: App, method: str, params: Any) -> Any:
    """Call ``method`` (retried while the daemon has not registered it yet); its answer."""
    for _ in range(100):
        reply = await sio.call(
            "rpc-call", {"method": method, "params": app.encrypt(params)}, timeout=30
        )
        if reply.get("ok") or reply.get("error") != "RPC method not available":
            break
        await asyncio.sleep(0.2)
    assert reply["ok"] is True, reply
    return app.decrypt(reply["result"])


async def daemon_in_use(cli: Path, daemon: App, user: App, directory: Path) -> None:
    """The whole daemon story: credentials for ``daemon`` (the server the CLI talks to), the
    daemon started, :func:`use_the_machine` from ``user`` (maybe another server), stopped."""
    home = directory / "user" / ".happy"
    logged_in(daemon, home)
    env = cli_environ(home, daemon.url)
    with cleaned_up(home):
        machine = start_daemon(cli, user, env)  # online as ``user``'s server sees it
        sio = await user_socket(user)
        try:
            await use_the_machine(sio, user, machine, directory)
        finally:
            await sio.disconnect()
        stopped = happy(cli, env, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


async def use_the_machine(
    sio: socketio.AsyncClient, app: App, machine: str, directory: Path
) -> None:
    """What the app does with a machine: run a command, spawn a session, talk to it."""
    shell = await rpc(sio, app, f"{machine}:bash", {"command": "echo from-the-daemon", "cwd": "/"})
    assert shell["success"] is True and shell["exitCode"] == 0, shell
    assert shell["stdout"] == "from-the-daemon\n"

    spawned = await rpc(
        sio, app, f"{machine}:spawn-happy-session", {"directory": str(directory), "agent": "claude"}
    )
    assert spawned["type"] == "success", spawned
    session = spawned["sessionId"]

    # the session process created its session and keeps it updated
    def session_row() -> Any:
        rows = [s for s in app.get("/v1/sessions")["sessions"] if s["id"] == session]
        return rows[0] if rows and rows[0]["agentStateVersion"] >= 1 else None

    row = wait_until("the spawned session's first agent state", session_row)
    assert row["active"] is True
    assert app.decrypt(row["metadata"])["path"] == str(directory)

    # a message from the app reaches the session process, which answers (here: that no agent
    # is logged in on this machine) with messages of its own
    message = {"role": "user", "content": {"type": "text", "text": "hello"}}
    ack = await sio.call(
        "message", {"sid": session, "message": app.encrypt(message), "localId": "m1"}, timeout=10
    )
    assert (ack["result"], ack["seq"]) == ("success", 1), ack

    def answers() -> Any:
        page = app.get(f"/v3/sessions/{session}/messages")["messages"]
        return page if len(page) >= 2 else None

    page = wait_until("the session's answer", answers, within=30)
    assert [m["seq"] for m in page] == list(range(1, len(page) + 1))
    assert app.decrypt(page[0]["content"]["c"]) == message
    assert all(app.decrypt(m["content"]["c"])["role"] != "user" for m in page[1:])


class Terminal:
    """A command on a pseudo-terminal (``happy auth login`` draws an interactive screen)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.seen = b""

    def expect(self, pattern: bytes, within: float = 30) -> re.Match[bytes]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = re.search(pattern, self.seen)
            if found:
                return found
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the command exited
                    break
        raise AssertionError(f"no {pattern!r} on the terminal; it showed: {self.seen[-2000:]!r}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> int:
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)


def phone_answer(terminal_key: bytes, payload: bytes) -> str:
    """What the phone app posts to approve a terminal: an ephemeral key, a nonce, a box."""
    ephemeral = PrivateKey.generate()
    nonce = os.urandom(Box.NONCE_SIZE)
    boxed = Box(ephemeral, PublicKey(terminal_key)).encrypt(payload, nonce).ciphertext
    return b64(bytes(ephemeral.public_key) + nonce + boxed)
