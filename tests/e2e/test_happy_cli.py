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

import base64
import json
import os
from pathlib import Path

import httpx
import pytest

from . import serve_process as sp
from .happy_cli import (
    App,
    Terminal,
    b64,
    cleaned_up,
    cli_environ,
    daemon_in_use,
    happy,
    logged_in,
    online_machine,
    phone_answer,
    rpc,
    start_daemon,
    user_socket,
)
from .node import require_happy_cli


@pytest.fixture
def happy_cli() -> Path:
    return require_happy_cli()


async def test_daemon_registers_runs_a_command_and_starts_a_session(
    happy_cli: Path, tmp_path: Path
) -> None:
    port = sp.free_port()
    db = f"sqlite:///{tmp_path / 'h.db'}"
    with sp.serve(["--db", db], tmp_path, port=port) as served:
        app = App(served.url)
        await daemon_in_use(happy_cli, app, app, tmp_path)
        assert "Traceback" not in served.output(), served.output()


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
