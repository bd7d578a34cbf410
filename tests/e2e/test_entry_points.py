"""A third-party plugin distribution (tests/fixtures/echo_plugin) found through its entry point.

It is pip-installed once per session into a temporary directory that only the subprocesses
see (PYTHONPATH), so the in-process servers of other tests never load it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from happy_socket.dispatch import UNKNOWN_EVENT_ACK

from . import serve_process as sp
from .node import results

FIXTURE = Path(__file__).parent.parent / "fixtures" / "echo_plugin"
SECRET = "entry-points-secret-0123456789abcdef012"


def _pip_install(source: Path, target: Path, *, isolated: bool) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    command += [str(target), str(source)]
    if not isolated:
        command.insert(4, "--no-build-isolation")
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="session")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed ``happy-socket-echo`` distribution."""
    work = tmp_path_factory.mktemp("echo-plugin")
    source = work / "src"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    done = _pip_install(source, target, isolated=False)
    if done.returncode != 0:  # setuptools without bdist_wheel here: let pip fetch a backend
        shutil.rmtree(target, ignore_errors=True)
        done = _pip_install(source, target, isolated=True)
    assert done.returncode == 0, done.stderr
    assert (target / "happy_socket_echo" / "__init__.py").exists()
    return target


def plugin_rows(*args: str, site: Path | None) -> dict[str, dict[str, Any]]:
    """``happy-socket plugins --json ARGS`` by plugin name."""
    done = sp.run("plugins", "--json", *args, pythonpath=site)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def event_plugins(*args: str, site: Path | None) -> dict[str, str]:
    """``happy-socket events ARGS`` as {event: plugin}."""
    done = sp.run("events", *args, pythonpath=site)
    assert done.returncode == 0, done.stderr
    return dict(line.split("\t")[:2] for line in done.stdout.splitlines() if line.strip())


def test_plugins_lists_the_installed_distribution(echo_site: Path) -> None:
    text = sp.run("plugins", pythonpath=echo_site)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    at = lines.index("echo 1.2.3 (enabled)")
    assert lines[at + 1].split() == ["events:", "echo-test"]
    assert lines[at + 2].split() == ["routes:", "-"]
    assert event_plugins(site=echo_site)["echo-test"] == "echo"


def test_without_leaves_it_out_of_the_listings(echo_site: Path) -> None:
    rows = plugin_rows("--without", "echo", site=echo_site)
    assert rows["echo"] == {
        "name": "echo",
        "version": "1.2.3",
        "enabled": False,
        "events": [],
        "routes": [],
    }
    assert rows["ping"]["enabled"] is True
    without = event_plugins("--without", "echo", site=echo_site)
    assert "echo-test" not in without
    assert without["ping"] == "ping"


def test_not_installed_means_not_served(echo_site: Path) -> None:
    assert "echo-test" not in event_plugins(site=None)


async def test_serve_serves_it_and_without_leaves_it_out(echo_site: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'echo.db'}"
    done = sp.run("token", "alice", "--db", db, "--secret", SECRET)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()

    def calls(echo_wait_ms: int) -> list[dict[str, Any]]:
        echo: dict[str, Any] = {"op": "emit", "event": "echo-test", "ack": True}
        echo["timeoutMs"] = echo_wait_ms
        return [
            {"op": "connect", "auth": {"token": token}},
            {**echo, "args": [{"hello": ["world", 1, None]}]},
            {**echo, "args": ["text"]},
            echo,  # only a callback
            {"op": "emit", "event": "ping", "ack": True},
        ]

    args = ["--db", db, "--secret", SECRET]
    with sp.serve(args, tmp_path, port=sp.free_port(), pythonpath=echo_site) as served:
        connected, obj, text, bare, pong = await results(served.url, calls(5000))
        assert connected["connected"] is True
        assert obj["ack"] == {"ok": True, "echo": {"hello": ["world", 1, None]}}
        assert text["ack"] == {"ok": True, "echo": "text"}
        assert bare["ack"] == {"ok": True, "echo": None}
        assert pong["ack"] == {}
        assert served.terminate() == 0

    without = [*args, "--without", "echo"]
    with sp.serve(without, tmp_path, port=sp.free_port(), pythonpath=echo_site) as served:
        # a call nobody serves is answered at once with the unknown-event ack
        connected, obj, text, bare, pong = await results(served.url, calls(5000))
        assert connected["connected"] is True
        for answer in (obj, text, bare):
            assert answer["ack"] == UNKNOWN_EVENT_ACK
        assert pong["ack"] == {}  # the other plugins are still served
        assert served.terminate() == 0


def test_without_an_unknown_name_is_one_sentence(echo_site: Path, tmp_path: Path) -> None:
    done = sp.run(
        "serve",
        "--port",
        str(sp.free_port()),
        "--db",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--without",
        "nope",
        pythonpath=echo_site,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and lines[0].endswith("."), lines[0]
    assert "'nope'" in lines[0] and "echo" in lines[0]
