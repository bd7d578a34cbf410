"""RPC (docs/protocol.md, "RPC") across two ``happy-socket serve`` processes (PostgreSQL + Redis).

These tests share one pair of processes (grace 2 s, call timeout 10 s); each uses its own user.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .conftest import Cluster, unique_user
from .support import (
    DISCONNECTED,
    NOT_AVAILABLE,
    answer_with,
    blocking_holder,
    register,
    unregister,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_rpc_in_both_directions(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    daemon0 = await c.client(0, user, client_type="machine-scoped", machine_id="M0")
    daemon1 = await c.client(1, user, client_type="machine-scoped", machine_id="M1")
    app0, app1 = await c.client(0, user), await c.client(1, user)
    answer_with(daemon0, "d0")
    answer_with(daemon1, "d1")
    await register(daemon0, "M0:ls")
    await register(daemon1, "M1:ls")
    # app on process 1 -> daemon on process 0, and the other way round
    assert await app1.call("rpc-call", {"method": "M0:ls", "params": {"p": [1]}}) == {
        "ok": True,
        "result": {"by": "d0", "echo": {"method": "M0:ls", "params": {"p": [1]}}},
    }
    assert await app0.call("rpc-call", {"method": "M1:ls", "params": "x"}) == {
        "ok": True,
        "result": {"by": "d1", "echo": {"method": "M1:ls", "params": "x"}},
    }
    # a daemon calling the other daemon across processes, and a same-process call
    reply = await daemon0.call("rpc-call", {"method": "M1:ls", "params": None})
    assert reply["result"]["by"] == "d1"
    reply = await app0.call("rpc-call", {"method": "M0:ls", "params": None})
    assert reply["result"]["by"] == "d0"
    # many concurrent calls across processes keep their answers apart
    replies = await asyncio.gather(
        *(app1.call("rpc-call", {"method": "M0:ls", "params": i}) for i in range(20))
    )
    assert [r["result"]["echo"]["params"] for r in replies] == list(range(20))
    # another user's call finds nothing (after the 2 s grace)
    stranger = await c.client(1, unique_user("stranger"))
    assert await stranger.call("rpc-call", {"method": "M0:ls"}) == NOT_AVAILABLE


async def test_holder_socket_closing_on_other_process_mid_call(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    holder = await c.client(0, user)
    caller = await c.client(1, user)
    arrived, release = blocking_holder(holder)
    await register(holder, "m")
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "m"}, timeout=12))
    await asyncio.wait_for(arrived.wait(), 5)
    await holder.disconnect()
    try:
        assert await asyncio.wait_for(call, 4) == DISCONNECTED  # the call timeout is 10 s
    finally:
        release.set()


async def test_holder_reconnecting_to_the_other_process_is_found(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    caller = await c.client(0, user)
    old = await c.client(0, user, client_type="machine-scoped", machine_id="M")
    answer_with(old, "old")
    await register(old, "M:x")
    await old.disconnect()
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "M:x", "params": 1}, timeout=9))
    await asyncio.sleep(0.3)
    assert not call.done()  # waiting in the grace window
    new = await c.client(1, user, client_type="machine-scoped", machine_id="M")
    answer_with(new, "new")
    await register(new, "M:x")
    assert await asyncio.wait_for(call, 5) == {
        "ok": True,
        "result": {"by": "new", "echo": {"method": "M:x", "params": 1}},
    }


async def test_late_registration_on_other_process_wakes_the_call(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    caller = await c.client(0, user)
    holder = await c.client(1, user)
    answer_with(holder, "h")
    call = asyncio.ensure_future(caller.call("rpc-call", {"method": "m"}, timeout=5))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await register(holder, "m")
    # announced over Redis pub/sub (the processes run without the periodic re-read)
    assert (await asyncio.wait_for(call, 5))["ok"] is True
    assert time.monotonic() - started < 1.8  # before the 2 s grace ran out


async def test_latest_wins_and_fallback_across_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    caller = await c.client(0, user)
    h0 = await c.client(0, user)
    h1 = await c.client(1, user)
    answer_with(h0, "h0")
    answer_with(h1, "h1")

    async def who() -> Any:
        reply = await caller.call("rpc-call", {"method": "m", "params": None})
        return reply["result"]["by"] if reply.get("ok") else reply

    await register(h0, "m")
    assert await who() == "h0"
    await register(h1, "m")  # on the other process, later: it wins
    assert await who() == "h1"
    await unregister(h1, "m")
    assert await who() == "h0"
    await register(h1, "m")
    assert await who() == "h1"
    await register(h0, "m")  # re-registering on the caller's process wins again
    assert await who() == "h0"
    await h0.disconnect()
    assert await who() == "h1"
    await unregister(caller, "m")  # another socket's unregister removes nothing
    assert await who() == "h1"
