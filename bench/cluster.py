"""Cluster scenario: per-user fan-out across ``happy-socket serve`` processes (PostgreSQL + Redis).

    python bench/cluster.py --duration 5          # or: python bench/run.py --only cluster

1. **Idle share** (3 processes): user 0 floods on process 0 (sender and receiver there); users
   1 and 2 each hold an app socket on processes 1 and 2 and send nothing. Each process's CPU
   during the flood, and the idle processes' CPU as a share of the busy one's. Run with the
   per-user fan-out (``fanout``) and with python-socketio's one-channel Redis manager
   (``one-channel``, what happy-socket used before; forced by hiding an interface name from
   the compat check, which makes the app fall back to it).
2. **1 → 2 → 3 processes**: N users each flooding on their own process at once; messages
   delivered per second in all, and CPU per delivered message.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from run import (
    LOAD,
    REDIS,
    Server,
    cpu_seconds,
    free_port,
    hs_argv,
    issue_tokens,
    load,
    machine,
    pg_create,
    pg_drop,
)

LEGACY = (
    "import sys; import happy_socket.compat.socketio as c; "
    "c.PUBSUB_INTERFACE += ('_one_channel',); from happy_socket.cli import main; main()"
)


def start(n: int, db: str, secret: str, work: Path, legacy: bool) -> list[Server]:
    servers = []
    for i in range(n):
        port = free_port()
        argv = hs_argv(port, db, secret, REDIS)
        if legacy:
            argv = [sys.executable, "-c", LEGACY, *argv[1:]]
        servers.append(Server(f"p{i}", argv, port, work / f"c{n}-{i}-{legacy}.log"))
    for s in servers:
        s.wait_ready()
    return servers


def session(url: str, token: str) -> str:
    r = httpx.post(
        url + "/v1/sessions",
        json={"tag": "bench", "metadata": "m"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    r.raise_for_status()
    return str(r.json()["session"]["id"])


def flood_config(url: str, token: str, sid: str, duration_ms: int) -> dict[str, Any]:
    return {
        "scenario": "messages-flood",
        "durationMs": duration_ms,
        "senders": [{"url": url, "token": token, "sessionId": sid}],
        "receiver": {"url": url, "token": token},
    }


def idle_share(
    db: str, secret: str, tokens: dict[str, str], work: Path, legacy: bool, ms: int
) -> dict[str, Any]:
    servers = start(3, db, secret, work, legacy)
    try:
        sid = session(servers[0].url, tokens["u0"])
        holders_config = {
            "scenario": "connect",
            "urls": [servers[1].url, servers[2].url],
            "tokens": [tokens["u1"], tokens["u2"]],
            "count": 2,
        }
        holders = subprocess.Popen(
            ["node", str(LOAD), json.dumps(holders_config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holders.stdout is not None and holders.stdin is not None
        holders.stdout.readline()  # {"ready": ...}: users 1 and 2 hold a socket each
        before = [cpu_seconds(s.proc.pid) for s in servers]
        result = load(flood_config(servers[0].url, tokens["u0"], sid, ms))
        used = [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before, strict=True)]
        holders.stdin.write("\n")
        holders.stdin.flush()
        holders.wait(10)
        received = result.get("received") or 0
        return {
            "perSecond": result.get("perSecond"),
            "received": received,
            "cpuS": [round(u, 2) for u in used],
            "busyCpuUsPerMsg": round(used[0] * 1e6 / received, 1) if received else None,
            "idleShareOfBusy": [round(100 * u / used[0], 1) for u in used[1:]] if used[0] else None,
        }
    finally:
        for s in servers:
            s.stop()


def scaling(
    n: int, db: str, secret: str, tokens: dict[str, str], work: Path, ms: int
) -> dict[str, Any]:
    servers = start(n, db, secret, work, False)
    try:
        configs = [
            flood_config(s.url, tokens[f"u{i}"], session(s.url, tokens[f"u{i}"]), ms)
            for i, s in enumerate(servers)
        ]
        results: list[dict[str, Any]] = [{} for _ in configs]
        before = [cpu_seconds(s.proc.pid) for s in servers]

        def run(i: int) -> None:
            results[i] = load(configs[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        used = [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before, strict=True)]
        received = sum(r.get("received") or 0 for r in results)
        return {
            "perSecond": round(sum(r.get("perSecond") or 0 for r in results)),
            "received": received,
            "cpuS": [round(u, 2) for u in used],
            "cpuUsPerMsg": round(sum(used) * 1e6 / received, 1) if received else None,
            "errors": [r["error"] for r in results if "error" in r],
        }
    finally:
        for s in servers:
            s.stop()


def run_all(duration: float) -> dict[str, Any]:
    ms = int(duration * 1000)
    secret = secrets.token_hex(16)
    name = f"hs_bench_cluster_{int(time.time())}_{os.getpid()}"
    db = pg_create(name)
    out: dict[str, Any] = {}
    try:
        # fresh users for every run: each flood restarts its localIds at f0
        runs = 5
        users = [f"r{k}-u{i}" for k in range(runs) for i in range(3)]
        issued = issue_tokens(db, secret, users)
        tokens = [{f"u{i}": issued[f"r{k}-u{i}"] for i in range(3)} for k in range(runs)]
        with tempfile.TemporaryDirectory(prefix="hs-cluster-") as tmp:
            work = Path(tmp)
            for k, legacy in enumerate((False, True)):
                label = "idle share, " + ("one-channel" if legacy else "fanout")
                out[label] = idle_share(db, secret, tokens[k], work, legacy, ms)
                print(label, out[label], flush=True)
            for n in (1, 2, 3):
                out[f"{n} processes"] = scaling(n, db, secret, tokens[1 + n], work, ms)
                print(f"{n} processes", out[f"{n} processes"], flush=True)
    finally:
        pg_drop(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per flood")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    results = run_all(args.duration)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "cluster": results}, indent=2))


if __name__ == "__main__":
    main()
