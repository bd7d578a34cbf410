"""Run the stock-JavaScript-client scenarios in tests/e2e/js from pytest.

``await run_scenario(url, steps)`` runs ``js/scenario.mjs`` with Node (see its header for the
steps) and returns its parsed JSON output. The npm packages are installed with ``npm ci`` on
first use when ``js/node_modules`` is missing. Without node or npm the test is skipped with a
reason on a laptop and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from happy_socket.testing import ci

JS_DIR = Path(__file__).parent / "js"
SCENARIO = JS_DIR / "scenario.mjs"


def _unavailable(reason: str) -> None:
    if ci():
        pytest.fail(f"{reason} and CI=true: the JavaScript client tests must run")
    pytest.skip(reason)


CLI_DIR = Path(__file__).parent / "cli"  # the real happy CLI (npm happy 1.2.5)


@functools.cache
def _prepare(folder: Path = JS_DIR, *needed: str) -> tuple[str | None, str]:
    """(node binary, "") once ``folder``'s npm packages are there, else (None, the reason)."""
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed"
    needed = needed or ("socket.io-client", "tweetnacl")
    if all((folder / "node_modules" / name).exists() for name in needed):
        return node, ""
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not installed"
    # `npm ci` for the client packages; the CLI's lock file is read by `npm install`, since
    # `npm ci --omit=optional` refuses it (its optional platform binaries have no version),
    # and its optional packages (the bundled agents' binaries, 400 MB) are not needed here
    command = ["ci"] if folder == JS_DIR else ["install", "--omit=optional", "--no-save"]
    done = subprocess.run(
        [npm, *command, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return None, f"npm ci in {folder} failed: {done.stderr.strip()[-2000:]}"
    return node, ""


def require_node() -> str:
    """The node binary with the packages installed; skips (laptop) or fails (CI) otherwise."""
    node, reason = _prepare()
    if node is None:
        _unavailable(reason)
    assert node is not None
    return node


def require_happy_cli() -> Path:
    """The real ``happy`` command (installed on first use); skips (laptop) or fails (CI)."""
    node, reason = _prepare(CLI_DIR, ".bin/happy")
    if node is None:
        _unavailable(reason)
    return CLI_DIR / "node_modules" / ".bin" / "happy"


async def run_scenario(
    url: str,
    steps: list[dict[str, Any]],
    *,
    path: str = "/v1/updates",
    timeout_ms: int = 5000,
) -> dict[str, Any]:
    """Run ``steps`` against the server at ``url``; ``{"results": [...], "events": [...]}``."""
    node = require_node()
    scenario = json.dumps({"url": url, "path": path, "timeoutMs": timeout_ms, "steps": steps})
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCENARIO),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(scenario.encode()), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"node scenario did not finish in 30 s: {steps}") from None
    if proc.returncode != 0:
        raise AssertionError(f"node scenario failed ({proc.returncode}): {err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


async def results(url: str, steps: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    """Only the per-step results of :func:`run_scenario`."""
    return list((await run_scenario(url, steps, **kwargs))["results"])
