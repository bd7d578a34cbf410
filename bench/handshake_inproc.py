"""Server CPU of N whole websocket handshakes in one process, without sockets or a client.

    python bench/handshake_inproc.py --count 2000
    python bench/handshake_inproc.py --ab /tmp/base:/tmp/base/plugins --rounds 5

The App of ``happy-socket serve`` (SQLite, every plugin) under uvicorn's protocols as ``serve``
configures them, fed bytes through a stand-in transport: for each connection the upgrade
request (answered with the 101 and engine.io's OPEN), then the socket.io CONNECT with a token
(answered with its ack). Sockets stay open, as in a storm. Reports the process's CPU time
(``time.process_time``: every thread) per connection and the traced memory per open socket;
then ``--calls`` acked ``ping`` events sent one after the other on one socket (CPU per event:
the per-message path of the reader, the dispatcher and the writer).
On a shared machine this varies far less than the server CPU of a real storm
(bench/handshake_profile.py), whose client shares the cores: no syscalls and no client are
counted here, so it measures the Python path only. ``--ab TREE`` runs this script in fresh
processes, alternately with ``PYTHONPATH=TREE`` and with this tree, and prints the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

USERS = [f"bench-c{i}" for i in range(20)]
REQUEST = (
    b"GET /v1/updates/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:3005\r\n"
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"User-Agent: node\r\nAccept-Encoding: gzip\r\n\r\n"
)


def masked_text(text: str) -> bytes:
    """A client's (masked) websocket text frame."""
    data = text.encode()
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + mask + body


class Transport(asyncio.Transport):
    """Enough of a socket transport for uvicorn's protocols; keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.out = bytearray()
        self.max_size = 256 * 1024  # asyncio's read size (happy_socket lowers it)
        self.closing = False
        self.want = b""  # write() resolves `written` once `out` holds this after `mark`
        self.mark = 0
        self.written: asyncio.Future[None] | None = None

    async def wait_for_output(self, want: bytes) -> None:
        self.want = want
        if want not in self.out[self.mark :]:
            self.written = asyncio.get_running_loop().create_future()
            await self.written
        self.mark = len(self.out)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3005), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def write(self, data: Any) -> None:
        self.out += data
        w = self.written
        if w is not None and not w.done() and self.want in self.out[self.mark :]:
            w.set_result(None)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def storm(count: int, trace: bool, calls: int = 0) -> dict[str, Any]:
    import uvicorn
    from uvicorn.server import ServerState

    from happy_socket import Settings, create_app
    from happy_socket.compat.uvicorn import http_protocol
    from happy_socket.websocket import websocket_protocol

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db=f"sqlite:///{tmp}/b.db", secret=os.urandom(16).hex())
        settings = settings.evolve(max_sockets_per_user=count)
        app = create_app(settings)
        await app.startup()
        tokens = [await app.issue_token(u) for u in USERS]
        connects = [masked_text("40" + json.dumps({"token": t})) for t in tokens]
        config = uvicorn.Config(
            app.asgi(lifespan=False),
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws=websocket_protocol(settings.write_stall_s),
            http=http_protocol(settings.header_timeout_s),
            ws_per_message_deflate=False,
            ws_max_size=settings.max_packet_bytes,
            log_config=None,
        )
        config.load()
        state = ServerState()
        state.default_headers = [
            (b"date", b"Tue, 01 Dec 2026 21:00:00 GMT"),
            (b"server", b"uvicorn"),
        ]
        gc.collect()
        gc.freeze()
        gc.set_threshold(700, 10, 100)
        kwargs: dict[str, Any] = {"config": config, "server_state": state, "app_state": {}}
        transports: list[Transport] = []
        gate = asyncio.Semaphore(500)  # handshakes in flight, as bench/load.mjs's storm

        async def handshake(i: int) -> None:
            async with gate:
                t = Transport()
                proto = config.http_protocol_class(**kwargs)
                t.protocol = proto
                proto.connection_made(t)
                proto.data_received(REQUEST)
                await asyncio.wait_for(t.wait_for_output(b"\r\n\r\n\x81"), 30)  # 101 + OPEN
                t.protocol.data_received(connects[i % len(connects)])
                await asyncio.wait_for(t.wait_for_output(b"40{"), 30)  # the CONNECT ack
                transports.append(t)

        if trace:
            tracemalloc.start(1)
        cpu0 = time.process_time()
        await asyncio.gather(*(handshake(i) for i in range(count)))
        used = time.process_time() - cpu0
        calls_us = 0.0
        if calls:  # sequential acked events on one socket: the per-message path
            t = transports[0]
            frames = [masked_text(f'42{i}["ping",{{}}]') for i in range(calls)]
            cpu1 = time.process_time()
            for i, frame in enumerate(frames):
                t.protocol.data_received(frame)
                await asyncio.wait_for(t.wait_for_output(b"43%d[" % i), 30)
            calls_us = (time.process_time() - cpu1) * 1e6 / calls
        traced = tracemalloc.get_traced_memory()[0] if trace else 0
        tracemalloc.stop()
        open_sockets = len(app.connections())
        for t in transports:
            t.protocol.connection_lost(None)
        await asyncio.sleep(0.2)
        await app.shutdown()
    return {
        "cpuUsPerConnection": round(used * 1e6 / count, 1),
        "tracedBytesPerSocket": round(traced / count) if trace else None,
        "open": open_sockets,
        "cpuUsPerCall": round(calls_us, 1),
    }


def ab(base: str, rounds: int, count: int, calls: int) -> None:
    results: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
    here = os.path.dirname(os.path.abspath(__file__))
    for rnd in range(rounds):
        for name, path in (("base", base), ("this", "")):
            env = dict(os.environ, PYTHONPATH=path) if path else dict(os.environ)
            if not path:
                env.pop("PYTHONPATH", None)
            argv = [sys.executable, os.path.join(here, "handshake_inproc.py")]
            out = subprocess.run(
                [*argv, "--count", str(count), "--calls", str(calls), "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=tempfile.gettempdir(),
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(r)
            print(f"r{rnd} {name}: {r}", flush=True)
    for name, rs in results.items():
        cpu = statistics.median(r["cpuUsPerConnection"] for r in rs)
        mem = statistics.median(r["tracedBytesPerSocket"] for r in rs)
        call = statistics.median(r["cpuUsPerCall"] for r in rs)
        print(
            f"{name}: median {cpu} us CPU per connection, {mem} traced bytes per open socket, "
            f"{call} us CPU per acked event"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000, help="then N acked events, in turn")
    parser.add_argument("--ab", default="", help="PYTHONPATH of the base tree (A/B)")
    parser.add_argument("--json", action="store_true", help="one JSON line (for --ab)")
    args = parser.parse_args()
    if args.ab:
        ab(args.ab, args.rounds, args.count, args.calls)
        return
    cpu = asyncio.run(storm(args.count, trace=False, calls=args.calls))
    mem = asyncio.run(storm(args.count, trace=True))
    result = {**cpu, "tracedBytesPerSocket": mem["tracedBytesPerSocket"]}
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()
