"""Backpressure across processes: a flood into a slow PostgreSQL loses nothing.

Two ``serve`` processes on PostgreSQL + Redis; every message insert sleeps 1 ms in a trigger.
A session socket on process 0 sends 5,000 ``message`` events without acks; an app socket of the
same user on process 1 receives them through Redis.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from happy_socket_sessions.tables import session_messages

from .conftest import ClusterFactory, unique_user

FLOOD = 5000
RSS_BUDGET_MB = 100  # growth of the receiving process of the flood


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


async def slow_inserts(pg_url: str) -> None:
    """A trigger that sleeps 1 ms before each message insert: a slow database."""
    import asyncpg

    conn = await asyncpg.connect(pg_url, timeout=5)
    try:
        await conn.execute(
            "CREATE FUNCTION hs_slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.001); "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        await conn.execute(
            "CREATE TRIGGER hs_slow BEFORE INSERT ON session_messages "
            "FOR EACH ROW EXECUTE FUNCTION hs_slow()"
        )
    finally:
        await conn.close()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_a_flood_into_slow_postgresql_is_stored_whole_across_processes(
    cluster: ClusterFactory, pg_url: str
) -> None:
    c = await cluster(2)
    await slow_inserts(pg_url)
    user = unique_user()
    headers = {"Authorization": f"Bearer {await c.token(user)}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        reply = await http.post(c[0].url + "/v1/sessions", json={"tag": "t", "metadata": "m"})
        sid = reply.json()["session"]["id"]
    receiver = await c.client(1, user)
    sender = await c.client(0, user, client_type="session-scoped", session_id=sid)
    bystander = await c.client(0, user)
    stranger = await c.client(0, unique_user("other"))
    assert c[0].proc is not None
    before = rss_mb(c[0].proc.pid)

    for i in range(FLOOD):
        await sender.emit("message", {"sid": sid, "message": f"m{i}", "localId": f"l{i}"})
    # while the sender's process works through the flood, its other sockets are answered
    for _ in range(5):
        assert await bystander.call("ping", timeout=2) == {}
        assert await stranger.call("ping", timeout=2) == {}

    got = [await receiver.next("update", timeout=60) for _ in range(FLOOD)]
    assert [u["body"]["message"]["seq"] for u in got] == list(range(1, FLOOD + 1))
    assert [u["body"]["message"]["localId"] for u in got] == [f"l{i}" for i in range(FLOOD)]
    m = session_messages
    rows: list[Any] = await c.app.db.fetch_all(
        sa.select(m.c.seq, m.c.content).where(m.c.session_id == sid).order_by(m.c.seq)
    )
    assert [r["seq"] for r in rows] == list(range(1, FLOOD + 1))
    assert [r["content"] for r in rows] == [f"m{i}" for i in range(FLOOD)]
    assert rss_mb(c[0].proc.pid) - before < RSS_BUDGET_MB
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(c[0].url + "/metrics")).text
    assert metric(text, "happy_socket_paused_seconds_count") >= 1  # the lane did fill
    assert 'outcome="rejected"' not in "".join(
        line for line in text.splitlines() if line.startswith("happy_socket_events_total")
    )
