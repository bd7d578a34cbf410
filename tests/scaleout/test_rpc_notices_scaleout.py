"""RPC "a method was registered" notices reach only the processes where a call of that user waits.

Three ``happy-socket serve`` processes; each process's ``happy_socket_rpc_notices_received_total``
counts the notices it heard (counted, not timed). Both pub/sub modes run.
"""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Cluster, ClusterFactory, cluster_in_mode, unique_user
from .support import answer_with, register

MODES = ["sharded", "plain"]
HEARD = "happy_socket_rpc_notices_received_total"


async def heard(c: Cluster) -> list[float]:
    return [await c.value(i, HEARD) for i in range(3)]


@pytest.mark.parametrize("mode", MODES)
async def test_registrations_are_heard_only_where_a_call_waits(
    cluster: ClusterFactory, mode: str
) -> None:
    c = await cluster_in_mode(cluster, mode, grace=3.0)
    user = unique_user()
    holder = await c.client(0, user)
    answer_with(holder, "h")
    caller = await c.client(1, user)
    await c.client(2, user)  # C holds a socket of the same user, but no call waits there

    # no call waits anywhere: a registration reaches no process
    await register(holder, "early")
    await asyncio.sleep(0.3)
    assert await heard(c) == [0, 0, 0]

    # a call on B waits for "late": B alone hears its registration, which answers the call
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "late"}, timeout=6))
    await asyncio.sleep(0.5)
    assert not call.done()
    await register(holder, "late")
    assert (await asyncio.wait_for(call, 5))["ok"] is True
    assert await heard(c) == [0, 1, 0]

    # the call is over: B unsubscribed, later registrations reach nobody again
    await asyncio.sleep(0.3)
    await register(holder, "later")
    await asyncio.sleep(0.3)
    assert await heard(c) == [0, 1, 0]


@pytest.mark.parametrize("mode", MODES)
async def test_many_waiting_calls_each_answered_once_registered(
    cluster: ClusterFactory, mode: str
) -> None:
    """Calls of several users wait on B and C; registrations on A wake each, none is lost."""
    c = await cluster_in_mode(cluster, mode, grace=3.0)
    users = [unique_user() for _ in range(4)]
    holders = [await c.client(0, u) for u in users]
    for i, h in enumerate(holders):
        answer_with(h, f"h{i}")
    callers = [await c.client(1 + i % 2, u) for i, u in enumerate(users)]
    calls = [
        asyncio.ensure_future(sock.call("rpc-call", {"method": f"m{j}"}, timeout=8))
        for sock in callers
        for j in range(3)
    ]
    await asyncio.sleep(0.5)
    for h in holders:
        for j in range(3):
            await register(h, f"m{j}")
    results = await asyncio.wait_for(asyncio.gather(*calls), 8)
    assert [r["ok"] for r in results] == [True] * len(calls)
    # every registration heard once, where its user's calls wait (two users on B, two on C)
    assert await heard(c) == [0, 6, 6]
