"""Per-user fan-out (happy_socket.fanout) across three ``happy-socket serve`` processes.

A process receives a user's traffic only while it holds one of the user's sockets; what its
manager received is read from its ``happy_socket_cluster_messages_received_total`` counter
(counted, not timed). Both pub/sub modes run: sharded (Redis >= 7) and plain.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from happy_socket.testing import TestSocket

from .conftest import Cluster, ClusterFactory, cluster_in_mode, unique_user

MODES = ["sharded", "plain"]


async def new_session(c: Cluster, index: int, user: str) -> str:
    headers = {"Authorization": f"Bearer {await c.token(user)}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        reply = await http.post(c[index].url + "/v1/sessions", json={"tag": "t", "metadata": "m"})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["session"]["id"])


async def flood(sender: TestSocket, sid: str, n: int, tag: str) -> list[int]:
    """Send ``n`` messages without waiting between them; their session seqs, in send order."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = []
    for i in range(n):
        future = loop.create_future()
        await sender.client.emit(
            "message",
            {"sid": sid, "message": f"{tag}-{i}", "localId": f"{tag}-{i}"},
            callback=lambda reply, f=future: f.set_result(reply),
        )
        futures.append(future)
    acks = await asyncio.wait_for(asyncio.gather(*futures), 60)
    return [int(a["seq"]) for a in acks]


async def seqs_of(sock: TestSocket, n: int) -> list[int]:
    """The session seqs of the next ``n`` updates of ``sock``."""
    return [(await sock.next("update", timeout=20))["body"]["message"]["seq"] for _ in range(n)]


def total(counts: dict[str, float]) -> float:
    return sum(counts.values())


@pytest.mark.parametrize("mode", MODES)
async def test_only_processes_holding_the_user_receive_its_traffic(
    cluster: ClusterFactory, mode: str
) -> None:
    c = await cluster_in_mode(cluster, mode)
    user = unique_user()
    sid = await new_session(c, 0, user)
    sender = await c.client(0, user, client_type="session-scoped", session_id=sid)
    watcher_a = await c.client(0, user)
    published_name = "happy_socket_cluster_messages_published_total"
    # creating the session published its update: no socket of the user was connected anywhere
    base = (await c.counter(0, published_name)).get("emit", 0)

    seqs = await flood(sender, sid, 300, "a")
    assert await seqs_of(watcher_a, 300) == seqs == list(range(1, 301))
    assert total(await c.cluster_received(1)) == 0  # B and C received none of it
    assert total(await c.cluster_received(2)) == 0
    published = await c.counter(0, published_name)
    assert published.get("emit", 0) == base  # every recipient was local: nothing published

    # the user opens a socket on B: B gets exactly what is sent after its join
    watcher_b = await c.client(1, user)
    later = await flood(sender, sid, 200, "b")
    assert later == list(range(301, 501))
    assert await seqs_of(watcher_b, 200) == later
    assert await watcher_b.nothing("update", 0.3)
    assert await seqs_of(watcher_a, 200) == later
    received_b = await c.cluster_received(1)
    assert received_b.get("emit") == 200  # once each
    assert total(await c.cluster_received(2)) == 0  # C still nothing
    published = await c.counter(0, published_name)
    assert published.get("emit") == base + 200  # once per message, to the user's channel

    # B's last socket leaves: once A heard it (B's "bye"), A stops publishing again
    control_before = (await c.cluster_received(0)).get("control", 0)
    await watcher_b.disconnect()
    for _ in range(100):
        if (await c.cluster_received(0)).get("control", 0) > control_before:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("process A never heard that B's last socket left")
    assert await flood(sender, sid, 50, "c") == list(range(501, 551))
    assert await seqs_of(watcher_a, 50) == list(range(501, 551))
    published = await c.counter(0, published_name)
    assert published.get("emit") == base + 200
    assert (await c.cluster_received(1)).get("emit") == 200


@pytest.mark.parametrize("mode", MODES)
async def test_a_socket_joining_during_a_flood_gets_a_gapless_tail(
    cluster: ClusterFactory, mode: str
) -> None:
    """The join races emits in flight: the new socket's messages are one run without gap or
    duplicate, ending with the last message, and include every message sent after it joined."""
    c = await cluster_in_mode(cluster, mode)
    user = unique_user()
    sid = await new_session(c, 0, user)
    sender = await c.client(0, user, client_type="session-scoped", session_id=sid)
    sending = asyncio.create_task(flood(sender, sid, 300, "before"))
    await asyncio.sleep(0.05)
    joined = await c.client(2, user)
    after_join = await flood(sender, sid, 300, "after")  # every send starts after the join
    assert sorted(await sending + after_join) == list(range(1, 601))
    got: list[int] = []
    for _ in range(200):
        got = [u["body"]["message"]["seq"] for u in joined.events["update"]]
        if got and got[-1] == 600:
            break
        await asyncio.sleep(0.05)
    assert got, "the socket that joined during the flood received nothing"
    assert got == list(range(got[0], 601))  # a gapless tail, each once, in order
    assert got[0] <= min(after_join)  # with everything sent after the join
    assert total(await c.cluster_received(1)) == 0  # B never held the user


@pytest.mark.parametrize("mode", MODES)
async def test_sockets_coming_and_going_during_a_flood(cluster: ClusterFactory, mode: str) -> None:
    """Every socket present for the whole flood gets every message once, in seq order, while
    other sockets of the user join and leave on every process (first and last ones included)."""
    c = await cluster_in_mode(cluster, mode)
    user = unique_user()
    sid = await new_session(c, 0, user)
    sender = await c.client(0, user, client_type="session-scoped", session_id=sid)
    steady = [await c.client(0, user), await c.client(1, user)]
    stop = asyncio.Event()
    churned: list[TestSocket] = []
    rng = random.Random(16)

    async def churn(index: int) -> None:
        while not stop.is_set():
            sock = await c.client(index, user)
            churned.append(sock)
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            await sock.disconnect()
            await asyncio.sleep(rng.uniform(0.0, 0.03))

    churners = [asyncio.create_task(churn(i)) for i in (0, 1, 2, 2)]
    try:
        total_n = 800
        seqs = await flood(sender, sid, total_n, "x")
    finally:
        stop.set()
        await asyncio.gather(*churners)
    assert seqs == list(range(1, total_n + 1))
    for sock in steady:
        assert await seqs_of(sock, total_n) == seqs
        assert await sock.nothing("update", 0.3)
    assert len(churned) > 10
    for sock in churned:  # a transient socket: one run, in order, no gap, no duplicate
        got = [u["body"]["message"]["seq"] for u in sock.events["update"]]
        if got:
            assert got == list(range(got[0], got[0] + len(got))), got
