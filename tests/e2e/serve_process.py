"""Run the ``happy-socket`` command as a subprocess: one-shot commands and a served process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx


def executable() -> str:
    """The ``happy-socket`` console script of the Python running the tests."""
    beside = Path(sys.executable).parent / "happy-socket"
    if beside.exists():
        return str(beside)
    found = shutil.which("happy-socket")
    if found is None:
        raise AssertionError("the happy-socket command is not installed (pip install -e .)")
    return found


def environ(
    extra: Mapping[str, str] | None = None, pythonpath: Path | None = None
) -> dict[str, str]:
    """The test's environment without HAPPY_SOCKET_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPPY_SOCKET_")}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p
        )
    env.update(extra or {})
    return env


def run(
    *args: str,
    env: Mapping[str, str] | None = None,
    pythonpath: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """``happy-socket ARGS`` to completion, output captured."""
    return subprocess.run(
        [executable(), *args],
        env=environ(env, pythonpath),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """A running ``happy-socket serve`` process."""

    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")

    def wait_healthy(self, within: float = 20) -> None:
        """Block until ``GET /health`` answers 200 (fails when the process exits first)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer /health within {within} s:\n{self.output()}")

    def terminate(self, within: float = 10, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, then the exit code (fails when it takes longer than ``within``)."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"serve ignored SIGTERM for {within} s:\n{self.output()}"
            ) from None


@contextlib.contextmanager
def serve(
    args: Sequence[str],
    tmp_path: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    pythonpath: Path | None = None,
    wait: bool = True,
) -> Iterator[Served]:
    """``happy-socket serve [--port PORT] ARGS`` in ``tmp_path``; killed at the end if still up."""
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    command = [executable(), "serve", *args]
    if port is not None:
        command[2:2] = ["--port", str(port)]
    handle: IO[str]
    with log.open("w") as handle:
        proc = subprocess.Popen(
            command,
            env=environ(env, pythonpath),
            cwd=tmp_path,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    served = Served(proc, port or int((env or {}).get("HAPPY_SOCKET_PORT", 3005)), log)
    try:
        if wait:
            served.wait_healthy()
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
