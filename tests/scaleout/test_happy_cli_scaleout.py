"""The real happy CLI's daemon on one process, the app on another (PostgreSQL + Redis).

The daemon and the sessions it spawns talk to process A; the app's socket and HTTP requests go
to process B: RPC calls cross processes through Redis, and so do the session's messages and
updates (tests/e2e/happy_cli.py has the app's side).
"""

from __future__ import annotations

from pathlib import Path

from ..e2e.happy_cli import (
    App,
    cleaned_up,
    cli_environ,
    happy,
    logged_in,
    start_daemon,
    use_the_machine,
    user_socket,
)
from ..e2e.node import require_happy_cli
from .conftest import ClusterFactory


async def test_daemon_on_one_process_app_on_the_other(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    cli = require_happy_cli()
    c = await cluster(2, grace=5.0)
    on_a = App(c.processes[0].url)
    on_b = on_a.on(c.processes[1].url)
    home = tmp_path / "user" / ".happy"
    logged_in(on_a, home)
    env = cli_environ(home, on_a.url)
    with cleaned_up(home):
        machine = start_daemon(cli, on_b, env)  # online as seen from B
        sio = await user_socket(on_b)
        try:
            await use_the_machine(sio, on_b, machine, tmp_path)
        finally:
            await sio.disconnect()
        stopped = happy(cli, env, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
