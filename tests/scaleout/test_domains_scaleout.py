"""Every event class with sender and receivers on different ``happy-socket serve`` processes.

Sessions, messages, metadata/state updates and presence (plugin ``sessions``), machines
(``machines``), artifacts (``artifacts``), usage (``usage``); seq allocation under load from both
processes.
These tests share one pair of processes; each uses its own user.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import pytest

from happy_socket.testing import TestSocket

from .conftest import Cluster, unique_user

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def http(c: Cluster, index: int, user: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {await c.token(user)}"}
    async with httpx.AsyncClient(base_url=c[index].url, headers=headers) as client:
        response = await client.request(method, path, json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


async def new_session(c: Cluster, index: int, user: str, tag: str = "t") -> str:
    reply = await http(c, index, user, "POST", "/v1/sessions", {"tag": tag, "metadata": "m0"})
    return str(reply["session"]["id"])


def body_of(update: Any) -> Any:
    assert set(update) == {"id", "seq", "body", "createdAt"}, update
    return update["body"]


async def test_messages_cross_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    sid = await new_session(c, 0, user)
    sender = await c.client(0, user, client_type="session-scoped", session_id=sid)
    twin = await c.client(1, user, client_type="session-scoped", session_id=sid)
    app = await c.client(1, user)
    other = await c.client(1, user, client_type="session-scoped", session_id="other")
    ack = await sender.call("message", {"sid": sid, "message": "c1", "localId": "L1"})
    assert ack == {"result": "success", "id": ack["id"], "seq": 1, "localId": "L1"}
    for sock in (twin, app):
        body = body_of(await sock.next("update"))
        created = body["message"]["createdAt"]
        assert body == {
            "t": "new-message",
            "sid": sid,
            "message": {
                "id": ack["id"],
                "seq": 1,
                "content": {"t": "encrypted", "c": "c1"},
                "localId": "L1",
                "createdAt": created,
                "updatedAt": created,
            },
        }
    assert await sender.nothing("update", 0.3)  # the sender is skipped
    assert await other.nothing("update", 0.1)


async def test_session_updates_and_activity_cross_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    sid = await new_session(c, 1, user)
    session = await c.client(0, user, client_type="session-scoped", session_id=sid)
    app = await c.client(1, user)
    ack = await app.call("update-metadata", {"sid": sid, "metadata": "m1", "expectedVersion": 0})
    assert ack == {"result": "success", "version": 1, "metadata": "m1"}
    update = {"t": "update-session", "id": sid, "metadata": {"value": "m1", "version": 1}}
    assert body_of(await session.next("update")) == update
    assert body_of(await app.next("update")) == update  # the sender is included
    ack = await session.call("update-state", {"sid": sid, "agentState": "s1", "expectedVersion": 0})
    assert ack == {"result": "success", "version": 1, "agentState": "s1"}
    assert body_of(await app.next("update")) == {
        "t": "update-session",
        "id": sid,
        "agentState": {"value": "s1", "version": 1},
    }
    at = int(time.time() * 1000) - 1000
    await session.emit("session-alive", {"sid": sid, "time": at, "thinking": True})
    assert await app.next("ephemeral") == {
        "type": "activity",
        "id": sid,
        "active": True,
        "activeAt": at,
        "thinking": True,
    }


async def test_machine_events_cross_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    app = await c.client(1, user)
    await http(c, 1, user, "POST", "/v1/machines", {"id": "M1", "metadata": "meta"})
    body_of(await app.next("update"))  # new-machine
    body_of(await app.next("update"))  # update-machine (metadata version 1)
    daemon = await c.client(0, user, client_type="machine-scoped", machine_id="M1")
    online = await app.next("ephemeral")
    assert online == {
        "type": "machine-activity",
        "id": "M1",
        "active": True,
        "activeAt": online["activeAt"],
    }
    at = int(time.time() * 1000) - 1000
    await daemon.emit("machine-alive", {"machineId": "M1", "time": at})
    assert await app.next("ephemeral") == {
        "type": "machine-activity",
        "id": "M1",
        "active": True,
        "activeAt": at,
    }
    ack = await app.call(
        "machine-update-metadata", {"machineId": "M1", "metadata": "meta2", "expectedVersion": 1}
    )
    assert ack == {"result": "success", "version": 2, "metadata": "meta2"}
    assert body_of(await daemon.next("update")) == {
        "t": "update-machine",
        "machineId": "M1",
        "metadata": {"value": "meta2", "version": 2},
    }
    await daemon.disconnect()
    offline = await app.next("ephemeral")
    assert offline == {
        "type": "machine-activity",
        "id": "M1",
        "active": False,
        "activeAt": offline["activeAt"],
    }


async def test_artifacts_cross_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    creator = await c.client(0, user)
    watcher = await c.client(1, user)
    b64 = base64.b64encode
    payload = {
        "id": "a1",
        "header": b64(b"h").decode(),
        "body": b64(b"b").decode(),
        "dataEncryptionKey": b64(b"k").decode(),
    }
    ack = await creator.call("artifact-create", payload)
    assert ack["result"] == "success"
    body = body_of(await watcher.next("update"))
    assert body == {
        "t": "new-artifact",
        "artifactId": "a1",
        "seq": 0,
        "header": payload["header"],
        "headerVersion": 1,
        "body": payload["body"],
        "bodyVersion": 1,
        "dataEncryptionKey": payload["dataEncryptionKey"],
        "createdAt": body["createdAt"],
        "updatedAt": body["createdAt"],
    }
    assert body_of(await creator.next("update")) == body  # user-scoped-only: the sender too
    ack = await watcher.call("artifact-delete", {"artifactId": "a1"})
    assert ack == {"result": "success"}
    assert body_of(await creator.next("update")) == {"t": "delete-artifact", "artifactId": "a1"}


async def test_seq_gapless_under_load_from_two_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    sid = await new_session(c, 0, user)
    senders: list[TestSocket] = []
    for index in (0, 1):
        for _ in range(4):
            senders.append(
                await c.client(index, user, client_type="session-scoped", session_id=sid)
            )
    watchers = [await c.client(0, user), await c.client(1, user)]
    per_socket = 500
    loop = asyncio.get_running_loop()

    async def send_all(n: int, sock: TestSocket) -> list[Any]:
        futures = []
        for i in range(per_socket):
            future = loop.create_future()
            await sock.client.emit(
                "message",
                {"sid": sid, "message": f"{n}-{i}", "localId": f"{n}-{i}"},
                callback=lambda reply, f=future: f.set_result(reply),
            )
            futures.append(future)
        return await asyncio.wait_for(asyncio.gather(*futures), 120)

    acks = await asyncio.gather(*(send_all(n, s) for n, s in enumerate(senders)))
    total = per_socket * len(senders)
    seqs = sorted(a["seq"] for per in acks for a in per)
    assert seqs == list(range(1, total + 1))  # no gap, no duplicate
    for per in acks:  # one socket's messages are stored in the order it sent them
        mine = [a["seq"] for a in per]
        assert mine == sorted(mine)
    for watcher in watchers:
        updates = [await watcher.next("update", timeout=30) for _ in range(total)]
        assert sorted(u["body"]["message"]["seq"] for u in updates) == list(range(1, total + 1))
        user_seqs = [u["seq"] for u in updates]
        assert len(set(user_seqs)) == total  # per-user update seq: no duplicates


async def test_usage_ephemeral_cross_processes(shared_cluster: Cluster) -> None:
    c = shared_cluster
    user = unique_user()
    sid = await new_session(c, 0, user)
    session = await c.client(0, user, client_type="session-scoped", session_id=sid)
    app = await c.client(1, user)
    tokens, cost = {"total": 120, "input": 100, "output": 20}, {"total": 0.5}
    report = {"key": "claude", "sessionId": sid, "tokens": tokens, "cost": cost}
    ack = await session.call("usage-report", report)
    assert ack == {
        "success": True,
        "reportId": ack["reportId"],
        "createdAt": ack["createdAt"],
        "updatedAt": ack["updatedAt"],
    }
    usage = await app.next("ephemeral")
    assert usage == {
        "type": "usage",
        "id": sid,
        "key": "claude",
        "tokens": tokens,
        "cost": cost,
        "timestamp": usage["timestamp"],
    }
    assert isinstance(usage["timestamp"], int)
    assert await session.nothing("ephemeral", 0.2)  # user-scoped-only
