"""Machines (docs/events.md, docs/http/sessions.md): compare-and-set, presence, HTTP, library API, CLI."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from happy_socket_machines.tables import machines

from happy_socket import Conflict
from happy_socket.cli import cli
from happy_socket.testing import ServerHarness, TestSocket
from tests.plugins.sessions.support import MIN, SECRET, FakeClock, body_of, make_app


async def new_machine(server: ServerHarness, user: str = "alice", mid: str = "m1") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    _, created = await server.app.service("machines").create_or_load(user, mid, "meta")
    assert created
    return mid


async def sockets(server: ServerHarness, mid: str) -> dict[str, TestSocket]:
    return {
        "machine": await server.client("alice", client_type="machine-scoped", machine_id=mid),
        "other_machine": await server.client(
            "alice", client_type="machine-scoped", machine_id="elsewhere"
        ),
        "session": await server.client("alice", client_type="session-scoped", session_id="s"),
        "bob": await server.client("bob"),
        "app": await server.client("alice"),
    }


FIELDS = (("machine-update-metadata", "metadata", 1), ("machine-update-state", "daemonState", 0))


async def test_update_success_mismatch_and_recipients(
    both: ServerHarness, clock: FakeClock
) -> None:
    mid = await new_machine(both)
    s = await sockets(both, mid)
    for event, field, current in FIELDS:
        clock.advance(1000)
        payload = {"machineId": mid, field: "v", "expectedVersion": current}
        ack = await s["machine"].call(event, payload)
        assert ack == {"result": "success", "version": current + 1, field: "v"}
        expected = {
            "t": "update-machine",
            "machineId": mid,
            field: {"value": "v", "version": current + 1},
        }
        for name in ("machine", "app"):
            assert body_of(await s[name].next("update")) == expected
        ack = await s["app"].call(event, {**payload, field: "w"})
        assert ack == {"result": "version-mismatch", "version": current + 1, field: "v"}
        machine = await both.app.service("machines").get("alice", mid)
        if field == "daemonState":  # also marks the machine active now
            assert (machine["active"], machine["activeAt"]) == (True, clock.now)
        else:
            assert machine["active"] is False
    quiet = await asyncio.gather(
        *(s[n].nothing("update", 0.2) for n in ("other_machine", "session", "bob"))
    )
    assert all(quiet)


@pytest.mark.parametrize("event", ["machine-update-metadata", "machine-update-state"])
async def test_update_errors(srv: ServerHarness, event: str) -> None:
    mid = await new_machine(srv)
    await new_machine(srv, user="bob", mid="bobs")
    app = await srv.client("alice")
    field = "metadata" if event == "machine-update-metadata" else "daemonState"
    invalid = {"result": "error", "message": "Invalid parameters"}
    for payload in (
        None,
        [],
        3,
        "x",
        {},
        {"machineId": mid},
        {"machineId": mid, field: "v"},
        {"machineId": mid, field: None, "expectedVersion": 0},
        {"machineId": mid, field: 5, "expectedVersion": 0},
        {"machineId": mid, field: "v", "expectedVersion": "1"},
        {"machineId": mid, field: "v", "expectedVersion": False},
        {"machineId": "", field: "v", "expectedVersion": 0},
        {"machineId": 9, field: "v", "expectedVersion": 0},
        {"machineId": "m" * 5000, field: "v", "expectedVersion": 0},
    ):
        assert await app.call(event, payload) == invalid, payload
    assert await app.call(event) == invalid
    missing = {"result": "error", "message": "Machine not found"}
    for other in ("bobs", "nope"):
        assert await app.call(event, {"machineId": other, field: "v", "expectedVersion": 0}) == (
            missing
        )
    assert (await srv.app.service("machines").get("bob", "bobs"))["metadata"] == "meta"


async def test_eight_racing_writers(both: ServerHarness) -> None:
    mid = await new_machine(both)
    writers = [await both.client("alice") for _ in range(8)]
    for event, field, current in FIELDS:
        acks = await asyncio.gather(
            *(
                w.call(event, {"machineId": mid, field: f"v{i}", "expectedVersion": current})
                for i, w in enumerate(writers)
            )
        )
        wins = [a for a in acks if a["result"] == "success"]
        assert len(wins) == 1, acks
        winner = wins[0][field]
        losers = [a for a in acks if a["result"] != "success"]
        expected = {"result": "version-mismatch", "version": current + 1, field: winner}
        assert losers == [expected] * 7


async def test_machine_alive_connect_and_disconnect(srv: ServerHarness, clock: FakeClock) -> None:
    svc = srv.app.service("machines")
    mid = await new_machine(srv)
    await new_machine(srv, user="bob", mid="bobs")
    app = await srv.client("alice")
    session = await srv.client("alice", client_type="session-scoped", session_id="s")
    assert svc.is_online("alice", mid) is False
    daemon = await srv.client("alice", client_type="machine-scoped", machine_id=mid)
    assert await app.next("ephemeral") == {
        "type": "machine-activity",
        "id": mid,
        "active": True,
        "activeAt": clock.now,
    }
    assert svc.is_online("alice", mid) and not svc.is_online("bob", mid)
    now = clock.advance(40_000)
    await daemon.emit("machine-alive", {"machineId": mid, "time": now + 50_000})  # clamped
    assert await app.next("ephemeral") == {
        "type": "machine-activity",
        "id": mid,
        "active": True,
        "activeAt": now,
    }
    for payload in (
        None,
        {},
        {"machineId": mid},
        {"machineId": mid, "time": "x"},
        {"machineId": mid, "time": now - 10 * MIN - 1},
        {"machineId": "bobs", "time": now},
        {"machineId": "nope", "time": now},
        {"machineId": ["x"], "time": now},
    ):
        await daemon.emit("machine-alive", payload)
    assert await daemon.call("ping") == {}
    assert await app.nothing("ephemeral", 0.3)
    assert await session.nothing("ephemeral", 0.05)
    assert svc.writer.pending == {("alice", mid): now}
    await svc.writer.flush()
    machine = await svc.get("alice", mid)
    assert (machine["active"], machine["activeAt"]) == (True, now)
    clock.advance(10)
    await daemon.disconnect()
    assert await app.next("ephemeral") == {
        "type": "machine-activity",
        "id": mid,
        "active": False,
        "activeAt": clock.now,
    }
    assert svc.is_online("alice", mid) is False


async def test_sweep_times_out_once(srv: ServerHarness, clock: FakeClock) -> None:
    svc = srv.app.service("machines")
    mid = await new_machine(srv)
    await new_machine(srv, mid="idle")  # never active: not announced
    app = await srv.client("alice")
    await app.emit("machine-alive", {"machineId": mid, "time": clock.advance(1000)})
    await app.next("ephemeral")
    at = clock.now
    clock.advance(10 * MIN + 1)
    assert await svc.sweep() == 1
    assert await app.next("ephemeral") == {
        "type": "machine-activity",
        "id": mid,
        "active": False,
        "activeAt": at,
    }
    assert await svc.sweep() == 0
    assert await app.nothing("ephemeral", 0.2)
    found = await srv.app.db.fetch_val(sa.select(machines.c.active).where(machines.c.id == mid))
    assert not found


async def test_sweep_from_two_processes_flips_each_row_once(db_url: str, clock: FakeClock) -> None:
    apps = [make_app(db_url, clock), make_app(db_url, clock)]
    for a in apps:
        await a.startup()
    try:
        svc = apps[0].service("machines")
        for i in range(3):
            await apps[0].accounts.ensure(f"u{i}")  # a write never creates the account
        for i in range(20):
            await svc.create_or_load(f"u{i % 3}", f"m{i}", "meta", "state")
            await svc.compare_and_set(f"u{i % 3}", f"m{i}", "daemonState", "s", 1)  # active
        clock.advance(11 * MIN)
        counts = await asyncio.gather(*(a.service("machines").sweep() for a in apps))
        assert sum(counts) == 20
    finally:
        for a in apps:
            await a.shutdown()


MACHINE_KEYS = [
    "id",
    "metadata",
    "metadataVersion",
    "daemonState",
    "daemonStateVersion",
    "dataEncryptionKey",
    "active",
    "activeAt",
    "createdAt",
    "updatedAt",
]


async def test_http_create_read_list(both: ServerHarness, clock: FakeClock) -> None:
    app = await both.client("alice")
    daemon = await both.client("alice", client_type="machine-scoped", machine_id="m1")
    await app.next("ephemeral")
    other_daemon = await both.client("alice", client_type="machine-scoped", machine_id="m2")
    await app.next("ephemeral")
    key = base64.b64encode(b"k\x00y").decode()
    async with httpx.AsyncClient(base_url=both.url) as http:
        auth = {"Authorization": f"Bearer {await both.token('alice')}"}
        body = {"id": "m1", "metadata": "meta", "daemonState": "ds", "dataEncryptionKey": key}
        resp = await http.post("/v1/machines", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        machine = resp.json()["machine"]
        now = clock.now
        assert machine == {
            "id": "m1",
            "metadata": "meta",
            "metadataVersion": 1,
            "daemonState": "ds",
            "daemonStateVersion": 1,
            "dataEncryptionKey": key,
            "active": False,
            "activeAt": now,
            "createdAt": now,
            "updatedAt": now,
        }
        assert list(machine) == MACHINE_KEYS
        first = await app.next("update")
        assert body_of(first) == {
            "t": "new-machine",
            "machineId": "m1",
            "seq": 0,
            **{k: v for k, v in machine.items() if k != "id"},
        }
        second = await app.next("update")
        update_machine = {
            "t": "update-machine",
            "machineId": "m1",
            "metadata": {"value": "meta", "version": 1},
        }
        assert body_of(second, first["seq"] + 1) == update_machine
        assert body_of(await daemon.next("update")) == update_machine
        assert await other_daemon.nothing("update", 0.2)
        # existing: returned as is, nothing emitted
        clock.advance(5)
        again = await http.post("/v1/machines", json={"id": "m1", "metadata": "x"}, headers=auth)
        assert again.json() == {"machine": machine}
        assert await app.nothing("update", 0.2)
        # without daemonState: version 0
        resp = await http.post("/v1/machines", json={"id": "m2", "metadata": "x"}, headers=auth)
        m2 = resp.json()["machine"]
        assert (m2["daemonState"], m2["daemonStateVersion"], m2["dataEncryptionKey"]) == (
            None,
            0,
            None,
        )
        # another user's id: 409
        bob = {"Authorization": f"Bearer {await both.token('bob')}"}
        resp = await http.post("/v1/machines", json={"id": "m1", "metadata": "b"}, headers=bob)
        assert resp.status_code == 409
        assert resp.json() == {"error": "Machine ID already exists for another account"}
        # read and list
        resp = await http.get("/v1/machines/m1", headers=auth)
        assert resp.json() == {"machine": {**machine, "seq": 0}}
        assert list(resp.json()["machine"]) == [*MACHINE_KEYS[:6], "seq", *MACHINE_KEYS[6:]]
        resp = await http.get("/v1/machines/m1", headers=bob)
        assert (resp.status_code, resp.json()) == (404, {"error": "Machine not found"})
        listed = (await http.get("/v1/machines", headers=auth)).json()
        assert [m["id"] for m in listed] == ["m2", "m1"]  # most recently active first
        assert (await http.get("/v1/machines", headers=bob)).json() == []
        for bad in (
            {},
            {"id": "m3"},
            {"metadata": "m"},
            {"id": "", "metadata": "m"},
            {"id": 3, "metadata": "m"},
            {"id": "m3", "metadata": 1},
            {"id": "m3", "metadata": "m", "daemonState": 2},
            {"id": "m3", "metadata": "m", "dataEncryptionKey": "%%"},
        ):
            resp = await http.post("/v1/machines", json=bad, headers=auth)
            assert resp.status_code == 400, bad
        assert (await http.get("/v1/machines")).status_code == 401


async def test_library_conflict_and_owns(srv: ServerHarness) -> None:
    svc = srv.app.service("machines")
    await new_machine(srv)
    with pytest.raises(Conflict):
        await svc.create_or_load("bob", "m1", "x")
    assert await svc.owns("alice", "m1") and not await svc.owns("bob", "m1")
    machine, created = await svc.create_or_load("alice", "m1", "other")
    assert not created and machine["metadata"] == "meta"
    assert [m["id"] for m in await svc.list("alice")] == ["m1"]


def test_cli_machines_create(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    base = ["machines", "create", "--db", db, "--secret", SECRET]
    for user in ("u1", "u2"):  # the accounts exist (a write never creates one)
        assert runner.invoke(cli, ["token", user, "--db", db, "--secret", SECRET]).exit_code == 0
    result = runner.invoke(cli, [*base, "--user", "u1", "--id", "M", "--metadata", "meta"])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    assert out["created"] is True
    assert out["machine"]["id"] == "M" and out["machine"]["metadataVersion"] == 1
    again = json.loads(runner.invoke(cli, [*base, "--user", "u1", "--id", "M"]).output)
    assert again == {"created": False, "machine": out["machine"]}
    clash = runner.invoke(cli, [*base, "--user", "u2", "--id", "M"])
    assert clash.exit_code != 0
    assert "another account" in clash.output


async def test_online_across_processes_with_redis(
    make_server: Any, sqlite_url: str, redis_url: str, clock: FakeClock
) -> None:
    servers = [
        await make_server(app=make_app(sqlite_url, clock, redis=redis_url)) for _ in range(2)
    ]
    one, two = (s.app.service("machines") for s in servers)
    user = "online-" + one.presence.token
    await servers[0].app.accounts.ensure(user)  # a write never creates the account
    await one.create_or_load(user, user + "-m", "meta")
    mid = user + "-m"
    assert not await two.online(user, mid)
    daemon = await servers[0].client(user, client_type="machine-scoped", machine_id=mid)
    assert one.is_online(user, mid) and not two.is_online(user, mid)  # is_online: this process
    assert await two.online(user, mid) and await one.online(user, mid)
    assert not await two.online(user, "other") and not await two.online("x", mid)
    await one.presence.refresh()
    assert await two.online(user, mid)
    await daemon.disconnect()
    for _ in range(50):
        if not one.is_online(user, mid):
            break
        await asyncio.sleep(0.02)
    assert not await two.online(user, mid)
