"""Memory under attack: RSS of one ``happy-socket serve`` before and after each attack class,
and a bystander's ping latency while it runs.

    python bench/attacks.py                 # every attack, SQLite, a few seconds each
    python bench/attacks.py --only binary,body

Each attack comes from one free account (accounts cost nothing to create) and is bounded in
count and time; everything talks to 127.0.0.1 only. For each attack the table gives the
server's RSS before, at its peak during, and after (MB), and the p50/p99 of another user's
`ping` round trips during the attack against the same figures while idle. Prints a markdown
table and one JSON line per attack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import socketio
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Server, free_port, hs_argv, issue_tokens

Attack = Callable[[str, str], Awaitable[None]]  # (server url, token)


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/updates/?EIO=4&transport=websocket"


async def raw_socket(url: str, token: str, **auth: Any) -> Any:
    ws = await websockets.connect(ws_url(url), max_size=None)
    assert str(await ws.recv()).startswith("0")
    await ws.send("40" + json.dumps({"token": token, **auth}))
    await ws.recv()
    return ws


async def binary_attachments(url: str, token: str) -> None:
    """A packet announcing a huge attachment count, then 1 MB binary frames."""
    for _ in range(20):
        with contextlib.suppress(Exception):
            ws = await raw_socket(url, token)
            await ws.send('451000000000-["ping",{"_placeholder":true,"num":0}]')
            for _ in range(20):
                await ws.send(b"\x04" + b"x" * 1_000_000)
            await ws.close()


async def big_bodies(url: str, token: str) -> None:
    """Unauthenticated ``POST /v1/auth`` bodies of 250 MB (declared) and streamed."""

    async def stream() -> Any:
        chunk = b"x" * 1_000_000
        for _ in range(250):
            yield chunk

    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(4):
            with contextlib.suppress(Exception):
                await http.post(url + "/v1/auth", content=stream())
            with contextlib.suppress(Exception):
                headers = {"Content-Length": str(250_000_000), "Content-Type": "application/json"}
                await http.post(url + "/v1/auth", content=b"{" * 1000, headers=headers)


async def reserved_events(url: str, token: str) -> None:
    """``42["connect",{},{auth}]`` and ``42["disconnect"]`` flooded from a live socket."""
    ws = await raw_socket(url, token)
    frame = f'42["connect",{{}},{{"token":"{token}"}}]'
    for i in range(100_000):
        await ws.send(frame if i % 2 else '42["disconnect"]')
    await ws.close()


async def rpc_registrations(url: str, token: str) -> None:
    """100,000 method names of 1,000 characters from one socket."""
    ws = await raw_socket(url, token, clientType="machine-scoped", machineId="m")
    for i in range(100_000):
        await ws.send(f'42["rpc-register",{{"method":"{i:08d}{"m" * 992}"}}]')
    await asyncio.sleep(1)
    await ws.close()


async def slow_reader(url: str, token: str) -> None:
    """An app socket that stops reading while 100 KB updates are flooded at it."""
    url_ws = ws_url(url)
    ws = await websockets.connect(url_ws, max_size=None, max_queue=1)
    await ws.recv()
    await ws.send("40" + json.dumps({"token": token}))
    await ws.recv()
    async with httpx.AsyncClient(timeout=10) as http:
        headers = {"Authorization": f"Bearer {token}"}
        reply = await http.post(
            url + "/v1/sessions", json={"tag": "slow", "metadata": "m"}, headers=headers
        )
        sid = reply.json()["session"]["id"]
    writer = socketio.AsyncClient(reconnection=False)
    await writer.connect(
        url, socketio_path="/v1/updates", auth={"token": token}, transports=["websocket"]
    )
    version = 0
    big = "u" * 100_000
    for _ in range(400):
        ack = await writer.call(
            "update-metadata", {"sid": sid, "metadata": big, "expectedVersion": version}
        )
        if ack.get("result") != "success":
            break
        version = ack["version"]
    await writer.disconnect()
    with contextlib.suppress(Exception):
        await ws.close()


async def unfinished_handshakes(url: str, token: str) -> None:
    """600 engine.io sessions that never join Socket.IO, held for 5 s."""
    sockets = []
    for _ in range(600):
        ws = await websockets.connect(ws_url(url))
        await ws.recv()
        sockets.append(ws)
    await asyncio.sleep(5)
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()


async def big_auth(url: str, token: str) -> None:
    """Handshakes carrying 900 KB auth objects."""
    for _ in range(50):
        with contextlib.suppress(Exception):
            ws = await websockets.connect(ws_url(url), max_size=None)
            await ws.recv()
            await ws.send("40" + json.dumps({"token": token, "pad": "p" * 900_000}))
            await ws.recv()
            await ws.close()


ATTACKS: dict[str, Attack] = {
    "binary": binary_attachments,
    "body": big_bodies,
    "reserved": reserved_events,
    "rpc": rpc_registrations,
    "slow-reader": slow_reader,
    "handshakes": unfinished_handshakes,
    "auth": big_auth,
}


async def pings(url: str, token: str, stop: Any) -> list[tuple[float, float]]:
    """Another user's ``ping`` round trips, one every 10 ms until ``stop`` is set.

    Each sample is (wall-clock start, round trip in ms), so the caller can keep those taken
    while the attack ran.
    """
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        url, socketio_path="/v1/updates", auth={"token": token}, transports=["websocket"]
    )
    samples = []
    while not stop.is_set():
        at, t = time.time(), time.perf_counter()
        await client.call("ping", {}, timeout=10)
        samples.append((at, (time.perf_counter() - t) * 1000))
        await asyncio.sleep(0.01)
    await client.disconnect()
    return samples


def isolate(pid: int, cpus: set[int], *, realtime: bool) -> None:
    """Give ``pid`` the CPUs ``cpus`` at the highest priority (as on a machine of its own).

    Real-time for the bystander, which is never busy. The server gets nice -20 instead: a
    real-time process that keeps its CPU busy is throttled by the kernel for 50 ms of every
    second, which would show as 50 ms pings.
    """
    os.sched_setaffinity(pid, cpus)
    with contextlib.suppress(PermissionError):  # not root: affinity only
        if realtime:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
        else:
            os.setpriority(os.PRIO_PROCESS, pid, -20)


def bystander_process(url: str, token: str, cpus: set[int] | None, stop: Any, out: Any) -> None:
    """The bystander in a process of its own: the attacker's CPU never delays its clock."""
    if cpus:
        isolate(0, cpus, realtime=True)
    out.send(asyncio.run(pings(url, token, stop)))


async def repeat(name: str, url: str, token: str, seconds: float) -> None:
    """Run the attack again and again for at least ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            await ATTACKS[name](url, token)


def attacker_process(
    name: str, url: str, token: str, cpus: set[int] | None, seconds: float
) -> None:
    """The attack in a process of its own, at the lowest CPU priority when pinned."""
    if cpus:
        os.sched_setaffinity(0, cpus)
        os.nice(19)
    asyncio.run(repeat(name, url, token, seconds))


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2) if s else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ping_run(url: str, token: str, cpus: set[int] | None) -> tuple[Any, Any, Any]:
    ctx = mp.get_context("spawn")
    stop, (receive, send) = ctx.Event(), ctx.Pipe(duplex=False)
    proc = ctx.Process(target=bystander_process, args=(url, token, cpus, stop, send))
    proc.start()
    return proc, stop, receive


def measure(
    server: Server, tokens: dict[str, str], name: str, pin: bool, seconds: float
) -> dict[str, Any]:
    client_cpus = {1} if pin else None
    proc, stop, receive = ping_run(server.url, tokens["bystander"], client_cpus)
    time.sleep(3)
    stop.set()
    idle_samples = [ms for _, ms in receive.recv()]
    proc.join()
    before, cpu_before = server.rss, cpu_seconds(server.proc.pid)
    peak = before
    proc, stop, receive = ping_run(server.url, tokens["bystander"], client_cpus)
    time.sleep(1)  # connected and pinging before the attack starts
    ctx = mp.get_context("spawn")
    attacker = ctx.Process(
        target=attacker_process,
        args=(name, server.url, tokens["attacker"], client_cpus, seconds),
    )
    started, window_start = time.perf_counter(), time.time()
    attacker.start()
    while attacker.is_alive():
        peak = max(peak, server.rss)
        time.sleep(0.1)
    attacker.join()
    window_end = time.time()
    took = time.perf_counter() - started
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    stop.set()
    busy_samples = [ms for at, ms in receive.recv() if window_start <= at <= window_end]
    proc.join()
    time.sleep(2)
    return {
        "attack": name,
        "pinned": pin,
        "seconds": round(took, 1),
        "serverCpuSeconds": round(cpu, 2),
        "rssBefore": before,
        "rssPeak": peak,
        "rssAfter": server.rss,
        "pingIdle": (pct(idle_samples, 50), pct(idle_samples, 99)),
        "pingDuring": (pct(busy_samples, 50), pct(busy_samples, 99)),
        "pings": len(busy_samples),
        "p99Ratio": round(pct(busy_samples, 99) / max(pct(idle_samples, 99), 1e-6), 2),
        "pingMedianRatio": round(
            statistics.median(busy_samples) / max(statistics.median(idle_samples), 1e-6), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated attack names")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="share every CPU (default: the server on CPU 0 at nice -20, the bystander on "
        "CPU 1 at real-time priority when root, the attacker on CPU 1 at nice 19)",
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of each attack")
    args = parser.parse_args()
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    wanted = [w for w in args.only.split(",") if w] or list(ATTACKS)
    work = Path(tempfile.mkdtemp(prefix="hs-attacks-"))
    db = f"sqlite:///{work / 'attacks.db'}"
    secret = secrets.token_hex(16)
    rows = []
    for name in wanted:  # a fresh server per attack: figures do not mix
        users = [f"attacker-{name}", "bystander"]
        tokens = issue_tokens(db, secret, users)
        tokens = {"attacker": tokens[users[0]], "bystander": tokens["bystander"]}
        port = free_port()
        server = Server(name, hs_argv(port, db, secret), port, work / f"{name}.log")
        try:
            server.wait_ready()
            if pin:
                isolate(server.proc.pid, {0}, realtime=False)
            row = measure(server, tokens, name, pin, args.seconds)
        finally:
            server.stop()
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(
        "| attack | s | server CPU s | RSS before | peak | after (MB) "
        "| ping p50/p99 idle | during | p99 ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['attack']} | {r['seconds']} | {r['serverCpuSeconds']} | {r['rssBefore']} | "
            f"{r['rssPeak']} | {r['rssAfter']} | {r['pingIdle'][0]} / {r['pingIdle'][1]} ms | "
            f"{r['pingDuring'][0]} / {r['pingDuring'][1]} ms | {r['p99Ratio']} |"
        )


if __name__ == "__main__":
    main()
