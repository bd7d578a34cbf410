"""Overload: senders flood ``message`` without acks into three processes on PostgreSQL + Redis.

    python bench/overload.py                         # 3 processes, 4 senders x 1,500 messages
    python bench/overload.py --senders 8 --messages 3000 --processes 2

Each sender is a session-scoped socket of its own session on process ``i % processes``, and
emits its messages as fast as python-socketio sends them, asking for no ack (as happy-agent and
the older CLI do). One user-scoped socket per sender's user, on another process, counts the
``new-message`` updates it receives. The run ends when every message is delivered or nothing
moved for 15 s; then the stored rows are counted. ``lost`` must be 0: the server pushes back
(stops reading a socket whose lane is full) instead of refusing. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import socketio
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REDIS, Server, free_port, hs_argv, issue_tokens, pg_create, pg_drop


async def flood(
    urls: list[str], tokens: dict[str, str], senders: int, messages: int, db: str
) -> dict[str, Any]:
    from happy_socket_sessions.tables import session_messages

    from happy_socket import Settings, create_app

    users = list(tokens)
    sessions: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(senders):
            headers = {"Authorization": f"Bearer {tokens[users[i]]}"}
            reply = await http.post(
                urls[i % len(urls)] + "/v1/sessions",
                json={"tag": f"overload-{i}", "metadata": "m"},
                headers=headers,
            )
            reply.raise_for_status()
            sessions.append(reply.json()["session"]["id"])
    delivered = [0] * senders
    receivers, senders_ = [], []
    for i in range(senders):
        receiver = socketio.AsyncClient(reconnection=False)

        def counter(i: int) -> Any:
            async def on_update(data: Any) -> None:
                if data.get("body", {}).get("t") == "new-message":
                    delivered[i] += 1

            return on_update

        receiver.on("update", counter(i))
        await receiver.connect(
            urls[(i + 1) % len(urls)],
            socketio_path="/v1/updates",
            auth={"token": tokens[users[i]]},
            transports=["websocket"],
        )
        receivers.append(receiver)
        sender = socketio.AsyncClient(reconnection=False)
        await sender.connect(
            urls[i % len(urls)],
            socketio_path="/v1/updates",
            auth={
                "token": tokens[users[i]],
                "clientType": "session-scoped",
                "sessionId": sessions[i],
            },
            transports=["websocket"],
        )
        senders_.append(sender)

    async def send_all(i: int) -> None:
        for n in range(messages):
            body = {"sid": sessions[i], "message": f"m{n}", "localId": f"l{n}"}
            await senders_[i].emit("message", body)

    started = time.perf_counter()
    await asyncio.gather(*(send_all(i) for i in range(senders)))
    sent_s = time.perf_counter() - started
    total = senders * messages
    last, still = -1, time.perf_counter()
    while sum(delivered) < total and time.perf_counter() - still < 15:
        await asyncio.sleep(0.1)
        if sum(delivered) != last:
            last, still = sum(delivered), time.perf_counter()
    elapsed = time.perf_counter() - started
    for client in receivers + senders_:
        await client.disconnect()

    app = create_app(Settings(db=db, secret="x" * 32))
    await app.startup()
    try:
        m = session_messages
        stored = await app.db.fetch_val(
            sa.select(sa.func.count()).select_from(m).where(m.c.session_id.in_(sessions))
        )
    finally:
        await app.shutdown()
    return {
        "senders": senders,
        "messagesPerSender": messages,
        "sent": total,
        "stored": int(stored),
        "delivered": sum(delivered),
        "lost": total - int(stored),
        "sendSeconds": round(sent_s, 2),
        "seconds": round(elapsed, 2),
        "storedPerSecond": round(int(stored) / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1500)
    args = parser.parse_args()
    secret = secrets.token_hex(16)
    name = f"hs_overload_{int(time.time())}"
    db = pg_create(name)
    servers: list[Server] = []
    try:
        users = [f"overload-{i}" for i in range(args.senders)]
        tokens = issue_tokens(db, secret, users)
        work = Path(tempfile.mkdtemp(prefix="hs-overload-"))
        for i in range(args.processes):
            port = free_port()
            servers.append(
                Server(f"pg{i}", hs_argv(port, db, secret, REDIS), port, work / f"{i}.log")
            )
        for s in servers:
            s.wait_ready()
        result = asyncio.run(
            flood([s.url for s in servers], tokens, args.senders, args.messages, db)
        )
        result["processes"] = args.processes
        print(json.dumps(result))
    finally:
        for s in servers:
            s.stop()
        pg_drop(name)


if __name__ == "__main__":
    main()
