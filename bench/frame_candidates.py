"""Issue 17: the frame path's candidates, A/B in one run, interleaved, medians of N rounds.

    python bench/frame_candidates.py                          # every candidate, 3 rounds
    python bench/frame_candidates.py --only lean,lean+fast --rounds 3 --duration 3
    python bench/frame_candidates.py --only sqlite,sqlite+fast --counts 2000

Candidates (each a fresh server per round and per connection count):

- ``sansio``, ``websockets``, ``wsproto``: bench/relay.py under uvicorn with that websocket
  implementation; ``lean``: the relay with happy-socket's uvicorn protocol (what ``serve``
  runs); ``lean+fast``: plus happy_socket.transport (engine.io's websocket loop replaced);
  ``granian``: the relay under granian (ASGI, 1 worker; needs ``granian`` importable, e.g.
  ``pip install --target /tmp/cand-site granian`` and ``--extra-path /tmp/cand-site``).
- ``sqlite``: ``happy-socket serve`` on SQLite; ``sqlite+fast``: the same through
  bench/serve_fast.py (the transport installed).
- ``--fast-path TREE``: the ``+fast`` candidates, and ``lean+new`` / ``sqlite+new`` (the
  same as ``lean`` / ``sqlite``), import happy_socket from TREE: an A/B of two versions of the
  code in one run (the others use PYTHONPATH; ``lean+fast0`` / ``sqlite+fast0`` are the
  transport from the PYTHONPATH tree).

Scenarios: rpc seq, rpc 64 in flight, messages flood (+ update-metadata seq on sqlite), then
N connections (RSS = VmRSS of the server and its children). Prints every run and a table of
medians; writes bench/frame_candidates.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run as bench  # bench/run.py

BENCH = Path(__file__).resolve().parent
RELAY = {
    "sansio": ["--ws", "websockets-sansio"],
    "websockets": ["--ws", "websockets"],
    "wsproto": ["--ws", "wsproto"],
    "lean": ["--ws", "lean"],
    "lean+fast": ["--ws", "lean", "--transport", "fast"],
    "lean+fast0": ["--ws", "lean", "--transport", "fast"],  # the base tree's transport
    "lean+new": ["--ws", "lean"],  # the --fast-path tree's protocol, engine.io's own loop
    "granian": ["--server", "granian"],
}
USERS = ["bench-main"] + [f"bench-c{i}" for i in range(bench.CONNECTION_USERS)]


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            out += tree(int(child))
    return out


def tree_rss(pid: int) -> float:
    return round(sum(bench.rss_mb(p) for p in tree(pid)), 1)


def tree_cpu(pid: int) -> float:
    return sum(bench.cpu_seconds(p) for p in tree(pid))


class Candidate:
    """A server started for one measurement; ``stop`` ends it."""

    def __init__(self, name: str, work: Path, env: dict[str, str], rnd: int = 0) -> None:
        self.name = name
        port = bench.free_port()
        if name in RELAY:
            argv = [sys.executable, str(BENCH / "relay.py"), "--port", str(port), *RELAY[name]]
            self.tokens = {u: u for u in USERS}
        else:
            db = f"sqlite:///{work / (name.replace('+', '_') + f'-{rnd}-{os.urandom(4).hex()}.db')}"
            secret = secrets.token_hex(16)
            self.tokens = bench.issue_tokens(db, secret, USERS)
            # 10,000 sockets over 20 users: above the default 100 sockets per user
            argv = [*bench.hs_argv(port, db, secret), "--max-sockets-per-user", "1000"]
            if "+fast" in name:
                argv = [sys.executable, str(BENCH / "serve_fast.py"), *argv[1:]]
        os.environ.update(env)
        if name.endswith(("+fast", "+new")) and "FAST_PYTHONPATH" in env:  # its own tree
            os.environ["PYTHONPATH"] = env["FAST_PYTHONPATH"]
        self.server = bench.Server(name, argv, port, work / f"{name}.log")
        self.server.wait_ready()
        self.target = bench.Target(
            "relay" if name in RELAY else "sqlite", [self.server], self.tokens
        )
        self.target.setup("bench-main")

    def stop(self) -> None:
        self.server.stop()


def scenarios(c: Candidate, duration_ms: int) -> list[tuple[str, dict[str, Any]]]:
    wanted = ("rpc seq", "rpc 64 in flight", "messages flood", "update-metadata seq")
    return [
        (label, cfg)
        for label, cfg in bench.scenarios(c.target, "bench-main", duration_ms)
        if label in wanted
    ]


def measure(
    c: Candidate, label: str, config: dict[str, Any], profile: Path | None = None
) -> dict[str, Any]:
    spy = None
    if profile is not None:  # py-spy on the server for this scenario (layers: handshake_profile)
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(c.server.proc.pid)]
        argv += ["-r", "250", "-f", "raw", "-o", str(profile)]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    before = tree_cpu(c.server.proc.pid)
    r = bench.load(config)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    ops = r.get("received") or r.get("n")
    if ops:
        r["serverCpuUsPerOp"] = round((tree_cpu(c.server.proc.pid) - before) * 1e6 / ops, 1)
    return r


def connect(c: Candidate, count: int) -> dict[str, Any]:
    pid = c.server.proc.pid
    cpu = tree_cpu(pid)
    c.server.__class__ = type(
        "TreeServer", (bench.Server,), {"rss": property(lambda s: tree_rss(pid))}
    )
    r = bench.connections(c.target, count)
    r["serverCpuS"] = round(tree_cpu(pid) - cpu, 2)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join([*RELAY, "sqlite", "sqlite+fast"]))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--counts", default="2000", help="connection counts per round ('' = none)")
    parser.add_argument(
        "--once", default="10000", help="connection counts measured in round 1 only"
    )
    parser.add_argument("--skip-scenarios", action="store_true")
    parser.add_argument("--extra-path", default="", help="prepended to PYTHONPATH (granian)")
    parser.add_argument(
        "--fast-path",
        default="",
        help="PYTHONPATH of the '+fast' candidates (another tree of happy_socket: A/B of code)",
    )
    parser.add_argument(
        "--profile", default="", help="py-spy the scenario whose label contains this (round 1)"
    )
    parser.add_argument("--keep", default="", help="folder for the raw profiles")
    parser.add_argument("--json", default=str(BENCH / "frame_candidates.json"))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    env = {}
    if args.extra_path:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [args.extra_path, os.environ.get("PYTHONPATH", "")] if p
        )
    base = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = base
    if args.fast_path:
        env["FAST_PYTHONPATH"] = os.pathsep.join(p for p in [args.fast_path, base] if p)
    counts = [int(x) for x in args.counts.split(",") if x]
    once = [int(x) for x in args.once.split(",") if x]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
    with tempfile.TemporaryDirectory(prefix="hs-frames-") as tmp:
        for rnd in range(args.rounds):
            for name in names:  # interleaved: every candidate once per round
                if not args.skip_scenarios:
                    c = Candidate(name, Path(tmp), env, rnd)
                    try:
                        for label, config in scenarios(c, int(args.duration * 1000)):
                            profile = None
                            if args.profile and args.profile in label and rnd == 0:
                                profile = Path(args.keep or tmp) / f"{name}-{label}.txt"
                            r = measure(c, label, config, profile)
                            if profile is not None and profile.exists():
                                print_layers(name, label, profile)
                            runs[name].setdefault(label, []).append(r)
                            print(f"r{rnd} {name:12} {label:22} {bench.cell(r)}", flush=True)
                    finally:
                        c.stop()
                for count in counts + (once if rnd == 0 else []):
                    c = Candidate(name, Path(tmp), env, rnd)
                    try:
                        r = connect(c, count)
                    finally:
                        c.stop()
                    label = f"{count} connections"
                    runs[name].setdefault(label, []).append(r)
                    print(
                        f"r{rnd} {name:12} {label:22} {bench.cell(r)} cpu {r.get('serverCpuS')} s",
                        flush=True,
                    )
    info = bench.machine()
    info["load"] = Path("/proc/loadavg").read_text().split()[0]
    Path(args.json).write_text(json.dumps({"machine": info, "runs": runs}, indent=2) + "\n")
    print_medians(runs, info)


def print_layers(name: str, label: str, profile: Path) -> None:
    import handshake_profile

    total, counts = handshake_profile.summarize(profile)
    print(f"\n{total} main-thread samples: {name}, {label}\n\n| layer | share |\n|---|---|")
    for layer, n in counts.most_common():
        print(f"| {layer} | {100 * n / max(total, 1):.1f}% |")
    print(flush=True)


def med(rs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in rs if isinstance(r.get(key), int | float)]
    return statistics.median(xs) if xs else None


def print_medians(runs: dict[str, dict[str, list[dict[str, Any]]]], info: dict[str, str]) -> None:
    print(
        f"\n{info['date']}  {info['nproc']} cores {info['cpu']}  commit {info['commit']}  load {info['load']}"
    )
    labels = list(dict.fromkeys(label for r in runs.values() for label in r))
    print("| candidate | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for name, by_label in runs.items():
        row = []
        for label in labels:
            rs = by_label.get(label, [])
            if not rs:
                row.append("—")
            elif "connections" in label:
                secs, rss, cpu = (
                    med(rs, "seconds"),
                    [r.get("rssOpenMb", [0])[0] for r in rs],
                    med(rs, "serverCpuS"),
                )
                bad = sum(r.get("count", 0) - r.get("open", 0) for r in rs)
                row.append(
                    f"{secs:.2f} s, {statistics.median(rss):.0f} MB, CPU {cpu} s"
                    + (f", {bad} not open" if bad else "")
                )
            else:
                per, p50, cpu = med(rs, "perSecond"), med(rs, "p50Ms"), med(rs, "serverCpuUsPerOp")
                bad = sum((r.get("errors") or 0) + (r.get("lost") or 0) for r in rs) + sum(
                    "error" in r for r in rs
                )
                row.append(
                    f"{per:,.0f}/s, p50 {p50} ms, {cpu} µs CPU" + (f", {bad} err" if bad else "")
                )
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
