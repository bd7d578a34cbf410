"""Smoke test: the walk-through client against a real server with every installed plugin."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from examples.client_walkthrough import walkthrough

SCRIPT = Path(__file__).with_name("client_walkthrough.py")


async def test_walkthrough_runs_end_to_end(server: Any) -> None:
    lines: list[str] = []
    result = await walkthrough(server.url, log=lines.append)
    assert result["sent"]["result"] == "success" and result["sent"]["seq"] == 1
    assert result["message"]["body"]["message"]["content"] == {
        "t": "encrypted",
        "c": "hello (encrypted)",
    }
    assert result["updated"] == {"result": "success", "version": 1, "metadata": "renamed"}
    assert result["rpc"] == {"ok": True, "result": {"stdout": "ran ls"}}
    assert len(lines) == 4


async def test_walkthrough_runs_again_against_the_same_server(server: Any) -> None:
    """Examples are rerunnable: a second run (a new account) must not trip on the first's
    machine id (ids are unique across accounts: 409)."""
    first = await walkthrough(server.url, log=lambda _: None)
    second = await walkthrough(server.url, log=lambda _: None)
    for result in (first, second):
        assert result["rpc"] == {"ok": True, "result": {"stdout": "ran ls"}}
        assert result["updated"] == {"result": "success", "version": 1, "metadata": "renamed"}


async def test_the_script_runs_twice_from_the_command_line(server: Any) -> None:
    """``python examples/client_walkthrough.py URL``, twice, as a user would."""
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            server.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, (out + err).decode()
        assert json.loads(out.decode().splitlines()[-1]) == {
            "ok": True,
            "result": {"stdout": "ran ls"},
        }
