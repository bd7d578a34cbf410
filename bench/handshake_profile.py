"""Where one connection's server CPU goes: a storm of N handshakes, timed and profiled.

    python bench/handshake_profile.py --count 2000              # happy-socket serve, SQLite
    python bench/handshake_profile.py --target relay --count 2000
    python bench/handshake_profile.py --target sqlite+fast      # bench/serve_fast.py
    python bench/handshake_profile.py --no-profile --rounds 3   # CPU per connection only
    FAST_PYTHONPATH=/tmp/b:/tmp/b/plugins python bench/handshake_profile.py \
        --target sqlite,sqlite+fast --no-profile --rounds 3    # '+fast' runs another tree
    python bench/handshake_profile.py --target sqlite,base --base-path /tmp/b:/tmp/b/plugins \
        --no-profile --rounds 5                                # 'base': serve from another tree

Starts the server on a fresh SQLite file (accounts and tokens through the library API), opens
N websockets with bench/load.mjs (``connect``: 20 users, 500 handshakes in flight) and reads
the server's CPU time (``/proc/PID/stat``) before the storm and once every socket is open:
CPU per connection = that difference / N (the close is not counted). With py-spy (``.venv/bin/
py-spy record -r 1000 -f raw``, attached for the storm only) the samples are grouped by the
innermost frame of a known layer (see LAYERS); the asyncio module's own frames are skipped
so that a task started by engine.io counts for engine.io.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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
PYSPY = Path(sys.executable).parent / "py-spy"
USERS = ["bench-main"] + [f"bench-c{i}" for i in range(bench.CONNECTION_USERS)]
#: (layer, substrings of a frame's file) — the innermost frame that matches names the layer
LAYERS = [
    (
        "auth: token check + account cache (happy_socket.auth, handshake)",
        ["happy_socket/auth", "happy_socket/handshake", "happy_socket/revocation"],
    ),
    (
        "rooms (happy_socket.rooms + manager)",
        ["happy_socket/rooms", "socketio/async_manager", "socketio/base_manager"],
    ),
    ("hooks + plugins (on_connect)", ["happy_socket/plugins", "pluggy/", "plugins/happy_socket_"]),
    ("metrics (prometheus_client)", ["prometheus_client/"]),
    (
        "dispatch: on_connect, accept, environ trim, backpressure",
        [
            "happy_socket/dispatch",
            "happy_socket/backpressure",
            "happy_socket/packets",
            "happy_socket/context",
        ],
    ),
    (
        "uvicorn (HTTP parse, upgrade, ASGI task; with happy-socket's protocol subclasses)",
        ["uvicorn/", "h11/", "httptools/", "happy_socket/compat/uvicorn", "happy_socket/websocket"],
    ),
    ("happy_socket other (transport, lean queues, send queue, embed)", ["happy_socket/"]),
    ("python-socketio (CONNECT packet, namespace, sid)", ["socketio/"]),
    ("engine.io (open packet, socket, queue, tasks)", ["engineio/"]),
    ("websockets (HTTP upgrade parse, accept key, frames)", ["websockets/"]),
    ("JSON (orjson adapter)", ["jsonmod"]),
]
SKIP = ("asyncio/", "contextlib", "functools", "<frozen")


#: (bucket, a substring of any frame) checked before the layers: syscalls and asyncio plumbing
PLUMBING = [
    ("socket writes (send syscalls)", "_SelectorSocketTransport.write "),
    ("accept + transport setup (asyncio)", "_accept_connection"),
    ("task creation (asyncio)", "BaseEventLoop.create_task "),
]


def layer_of(frames: list[str]) -> str:
    leaf = frames[-1]
    if "EpollSelector.select" in leaf or ("select (" in leaf and "selectors" in leaf):
        return "idle (epoll)"
    if "_read_ready__data_received (asyncio" in leaf:
        return "socket reads (recv syscalls)"
    for name, key in PLUMBING:
        if any(key in f for f in frames):
            return name
    for frame in reversed(frames):
        if any(s in frame for s in SKIP):
            continue
        for name, keys in LAYERS:
            if any(k in frame for k in keys):
                return name
    joined = ";".join(frames)
    if "asyncio/" in joined:
        return "event loop (asyncio: callbacks, timers, selector)"
    return "other"


def summarize(path: Path) -> tuple[int, collections.Counter[str]]:
    total, counts = 0, collections.Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any("Thread._bootstrap" in f or "_bootstrap (threading" in f for f in frames[:3]):
            continue
        total += int(n)
        counts[layer_of(frames)] += int(n)
    return total, counts


def hottest(path: Path, top: int) -> list[tuple[str, int]]:
    """Functions by inclusive samples (a function counted once per stack)."""
    counts = collections.Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any("Thread._bootstrap" in f or "_bootstrap (threading" in f for f in frames[:3]):
            continue
        for fn in set(frames):
            counts[fn] += int(n)
    return counts.most_common(top)


def storm(
    server: bench.Server, tokens: list[str], count: int, profile: Path | None
) -> dict[str, Any]:
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [
                str(PYSPY),
                "record",
                "-p",
                str(server.proc.pid),
                "-r",
                "1000",
                "-f",
                "raw",
                "-o",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    cpu0 = bench.cpu_seconds(server.proc.pid)
    config = {"scenario": "connect", "urls": [server.url], "tokens": tokens, "count": count}
    proc = subprocess.Popen(
        ["node", str(bench.LOAD), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready: dict[str, Any] = json.loads(proc.stdout.readline() or '{"error": "no output"}')
    time.sleep(0.5)
    used = bench.cpu_seconds(server.proc.pid) - cpu0
    ready["rssMb"] = bench.rss_mb(server.proc.pid)  # every socket open (and idle)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    proc.stdin.write("close\n")
    proc.stdin.flush()
    proc.wait(60)
    ready["serverCpuMsPerConnection"] = round(used * 1000 / count, 3)
    return ready


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="sqlite", help="sqlite, sqlite+fast, base or relay")
    parser.add_argument(
        "--base-path", default="", help="PYTHONPATH of target 'base' (serve from another tree)"
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--keep", default="", help="copy the raw profiles into this folder")
    parser.add_argument("--top", type=int, default=0, help="also list the N hottest functions")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="hs-handshake-") as tmp:
        work = Path(tmp)
        for rnd in range(args.rounds):
            for target in args.target.split(","):
                port = bench.free_port()
                if target == "relay":
                    argv = [
                        sys.executable,
                        str(BENCH / "relay.py"),
                        "--port",
                        str(port),
                        "--ws",
                        "lean",
                    ]
                    tokens = USERS
                else:
                    db = f"sqlite:///{work / f'{rnd}-{target}.db'}"
                    secret = os.urandom(16).hex()
                    tokens = list(bench.issue_tokens(db, secret, USERS).values())
                    argv = [*bench.hs_argv(port, db, secret), "--max-sockets-per-user", "1000"]
                    if target.endswith("+fast"):
                        argv = [sys.executable, str(BENCH / "serve_fast.py"), *argv[1:]]
                env = dict(os.environ)
                if target.endswith("+fast") and os.environ.get("FAST_PYTHONPATH"):
                    os.environ["PYTHONPATH"] = os.environ["FAST_PYTHONPATH"]  # A/B of two trees
                if target == "base":
                    os.environ["PYTHONPATH"] = args.base_path
                try:
                    server = bench.Server(target, argv, port, work / f"{target}.log")
                finally:
                    os.environ.clear()
                    os.environ.update(env)
                try:
                    server.wait_ready()
                    profile = None if args.no_profile else work / f"{target}-{rnd}.txt"
                    r = storm(server, tokens[1:], args.count, profile)
                finally:
                    server.stop()
                r["target"] = target
                results.append(r)
                print(
                    f"r{rnd} {target:12} {r.get('open')}/{args.count} in {r.get('seconds')} s, "
                    f"{r['serverCpuMsPerConnection']} ms CPU per connection, RSS {r['rssMb']} MB",
                    flush=True,
                )
                if profile is not None and profile.exists():
                    total, counts = summarize(profile)
                    print(
                        f"\n{total} main-thread samples ({target})\n\n| layer | share |\n|---|---|"
                    )
                    for name, n in counts.most_common():
                        print(f"| {name} | {100 * n / max(total, 1):.1f}% |")
                    print()
                    if args.top:
                        for fn, n in hottest(profile, args.top):
                            print(f"{100 * n / max(total, 1):5.1f}%  {fn}")
                    if args.keep:
                        Path(args.keep).mkdir(parents=True, exist_ok=True)
                        (Path(args.keep) / profile.name).write_text(profile.read_text())
    for target in args.target.split(","):
        mine = [r for r in results if r["target"] == target]
        xs = [r["serverCpuMsPerConnection"] for r in mine]
        secs = [r.get("seconds") or 0 for r in mine]
        rss = [r["rssMb"] for r in mine]
        print(
            f"{target}: median {statistics.median(xs)} ms CPU per connection over {len(xs)} "
            f"rounds {xs}; all open in median {statistics.median(secs)} s; "
            f"RSS median {statistics.median(rss)} MB"
        )


if __name__ == "__main__":
    main()
