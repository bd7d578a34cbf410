"""Smoke test: the walk-through client against a real server with every installed plugin."""

from __future__ import annotations

from typing import Any

from examples.client_walkthrough import walkthrough


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
