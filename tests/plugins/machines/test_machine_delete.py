"""DELETE /v1/machines/:id, machine delete listeners, and the machines list/delete commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from happy_socket_access_keys.tables import access_keys
from happy_socket_machines.tables import machines

from happy_socket import Tx
from happy_socket.cli import cli
from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import SECRET, body_of

NOT_FOUND = {"error": "Machine not found"}


async def anonymous(server: ServerHarness, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request without a token."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.request(method, path, **kwargs)


async def keys_of(server: ServerHarness, machine_id: str) -> list[tuple[str, str]]:
    t = access_keys
    rows = await server.app.db.fetch_all(
        sa.select(t.c.account_id, t.c.session_id).where(t.c.machine_id == machine_id)
    )
    return sorted((r["account_id"], r["session_id"]) for r in rows)


async def test_delete_machine_with_its_keys(both: ServerHarness) -> None:
    app_ = both.app
    sessions_svc, machines_svc = app_.service("sessions"), app_.service("machines")
    for user in ("alice", "bob"):
        await app_.accounts.ensure(user)  # a write never creates the account
    s1, _ = await sessions_svc.create_or_load("alice", "t1", "m")
    s2, _ = await sessions_svc.create_or_load("alice", "t2", "m")
    for mid in ("m1", "m2"):
        await machines_svc.create_or_load("alice", mid, "meta")
    await machines_svc.create_or_load("bob", "bobs", "meta")
    keys = app_.service("access-keys")
    for sid in (s1["id"], s2["id"]):
        for mid in ("m1", "m2"):
            await keys.create("alice", sid, mid, "k")
    app = await both.client("alice")
    daemon = await both.client("alice", client_type="machine-scoped", machine_id="m1")
    sess = await both.client("alice", client_type="session-scoped", session_id=s1["id"])
    bob = await both.client("bob")
    await app.next("ephemeral")  # the daemon's machine-activity
    headers = {"Authorization": f"Bearer {await both.token('alice')}"}
    async with httpx.AsyncClient(base_url=both.url, headers=headers) as http:
        resp = await http.delete("/v1/machines/m1")
        assert (resp.status_code, resp.json()) == (200, {"success": True})
        assert body_of(await app.next("update")) == {"t": "delete-machine", "machineId": "m1"}
        quiet = await asyncio.gather(*(s.nothing("update", 0.2) for s in (daemon, sess, bob)))
        assert all(quiet)
        assert await keys_of(both, "m1") == []
        assert await keys_of(both, "m2") == sorted([("alice", s1["id"]), ("alice", s2["id"])])
        # sessions are kept; the machine is gone for every route
        assert await sessions_svc.get("alice", s1["id"]) is not None
        resp = await http.get("/v1/machines/m1")
        assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
        assert [m["id"] for m in (await http.get("/v1/machines")).json()] == ["m2"]
        # a repeat, an unknown id and bob's machine: 404, nothing changes or is emitted
        for target in ("m1", "nope", "bobs"):
            resp = await http.delete(f"/v1/machines/{target}")
            assert (resp.status_code, resp.json()) == (404, NOT_FOUND)
        assert await machines_svc.get("bob", "bobs") is not None
        assert await app.nothing("update", 0.2)
        # the daemon still running re-creates it at its next POST /v1/machines
        resp = await http.post("/v1/machines", json={"id": "m1", "metadata": "again"})
        assert resp.json()["machine"]["metadata"] == "again"
        assert body_of(await app.next("update"))["t"] == "new-machine"
        resp = await anonymous(both, "DELETE", "/v1/machines/m2")
        assert resp.status_code == 401
    count = await app_.db.fetch_val(sa.select(sa.func.count()).select_from(machines))
    assert count == 3  # m1 (again), m2, bobs


async def test_delete_listeners_run_in_the_unit(both: ServerHarness) -> None:
    svc = both.app.service("machines")
    seen: list[tuple[str, str]] = []

    async def listener(tx: Tx, user_id: str, machine_id: str) -> None:
        left = await tx.fetch_val(
            sa.select(sa.func.count()).select_from(machines).where(machines.c.id == machine_id)
        )
        assert left == 0  # the row is already gone inside the same unit
        seen.append((user_id, machine_id))

    svc.add_delete_listener(listener)
    await both.app.accounts.ensure("alice")  # a write never creates the account
    await svc.create_or_load("alice", "m1", "meta")
    assert await svc.delete("bob", "m1") is False
    assert seen == []
    assert await svc.owns("alice", "m1")
    assert await svc.delete("alice", "m1") is True
    assert seen == [("alice", "m1")]
    assert await svc.owns("alice", "m1") is False
    assert await svc.delete("alice", "m1") is False


async def test_a_failing_listener_rolls_the_delete_back(srv: ServerHarness) -> None:
    svc = srv.app.service("machines")

    async def listener(tx: Tx, user_id: str, machine_id: str) -> None:
        raise RuntimeError("boom")

    svc.add_delete_listener(listener)
    await srv.app.accounts.ensure("alice")  # a write never creates the account
    await svc.create_or_load("alice", "m1", "meta")
    app = await srv.client("alice")
    with pytest.raises(RuntimeError):
        await svc.delete("alice", "m1")
    assert await svc.get("alice", "m1") is not None
    assert await app.nothing("update", 0.2)


def test_cli_machines_list_and_delete(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    common = ["--db", db, "--secret", SECRET]

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["machines", *args, *common])

    for user in ("u1", "u2"):  # the accounts exist (a write never creates one)
        assert runner.invoke(cli, ["token", user, *common]).exit_code == 0

    assert json.loads(run("list", "--user", "u1").output) == {"machines": []}
    made = json.loads(run("create", "--user", "u1", "--id", "M", "--metadata", "x").output)
    run("create", "--user", "u2", "--id", "N")
    listed = run("list", "--user", "u1")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == {"machines": [{**made["machine"], "seq": 0}]}
    foreign = run("delete", "--user", "u2", "M")
    assert foreign.exit_code == 1 and "Error: Machine not found" in foreign.output
    deleted = run("delete", "--user", "u1", "M")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.output) == {"success": True}
    assert run("delete", "--user", "u1", "M").exit_code == 1
    assert json.loads(run("list", "--user", "u1").output) == {"machines": []}
    assert len(json.loads(run("list", "--user", "u2").output)["machines"]) == 1
