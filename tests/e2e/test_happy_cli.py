"""The real happy CLI (npm ``happy`` 1.2.5, tests/e2e/cli) against ``happy-socket serve``.

What a user does: ``happy auth login`` (driven through a pseudo-terminal, the test approving
the link as the phone app does), then the daemon: from the app, run a shell command on the
machine, start a coding session there and talk to it. The account is created the way the app
creates one (``POST /v1/auth``, an Ed25519-signed challenge). The test plays the app: a
user-scoped socket calls the daemon's RPC methods with parameters encrypted as the app does
(NaCl secretbox under the account secret) and decrypts the answers.

The CLI is installed with ``npm ci`` in tests/e2e/cli on first use (``.ci/run`` installs it
up front); without node or npm the test skips with a reason, and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
import pytest
import socketio
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from . import serve_process as sp
from .node import require_happy_cli


@pytest.fixture
def happy_cli() -> Path:
    return require_happy_cli()


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

    def get(self, path: str) -> Any:
        reply = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        assert reply.status_code == 200, reply.text
        return reply.json()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cli_environ(home: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPPY_", "CLAUDE"))}
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


async def test_daemon_registers_runs_a_command_and_starts_a_session(
    happy_cli: Path, tmp_path: Path
) -> None:
    port = sp.free_port()
    db = f"sqlite:///{tmp_path / 'h.db'}"
    with sp.serve(["--db", db], tmp_path, port=port) as served:
        app = App(served.url)
        home = tmp_path / "user" / ".happy"
        logged_in(app, home)
        env = cli_environ(home, served.url)
        with cleaned_up(home):
            # the daemon registers its machine and keeps a machine-scoped socket open
            machine = start_daemon(happy_cli, app, env)
            sio = await user_socket(app)
            try:
                shell = await rpc(
                    sio, app, f"{machine}:bash", {"command": "echo from-the-daemon", "cwd": "/"}
                )
                assert shell["success"] is True and shell["exitCode"] == 0, shell
                assert shell["stdout"] == "from-the-daemon\n"

                spawned = await rpc(
                    sio,
                    app,
                    f"{machine}:spawn-happy-session",
                    {"directory": str(tmp_path), "agent": "claude"},
                )
                assert spawned["type"] == "success", spawned
                session = spawned["sessionId"]

                # the session process created its session here and keeps it updated
                def session_row() -> Any:
                    rows = [s for s in app.get("/v1/sessions")["sessions"] if s["id"] == session]
                    return rows[0] if rows and rows[0]["agentStateVersion"] >= 1 else None

                row = wait_until("the spawned session's first agent state", session_row)
                assert row["active"] is True
                assert app.decrypt(row["metadata"])["path"] == str(tmp_path)

                # a message from the app reaches the session process, which answers (here:
                # that no agent is logged in on this machine) with messages of its own
                message = {"role": "user", "content": {"type": "text", "text": "hello"}}
                ack = await sio.call(
                    "message",
                    {"sid": session, "message": app.encrypt(message), "localId": "m1"},
                    timeout=10,
                )
                assert (ack["result"], ack["seq"]) == ("success", 1), ack

                def answers() -> Any:
                    page = app.get(f"/v3/sessions/{session}/messages")["messages"]
                    return page if len(page) >= 2 else None

                page = wait_until("the session's answer", answers, within=30)
                assert [m["seq"] for m in page] == list(range(1, len(page) + 1))
                assert app.decrypt(page[0]["content"]["c"]) == message
                assert all(app.decrypt(m["content"]["c"])["role"] != "user" for m in page[1:])
            finally:
                await sio.disconnect()

            stopped = happy(happy_cli, env, "daemon", "stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "Traceback" not in served.output(), served.output()


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


@pytest.mark.parametrize("variant", ["legacy", "data-key"])
def test_happy_auth_login_through_the_phone_link(
    happy_cli: Path, tmp_path: Path, variant: str
) -> None:
    port = sp.free_port()
    with sp.serve(["--db", f"sqlite:///{tmp_path / 'h.db'}"], tmp_path, port=port) as served:
        app = App(served.url)
        home = tmp_path / "user" / ".happy"
        with cleaned_up(home):
            login = Terminal(
                [str(happy_cli), "auth", "login"],
                {**cli_environ(home, served.url), "TERM": "xterm", "COLUMNS": "120"},
            )
            try:
                login.expect(rb"How would you like to authenticate")
                login.type(b"1")  # the mobile app
                link = login.expect(rb"happy://terminal\?([A-Za-z0-9_-]+)").group(1)
                key = base64.urlsafe_b64decode(link + b"=" * (-len(link) % 4))
                # what the phone shares: the account secret, or (v2) 0x00 + a content key
                content_key = os.urandom(32)
                payload = app.secret if variant == "legacy" else b"\0" + content_key
                approved = httpx.post(
                    served.url + "/v1/auth/response",
                    json={"publicKey": b64(key), "response": phone_answer(key, payload)},
                    headers={"Authorization": f"Bearer {app.token}"},
                )
                assert approved.json() == {"success": True}, approved.text
                login.expect(rb"Authentication successful")
            finally:
                code = login.close()
            assert code == 0, login.seen[-2000:]
        saved = json.loads((home / "access.key").read_text())
        assert saved["token"], saved
        if variant == "legacy":
            assert base64.b64decode(saved["secret"]) == app.secret
        else:
            assert base64.b64decode(saved["encryption"]["publicKey"]) == content_key
        # the token the CLI got is a token of the approving account
        mine = httpx.get(
            served.url + "/v1/account/profile", headers={"Authorization": f"Bearer {app.token}"}
        )
        its = httpx.get(
            served.url + "/v1/account/profile",
            headers={"Authorization": f"Bearer {saved['token']}"},
        )
        assert its.status_code == 200 and its.json()["id"] == mine.json()["id"]


async def test_daemon_comes_back_after_the_server_restarts(happy_cli: Path, tmp_path: Path) -> None:
    """SIGTERM (close code 1012 to every socket), a new process on the same port and database:
    the daemon reconnects by itself, its machine is online again and its methods answer."""
    port = sp.free_port()
    db = f"sqlite:///{tmp_path / 'h.db'}"
    home = tmp_path / "user" / ".happy"
    with cleaned_up(home):
        with sp.serve(["--db", db], tmp_path, port=port) as first:
            app = App(first.url)
            logged_in(app, home)
            env = cli_environ(home, first.url)
            machine = start_daemon(happy_cli, app, env)
            sio = await user_socket(app)
            shell = await rpc(sio, app, f"{machine}:bash", {"command": "echo one", "cwd": "/"})
            assert shell["stdout"] == "one\n"
            await sio.disconnect()
            assert first.terminate() == 0
        with sp.serve(["--db", db], tmp_path, port=port) as second:
            assert online_machine(app, within=60) == machine
            sio = await user_socket(app)
            try:
                shell = await rpc(sio, app, f"{machine}:bash", {"command": "echo two", "cwd": "/"})
                assert shell["stdout"] == "two\n"
            finally:
                await sio.disconnect()
            stopped = happy(happy_cli, env, "daemon", "stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for served in (first, second):
            assert "Traceback" not in served.output(), served.output()
