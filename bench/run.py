"""Run every benchmark scenario against the relay, SQLite and PostgreSQL + Redis; print a table.

    python bench/run.py                      # everything (a few minutes)
    python bench/run.py --only relay,sqlite  # some targets
    python bench/run.py --skip-connections --duration 2
    python bench/run.py --only cluster       # 3 processes: per-user fan-out (bench/cluster.py)

Targets: ``relay`` (bench/relay.py, no database: the ceiling), ``sqlite`` (one
``happy-socket serve`` on a fresh SQLite file), ``pg`` (two ``happy-socket serve`` processes
on a fresh PostgreSQL database + Redis; senders/holders on one, receivers/callers on the
other). Everything listens on 127.0.0.1 only; every server started here is stopped (SIGTERM,
then SIGKILL) and the PostgreSQL database dropped when the run ends. Results are also written
as JSON (``--json``, default bench/results.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
LOAD = BENCH / "load.mjs"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/13"
CONNECTION_USERS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_server_cpu(result: dict[str, Any], servers: list[Server], before: list[float]) -> None:
    """Add ``serverCpuUsPerOp``: the servers' CPU time (all processes) per operation."""
    # messages received, requests answered, or successful + mismatched racing writes
    ops = (
        result.get("received")
        or result.get("n")
        or (result.get("successes", 0) + result.get("mismatches", 0))
    )
    if not ops or "count" in result:
        return
    used = sum(cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before, strict=True))
    result["serverCpuUsPerOp"] = round(used * 1e6 / ops, 1)


class Server:
    """A server process on 127.0.0.1:port, stopped by :meth:`stop`."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout} s")

    @property
    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def hs_argv(port: int, db: str, secret: str, redis: str | None = None) -> list[str]:
    argv = [str(Path(sys.executable).parent / "happy-socket"), "serve"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--db", db, "--secret", secret]
    argv += ["--log-level", "warning", "--rpc-grace", "0"]
    if redis:
        argv += ["--redis", redis]
    return argv


def issue_tokens(db: str, secret: str, users: list[str]) -> dict[str, str]:
    """Create the accounts (and the schema) through the library API; return their tokens."""
    from happy_socket import Settings, create_app

    async def main() -> dict[str, str]:
        app = create_app(Settings(db=db, secret=secret))
        await app.startup()
        try:
            return {u: await app.issue_token(u) for u in users}
        finally:
            await app.shutdown()

    return asyncio.run(main())


def load(config: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run one load.mjs scenario; its JSON result."""
    out = subprocess.run(
        ["node", str(LOAD), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        return {"error": (out.stderr or out.stdout)[-500:]}


class Target:
    """One system under test: its servers, users, sessions and machine."""

    def __init__(self, name: str, servers: list[Server], tokens: dict[str, str]) -> None:
        self.name, self.servers, self.tokens = name, servers, tokens
        self.sessions: list[str] = []
        self.machine = "bench-machine"

    @property
    def a(self) -> Server:
        return self.servers[0]

    @property
    def b(self) -> Server:
        return self.servers[-1]

    def setup(self, main: str) -> None:
        token = self.tokens[main]
        headers = {"Authorization": f"Bearer {token}"}
        if self.name == "relay":
            self.sessions = [f"s{i}" for i in range(5)]
            return
        for i in range(5):
            r = httpx.post(
                self.a.url + "/v1/sessions",
                json={"tag": f"bench-{i}", "metadata": "m"},
                headers=headers,
                timeout=10,
            )
            r.raise_for_status()
            self.sessions.append(r.json()["session"]["id"])
        r = httpx.post(
            self.a.url + "/v1/machines",
            json={"id": self.machine, "metadata": "m"},
            headers=headers,
            timeout=10,
        )
        r.raise_for_status()


def scenarios(t: Target, main: str, duration_ms: int) -> Iterator[tuple[str, dict[str, Any]]]:
    token = t.tokens[main]
    senders = [
        {"url": (t.a if i % 2 == 0 else t.b).url, "token": token, "sessionId": s}
        for i, s in enumerate(t.sessions[:4])
    ]
    receiver = {"url": t.b.url, "token": token}
    common = {"durationMs": duration_ms}
    yield (
        "messages flood",
        {**common, "scenario": "messages-flood", "senders": senders, "receiver": receiver},
    )
    yield (
        "messages 1 in flight",
        {**common, "scenario": "messages-latency", "senders": senders, "receiver": receiver},
    )
    if t.name != "relay":  # HTTP routes: the relay has none
        v3 = {**common, "url": t.a.url, "token": token, "sessionId": t.sessions[0]}
        yield "POST /v3 batch 1", {**v3, "scenario": "v3-post", "batch": 1}
        yield "POST /v3 batch 20", {**v3, "scenario": "v3-post", "batch": 20}
        yield "GET /v3 paging", {**v3, "scenario": "v3-get", "limit": 100}
    meta = {"token": token, "sessionId": t.sessions[4]}
    yield "update-metadata seq", {**common, "scenario": "metadata-seq", "url": t.a.url, **meta}
    urls = [s.url for s in t.servers]
    yield "update-metadata 8 racing", {**common, "scenario": "metadata-race", "urls": urls, **meta}
    holder = {"url": t.a.url, "token": token, "machineId": t.machine}
    caller = {"url": t.b.url, "token": token}
    yield (
        "rpc seq",
        {**common, "scenario": "rpc", "holder": holder, "caller": caller, "inflight": 1},
    )
    yield (
        "rpc 64 in flight",
        {**common, "scenario": "rpc", "holder": holder, "caller": caller, "inflight": 64},
    )


def connections(t: Target, count: int) -> dict[str, Any]:
    """Open ``count`` sockets spread over the target's servers; time and RSS."""
    tokens = [v for k, v in t.tokens.items() if k.startswith("bench-c")] or list(t.tokens.values())
    idle = [s.rss for s in t.servers]
    config = {
        "scenario": "connect",
        "urls": [s.url for s in t.servers],
        "tokens": tokens,
        "count": count,
    }
    proc = subprocess.Popen(
        ["node", str(LOAD), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready: dict[str, Any] = json.loads(proc.stdout.readline() or '{"error": "no output"}')
        time.sleep(1.0)
        ready["rssIdleMb"] = idle
        ready["rssOpenMb"] = [s.rss for s in t.servers]
        proc.stdin.write("close\n")
        proc.stdin.flush()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(1.0)
    return ready


def pg_create(name: str) -> str:
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def pg_drop(name: str) -> None:
    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", name],
        check=False,
    )


@contextlib.contextmanager
def target(name: str, work: Path) -> Iterator[Target]:
    """Start the servers of ``name`` on fresh storage; stop them (and drop the DB) after."""
    servers: list[Server] = []
    secret = secrets.token_hex(16)
    users = ["bench-main"] + [f"bench-c{i}" for i in range(CONNECTION_USERS)]
    pg_name = None
    try:
        if name == "relay":
            port = free_port()
            argv = [sys.executable, str(BENCH / "relay.py"), "--port", str(port)]
            servers.append(Server("relay", argv, port, work / "relay.log"))
            tokens = {u: u for u in users}
        elif name == "sqlite":
            db = f"sqlite:///{work / 'bench.db'}"
            tokens = issue_tokens(db, secret, users)
            port = free_port()
            servers.append(Server("sqlite", hs_argv(port, db, secret), port, work / "sqlite.log"))
        else:
            pg_name = f"hs_bench_{int(time.time())}_{os.getpid()}"
            db = pg_create(pg_name)
            tokens = issue_tokens(db, secret, users)
            for i in range(2):
                port = free_port()
                argv = hs_argv(port, db, secret, REDIS)
                servers.append(Server(f"pg{i}", argv, port, work / f"pg{i}.log"))
        for s in servers:
            s.wait_ready()
        t = Target(name, servers, tokens)
        t.setup("bench-main")
        yield t
    finally:
        for s in servers:
            s.stop()
        if pg_name:
            pg_drop(pg_name)


def machine() -> dict[str, str]:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    return {
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
        "mem": sh("free -h | awk '/^Mem:/ {print $2}'"),
        "python": platform.python_version(),
        "node": sh("node --version"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": sh(f"git -C {BENCH} rev-parse --short HEAD"),
    }


def cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERR " + str(result["error"])[:40]
    if "count" in result:
        rss = "+".join(f"{x:.0f}" for x in result.get("rssOpenMb", []))
        idle = "+".join(f"{x:.0f}" for x in result.get("rssIdleMb", []))
        return (
            f"{result['open']}/{result['count']} in {result['seconds']:.2f}s, RSS {idle}->{rss} MB"
        )
    parts = [f"{result.get('perSecond', 0):,}/s"]
    if result.get("p50Ms") is not None:
        parts.append(f"p50 {result['p50Ms']:.2f} p99 {result['p99Ms']:.2f} ms")
    if result.get("serverCpuUsPerOp"):
        parts.append(f"{result['serverCpuUsPerOp']:.0f} us CPU/op")
    if "consistent" in result:
        parts.append("final ok" if result["consistent"] else "FINAL MISMATCH")
    bad = result.get("errors") or result.get("lost")
    if bad:
        parts.append(f"{bad} err/lost")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="relay,sqlite,pg", help="comma-separated targets")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per scenario")
    parser.add_argument("--connections", default="2000,10000", help="socket counts ('' = skip)")
    parser.add_argument("--skip-connections", action="store_true")
    parser.add_argument("--skip-scenarios", action="store_true", help="only the connection counts")
    parser.add_argument(
        "--scenarios", default="", help="comma-separated label filter, e.g. flood,seq"
    )
    parser.add_argument("--json", default=str(BENCH / "results.json"))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    counts = [] if args.skip_connections else [int(c) for c in args.connections.split(",") if c]
    wanted = [w for w in args.scenarios.split(",") if w]
    results: dict[str, dict[str, Any]] = {}
    if "cluster" in names:  # per-user fan-out on 3 processes, and 1 -> 2 -> 3 (bench/cluster.py)
        import cluster

        names.remove("cluster")
        results["cluster"] = cluster.run_all(max(args.duration, 5.0))
    with tempfile.TemporaryDirectory(prefix="hs-bench-") as tmp:
        for name in names:
            results[name] = {}
            if not args.skip_scenarios:
                with target(name, Path(tmp)) as t:
                    for label, config in scenarios(t, "bench-main", int(args.duration * 1000)):
                        if wanted and not any(w in label for w in wanted):
                            continue
                        before = [cpu_seconds(s.proc.pid) for s in t.servers]
                        results[name][label] = r = load(config)
                        with_server_cpu(r, t.servers, before)
                        print(f"{name:7} {label:26} {cell(r)}", flush=True)
            for count in counts:  # fresh servers: idle RSS without the scenarios' garbage
                with target(name, Path(tmp)) as t:
                    label = f"{count} connections"
                    results[name][label] = r = connections(t, count)
                    print(f"{name:7} {label:26} {cell(r)}", flush=True)
    info = machine()
    Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print_table(results, info)


def print_table(results: dict[str, dict[str, Any]], info: dict[str, str]) -> None:
    labels = list(dict.fromkeys(label for r in results.values() for label in r))
    names = list(results)
    print(
        f"\n{info['date']}  {info['nproc']} cores {info['cpu']}  {info['mem']} RAM  commit {info['commit']}"
    )
    print("| scenario | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    relay = results.get("relay", {})
    for label in labels:
        row = []
        for n in names:
            r = results[n].get(label)
            text = "—" if r is None else cell(r)
            base = relay.get(label, {}).get("perSecond")
            if r and n != "relay" and base and r.get("perSecond") and "count" not in r:
                text += f" ({100 * r['perSecond'] / base:.0f}% of relay)"
            row.append(text)
        print(f"| {label} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
