"""session-alive / session-end / the timeout sweep / app focus (docs/protocol.md, "Presence")."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from happy_socket_sessions.tables import sessions

from happy_socket.presence import LazyActivityWriter, heartbeat_time
from happy_socket.testing import ServerHarness
from tests.plugins.sessions.support import MIN, FakeClock, make_app


async def new_session(server: ServerHarness, user: str = "alice", tag: str = "t1") -> str:
    await server.app.accounts.ensure(user)  # a write never creates the account
    session, _ = await server.app.service("sessions").create_or_load(user, tag, "meta0")
    return str(session["id"])


async def row(server: ServerHarness, sid: str) -> dict[str, object]:
    found = await server.app.db.fetch_one(
        sa.select(sessions.c.active, sessions.c.last_active_at).where(sessions.c.id == sid)
    )
    assert found is not None
    return {"active": bool(found["active"]), "at": found["last_active_at"]}


def activity(sid: str, active: bool, at: int, thinking: bool = False) -> dict[str, object]:
    return {"type": "activity", "id": sid, "active": active, "activeAt": at, "thinking": thinking}


async def test_session_alive_announces_to_apps_only(srv: ServerHarness, clock: FakeClock) -> None:
    sid = await new_session(srv)
    machine = await srv.client("alice", client_type="machine-scoped", machine_id="m1")
    app = await srv.client("alice")
    sess = await srv.client("alice", client_type="session-scoped", session_id=sid)
    bob = await srv.client("bob")
    now = clock.now
    await sess.emit("session-alive", {"sid": sid, "time": now - 5, "thinking": True})
    assert await app.next("ephemeral") == activity(sid, True, now - 5, True)
    await sess.emit("session-alive", {"sid": sid, "time": now + 999_999})  # clamped to now
    assert await app.next("ephemeral") == activity(sid, True, now)
    await sess.emit("session-alive", {"sid": sid, "time": now, "thinking": "yes"})
    assert await app.next("ephemeral") == activity(sid, True, now)
    quiet = await asyncio.gather(*(s.nothing("ephemeral", 0.2) for s in (sess, machine, bob)))
    assert all(quiet)


async def test_session_alive_ignores_bad_old_and_foreign(
    srv: ServerHarness, clock: FakeClock
) -> None:
    sid = await new_session(srv)
    bobs = await new_session(srv, user="bob")
    app = await srv.client("alice")
    now = clock.now
    for payload in (
        None,
        [],
        7,
        {},
        {"sid": sid},
        {"sid": sid, "time": "now"},
        {"sid": sid, "time": True},
        {"sid": sid, "time": None},
        {"sid": 5, "time": now},
        {"sid": sid, "time": now - 10 * MIN - 1},  # older than 10 minutes
        {"sid": bobs, "time": now},  # not hers
        {"sid": "nope", "time": now},
    ):
        await app.emit("session-alive", payload)
        await app.emit("session-end", payload)
    await app.emit("session-alive")
    assert await app.call("ping") == {}
    assert await app.nothing("ephemeral", 0.3)
    assert (await row(srv, bobs))["active"] is True


async def test_session_end_then_heartbeats_suppressed_for_a_minute(
    srv: ServerHarness, clock: FakeClock
) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    sess = await srv.client("alice", client_type="session-scoped", session_id=sid)
    svc = srv.app.service("sessions")
    await sess.emit("session-alive", {"sid": sid, "time": clock.advance(31_000)})
    await app.next("ephemeral")
    assert svc.writer.pending  # a lazy write is queued ...
    end = clock.advance(1000)
    await sess.emit("session-end", {"sid": sid, "time": end})
    assert await app.next("ephemeral") == activity(sid, False, end)
    assert svc.writer.pending == {}  # ... and dropped by session-end
    assert await row(srv, sid) == {"active": False, "at": end}
    clock.advance(59_000)
    await sess.emit("session-alive", {"sid": sid, "time": clock.now})
    assert await app.nothing("ephemeral", 0.3)
    clock.advance(1_500)
    await sess.emit("session-alive", {"sid": sid, "time": clock.now})
    assert await app.next("ephemeral") == activity(sid, True, clock.now)
    await svc.writer.flush()
    assert await row(srv, sid) == {"active": True, "at": clock.now}


async def test_create_or_load_accepts_heartbeats_again(
    srv: ServerHarness, clock: FakeClock
) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    await app.emit("session-end", {"sid": sid, "time": clock.now})
    assert (await app.next("ephemeral"))["active"] is False
    again, created = await srv.app.service("sessions").create_or_load("alice", "t1", "other")
    assert (again["id"], created, again["metadata"]) == (sid, False, "meta0")
    await app.emit("session-alive", {"sid": sid, "time": clock.advance(10)})
    assert await app.next("ephemeral") == activity(sid, True, clock.now)


async def test_lazy_write_threshold_and_batch_flush(both: ServerHarness, clock: FakeClock) -> None:
    svc = both.app.service("sessions")
    sids = [await new_session(both, tag=f"t{i}") for i in range(5)]
    start = clock.now
    app = await both.client("alice")
    clock.advance(10_000)
    for sid in sids:  # first heartbeat of each: queued
        await app.emit("session-alive", {"sid": sid, "time": clock.now})
    for _ in sids:
        await app.next("ephemeral")
    assert len(svc.writer.pending) == 5
    await svc.writer.flush()
    assert svc.writer.writes == 5
    assert [await row(both, s) for s in sids] == [{"active": True, "at": clock.now}] * 5
    first = clock.now
    # moved 30 s or less: not written
    for step in (10_000, 10_000, 10_000):
        clock.advance(step)
        await app.emit("session-alive", {"sid": sids[0], "time": clock.now})
        await app.next("ephemeral")
    assert svc.writer.pending == {}
    await svc.writer.flush()
    assert svc.writer.writes == 5
    assert await row(both, sids[0]) == {"active": True, "at": first}
    # moved more than 30 s: written at the next flush
    clock.advance(1)
    await app.emit("session-alive", {"sid": sids[0], "time": clock.now})
    await app.next("ephemeral")
    assert svc.writer.pending == {("alice", sids[0]): clock.now}
    await svc.writer.flush()
    assert await row(both, sids[0]) == {"active": True, "at": clock.now}
    assert clock.now - start == 40_001


async def test_lazy_writer_flushes_on_shutdown(sqlite_url: str, clock: FakeClock) -> None:
    app = make_app(sqlite_url, clock)
    await app.startup()
    svc = app.service("sessions")
    await app.accounts.ensure("alice")  # a write never creates the account
    session, _ = await svc.create_or_load("alice", "t", "m")
    assert await svc.heartbeat("alice", session["id"], clock.advance(60_000), False)
    await app.shutdown()
    app2 = make_app(sqlite_url, clock)
    await app2.startup()
    try:
        assert (await app2.service("sessions").get("alice", session["id"]))["activeAt"] == clock.now
    finally:
        await app2.shutdown()


async def test_writer_batches_and_survives_a_failing_write() -> None:
    batches: list[dict[str, int]] = []
    fail = [True]

    async def write(batch: dict[str, int]) -> None:
        if fail[0]:
            fail[0] = False
            raise RuntimeError("db down")
        batches.append(batch)

    clock = FakeClock(1_000_000)
    writer: LazyActivityWriter[str] = LazyActivityWriter(write, clock=clock, max_batch=2)
    assert [writer.record(k, 1_000_000) for k in "abc"] == [True] * 3
    assert await writer.flush() == 0  # failed: forgotten, so the next heartbeat queues again
    assert writer.pending == {"c": 1_000_000}
    assert writer.record("a", 1_000_001)
    assert await writer.flush() == 2
    assert batches == [{"c": 1_000_000, "a": 1_000_001}]
    assert writer.record("c", 1_000_002) is False


def test_heartbeat_time_rules() -> None:
    now = 10 * MIN * 2
    assert heartbeat_time(now + 5, now) == now
    assert heartbeat_time(now - 10 * MIN, now) == now - 10 * MIN
    assert heartbeat_time(now - 10 * MIN - 1, now) is None
    assert heartbeat_time(now - 1.5, now) == now - 2
    for bad in (None, "1", True, float("nan"), float("inf"), [1]):
        assert heartbeat_time(bad, now) is None


async def test_sweep_times_out_once(srv: ServerHarness, clock: FakeClock) -> None:
    svc = srv.app.service("sessions")
    sid = await new_session(srv)
    fresh = await new_session(srv, tag="fresh")
    started = clock.now
    app = await srv.client("alice")
    clock.advance(5 * MIN)
    await app.emit("session-alive", {"sid": fresh, "time": clock.now})
    await app.next("ephemeral")
    clock.advance(5 * MIN + 1)
    assert await svc.sweep() == 1  # the heartbeat of `fresh` was flushed first
    assert await app.next("ephemeral") == activity(sid, False, started)
    assert await svc.sweep() == 0
    assert await app.nothing("ephemeral", 0.2)
    assert (await row(srv, sid))["active"] is False
    assert (await row(srv, fresh))["active"] is True


async def test_sweep_from_two_processes_flips_each_row_once(db_url: str, clock: FakeClock) -> None:
    apps = [make_app(db_url, clock), make_app(db_url, clock)]
    for a in apps:
        await a.startup()
    try:
        svc = apps[0].service("sessions")
        for i in range(3):
            await apps[0].accounts.ensure(f"u{i}")  # a write never creates the account
        for i in range(20):
            await svc.create_or_load(f"u{i % 3}", f"t{i}", "m")
        clock.advance(11 * MIN)
        counts = await asyncio.gather(*(a.service("sessions").sweep() for a in apps))
        assert sum(counts) == 20
    finally:
        for a in apps:
            await a.shutdown()


async def test_app_focus(srv: ServerHarness) -> None:
    svc = srv.app.service("sessions")
    assert await svc.app_active("alice") is False
    bg = await srv.client("alice", appState="background")
    assert await svc.app_active("alice") is False
    fg = await srv.client("alice", appState="active")
    assert await svc.app_active("alice") is True
    assert await fg.call("app-state", {"state": "background"}) == {"result": "success"}
    assert await svc.app_active("alice") is False
    assert await bg.call("app-state", {"state": "active"}) == {"result": "success"}
    assert await svc.app_active("alice") is True
    assert await svc.app_active("bob") is False
    await bg.disconnect()
    await asyncio.sleep(0.2)
    assert await svc.app_active("alice") is False
    invalid = {"result": "error", "message": "Invalid parameters"}
    assert await fg.call("app-state", None) == invalid
    assert await fg.call("app-state", {"state": 1}) == invalid
    daemon = await srv.client("alice", client_type="machine-scoped", machine_id="m")
    assert await daemon.call("app-state", {"state": "active"}) == {
        "result": "error",
        "message": "Only user-scoped sockets have an app state",
    }
    assert await svc.app_active("alice") is False


async def test_app_focus_across_processes_with_redis(
    make_server: object, sqlite_url: str, redis_url: str, clock: FakeClock
) -> None:
    servers = [
        await make_server(app=make_app(sqlite_url, clock, redis=redis_url))  # type: ignore[operator]
        for _ in range(2)
    ]
    user = "focus-" + servers[0].app.service("sessions").focus.token
    one, two = (s.app.service("sessions") for s in servers)
    fg = await servers[0].client(user, appState="active")
    assert await one.app_active(user) and await two.app_active(user)
    assert await fg.call("app-state", {"state": "background"}) == {"result": "success"}
    assert not await two.app_active(user)
    await fg.call("app-state", {"state": "active"})
    assert await two.app_active(user)
    await fg.disconnect()
    await asyncio.sleep(0.2)
    assert not await two.app_active(user)


@pytest.mark.parametrize("state", ["active", None])
async def test_focus_refresh_keeps_entries(srv: ServerHarness, state: str | None) -> None:
    focus = srv.app.service("sessions").focus
    await focus.refresh()  # without Redis: nothing to do, no error
    extra = {} if state is None else {"appState": state}
    await srv.client("carol", **extra)
    assert focus.local("carol") is (state == "active")


async def test_heartbeats_do_not_touch_the_database(srv: ServerHarness, clock: FakeClock) -> None:
    sid = await new_session(srv)
    app = await srv.client("alice")
    db = srv.app.db
    calls: list[str] = []
    fetch_one, write = db.fetch_one, db.write

    async def counting_fetch_one(query: object) -> object:
        calls.append("read")
        return await fetch_one(query)  # type: ignore[arg-type]

    async def counting_write(unit: object) -> object:
        calls.append("write")
        return await write(unit)  # type: ignore[arg-type]

    db.fetch_one = counting_fetch_one  # type: ignore[method-assign,assignment]
    db.write = counting_write  # type: ignore[method-assign,assignment]
    try:
        for _ in range(20):
            await app.emit("session-alive", {"sid": sid, "time": clock.advance(1000)})
            await app.next("ephemeral")
    finally:
        db.fetch_one, db.write = fetch_one, write  # type: ignore[method-assign]
    assert calls == []  # ownership was cached by create_or_load; writes wait for the flush
    # one lazy write queued: the first heartbeat; the next 19 moved less than 30 s
    assert srv.app.service("sessions").writer.pending == {("alice", sid): clock.now - 19_000}


async def test_shared_presence_entry_of_a_silent_process_expires(redis_url: str) -> None:
    from happy_socket.presence import SharedPresence

    prefix = "happy_socket:test-expiry:"
    dead, alive = SharedPresence(prefix, redis_url, ttl_ms=150), SharedPresence(prefix, redis_url)
    await dead.start()
    await alive.start()
    try:
        await dead.set("sid1", "k", True)
        assert await alive.anywhere("k")
        await asyncio.sleep(0.3)  # `dead` never refreshes, like a killed process
        assert not await alive.anywhere("k")
        assert dead.local("k")
    finally:
        await alive.stop()
        await dead.stop()
