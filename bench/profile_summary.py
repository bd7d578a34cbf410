"""Group a py-spy raw profile of a happy-socket server into the buckets of bench/RESULTS.md.

    py-spy record -p PID -d 5 -r 250 -f raw -o flood.txt   # while bench/load.mjs runs
    python bench/profile_summary.py flood.txt

Only the main (event loop) thread counts. A sample whose innermost frame waits in epoll is idle,
one whose innermost frame is a sqlite3 call is SQLite; otherwise it goes to the first bucket
whose key occurs anywhere in its stack.
"""

from __future__ import annotations

import collections
import sys

BUCKETS = [
    ("PostgreSQL: asyncpg calls (incl. send syscalls waking the backend)", ["asyncpg/"]),
    (
        "Redis pub/sub: publish + listen (emit fan-out across processes)",
        ["redis/", "async_redis_manager", "async_pubsub_manager"],
    ),
    (
        "SQLite: SQLAlchemy (statement execution, parameter processing)",
        ["SyncTx", "exec_driver_sql"],
    ),
    ("write units: plugin/core Python around the statements", ["_run_batch", "Database.write"]),
    (
        "websocket frame writes (engine.io writer -> send syscall)",
        [
            "_websocket_handler.<locals>.writer",
            "WebSocketsSansIOProtocol.send",
            "_SelectorSocketTransport.write",
        ],
    ),
    ("socket.io emit (rooms, encode, queue)", ["AsyncServer.emit", "Router._emit", "_send_packet"]),
    (
        "socket reads, engine.io/socket.io decode",
        [
            "_read_ready",
            "AsyncSocket.receive",
            "_handle_eio_message",
            "websocket_wait",
            "data_received",
        ],
    ),
    ("dispatch + handlers (non-DB)", ["Dispatcher.", "happy_socket_sessions", "happy_socket_rpc"]),
    ("other event-loop work", ["_run_once"]),
]
IDLE = "idle (waiting in epoll)"
SQLITE_C = "SQLite: sqlite3 executing statements + BEGIN/SAVEPOINT/COMMIT"
SQLITE_LEAVES = (
    "SyncTx._raw ",
    "_Raw.execute ",
    "DefaultDialect.do_execute ",
    "_Raw.busy_timeout_ms ",
)


def summarize(path: str) -> tuple[int, collections.Counter[str]]:
    """Total main-thread samples and samples per bucket."""
    total = 0
    counts: collections.Counter[str] = collections.Counter()
    with open(path) as fh:
        for line in fh:
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            if "Thread._bootstrap" in frames[0]:  # worker threads (aiosqlite, executors)
                continue
            total += int(n)
            bucket = "other"
            leaf = frames[-1]
            if "EpollSelector.select" in leaf:
                bucket = IDLE
            elif leaf.startswith(SQLITE_LEAVES):  # time inside the sqlite3 C calls
                bucket = SQLITE_C
            else:
                joined = ";".join(frames)
                for name, keys in BUCKETS:
                    if any(k in joined for k in keys):
                        bucket = name
                        break
            counts[bucket] += int(n)
    return total, counts


def main() -> None:
    total, counts = summarize(sys.argv[1])
    print(f"{total} main-thread samples\n\n| where (main thread) | share of samples |\n|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / max(total, 1):.0f}% |")


if __name__ == "__main__":
    main()
