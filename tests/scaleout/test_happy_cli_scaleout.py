"""The real happy CLI's daemon on one process, the app on another (PostgreSQL + Redis).

The daemon and the sessions it spawns talk to process A; the app's socket and HTTP requests go
to process B: RPC calls cross processes through Redis, and so do the session's messages and
updates (tests/e2e/happy_cli.py has the app's side).
"""

from __future__ import annotations

from pathlib import Path

from ..e2e.happy_cli import App, daemon_in_use
from ..e2e.node import require_happy_cli
from .conftest import ClusterFactory


async def test_daemon_on_one_process_app_on_the_other(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    cli = require_happy_cli()
    c = await cluster(2, grace=5.0)
    on_a = App(c.processes[0].url)
    await daemon_in_use(cli, on_a, on_a.on(c.processes[1].url), tmp_path)
