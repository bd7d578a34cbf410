"""Under load, slow down, never drop: a socket whose work is full stops being read.

A database slowed on purpose (every atomic unit sleeps first) takes a flood of ``message``
events sent without acks, as happy-agent and the older CLI send them: every one is stored, in
order, with a gapless seq, and relayed; the other sockets keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import httpx
import sqlalchemy as sa
from happy_socket_sessions.tables import session_messages, sessions

from happy_socket import App, Unit, hookimpl
from happy_socket.compat import engineio as engineio_compat
from happy_socket.testing import ServerHarness, TestSocket
from tests.conftest import ServerFactory

FLOOD = 5000
RSS_BUDGET_MB = 150  # growth of this test process (server and clients) during the flood


class SlowDatabase:
    """Every unit written sleeps ``delay`` seconds inside its transaction first."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @hookimpl
    def startup(self, app: App) -> None:
        db = app.db
        submit, write = db.submit, db.write

        def slowed(unit: Unit[Any]) -> Unit[Any]:
            async def slow(tx: Any) -> Any:
                await asyncio.sleep(self.delay)
                return await unit(tx)

            return slow

        db.submit = lambda unit: submit(slowed(unit))  # type: ignore[method-assign]
        db.write = lambda unit: write(slowed(unit))  # type: ignore[method-assign]


class Hold:
    """A plugin whose ``hold`` event waits for ``gate`` (``ordered`` as asked)."""

    def __init__(self, gate: asyncio.Event, *, ordered: bool) -> None:
        self.gate, self.ordered = gate, ordered

    @hookimpl
    def register_handlers(self, registry: Any) -> None:
        async def hold(ctx: Any, data: Any) -> Any:
            await self.gate.wait()
            size = len(data["pad"]) if isinstance(data, dict) and "pad" in data else None
            return {"result": "success"} if size is None else {"result": "success", "size": size}

        registry.add("hold", hold, ordered=self.ordered)


async def paused(app: App, sid: str) -> bool:
    """True once socket ``sid``'s reader is paused (waits up to 2 s)."""
    for _ in range(200):
        if app.dispatcher.paused(sid):
            return True
        await asyncio.sleep(0.01)
    return False


def rss_mb() -> float:
    """This process's peak resident set, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def new_session(server: ServerHarness, user: str) -> str:
    token = await server.token(user)
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.post(
            "/v1/sessions",
            json={"tag": "flood", "metadata": "m"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["session"]["id"])


async def stored(app: App, session_id: str) -> list[dict[str, Any]]:
    m = session_messages
    query = sa.select(m.c.seq, m.c.local_id, m.c.content).where(m.c.session_id == session_id)
    return await app.db.fetch_all(query.order_by(m.c.seq))


async def wait_idle(app: App, within: float = 30.0) -> None:
    """Until no event handler runs and the writer has nothing queued."""
    deadline = asyncio.get_running_loop().time() + within
    while app.dispatcher.in_flight:
        assert asyncio.get_running_loop().time() < deadline, "handlers never finished"
        await asyncio.sleep(0.05)


async def updates(sock: TestSocket, count: int, within: float = 60.0) -> list[Any]:
    """The next ``count`` ``update`` payloads of ``sock``."""
    return [await sock.next("update", timeout=within) for _ in range(count)]


async def test_a_flood_into_a_slow_database_is_stored_whole_in_order_and_relayed(
    make_server: ServerFactory,
) -> None:
    server = await make_server(plugins=[("slow-db", SlowDatabase(0.0005))])
    server.app.dispatcher.max_pending = 100  # a small lane, so the flood pauses it often
    sid = await new_session(server, "alice")
    receiver = await server.client("alice")
    sender = await server.client("alice", client_type="session-scoped", session_id=sid)
    bystander = await server.client("alice")
    stranger = await server.client("bob")
    before = rss_mb()

    for i in range(FLOOD):
        await sender.emit("message", {"sid": sid, "message": f"m{i}", "localId": f"l{i}"})
    paused_seen = False
    for _ in range(200):  # while the sender is held back, the others are answered
        paused_seen |= server.app.dispatcher.paused(sender.sid)
        assert await bystander.call("ping", timeout=2) == {}
        assert await stranger.call("ping", timeout=2) == {}
        if paused_seen:
            break
        await asyncio.sleep(0.01)
    assert paused_seen

    got = await updates(receiver, FLOOD)
    assert [u["body"]["message"]["seq"] for u in got] == list(range(1, FLOOD + 1))
    assert [u["body"]["message"]["localId"] for u in got] == [f"l{i}" for i in range(FLOOD)]
    rows = await stored(server.app, sid)
    assert [r["seq"] for r in rows] == list(range(1, FLOOD + 1))
    assert [r["content"] for r in rows] == [f"m{i}" for i in range(FLOOD)]
    assert rss_mb() - before < RSS_BUDGET_MB
    metrics = server.app.metrics.registry
    assert metrics.get_sample_value("happy_socket_paused_seconds_count") >= 1
    rejected = {"event": "message", "outcome": "rejected"}
    assert metrics.get_sample_value("happy_socket_events_total", rejected) is None
    assert metrics.get_sample_value("happy_socket_paused_sockets") == 0


async def test_a_sender_that_closes_while_paused_leaves_no_half_done_event(
    make_server: ServerFactory,
) -> None:
    server = await make_server(plugins=[("slow-db", SlowDatabase(0.002))])
    server.app.dispatcher.max_pending = 10
    sid = await new_session(server, "alice")
    sender = await server.client("alice", client_type="session-scoped", session_id=sid)
    for i in range(300):
        await sender.emit("message", {"sid": sid, "message": f"m{i}", "localId": f"l{i}"})
    for _ in range(500):
        if server.app.dispatcher.paused(sender.sid):
            break
        await asyncio.sleep(0.01)
    assert server.app.dispatcher.paused(sender.sid)
    await sender.disconnect()  # stops sending, closes while its reader waits
    await asyncio.sleep(0.5)
    await wait_idle(server.app)

    rows = await stored(server.app, sid)
    # each event ran once and whole: seqs gapless, every localId once, content matches
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["local_id"] for r in rows] == [f"l{i}" for i in range(len(rows))]
    assert [r["content"] for r in rows] == [f"m{i}" for i in range(len(rows))]
    last = await server.app.db.fetch_val(sa.select(sessions.c.seq).where(sessions.c.id == sid))
    assert last == len(rows)
    assert len(rows) > 10  # what was read before the close was processed


async def test_a_paused_socket_is_kept_alive_past_its_ping_timeout(
    make_server: ServerFactory,
) -> None:
    """A socket that is only slow is never cut: while its reader is paused (and cannot read the
    client's PONG), the server restarts the ping clock and keeps pinging the client."""
    gate = asyncio.Event()
    hold = Hold(gate, ordered=True)
    server = await make_server(plugins=[("hold", hold)], ping_interval=0.3, ping_timeout=0.5)
    server.app.dispatcher.max_pending = 1
    sock = await server.client("alice")
    first = asyncio.create_task(sock.call("hold", timeout=10))
    second = asyncio.create_task(sock.call("hold", timeout=10))
    assert await paused(server.app, sock.sid)
    await asyncio.sleep(2.0)  # four ping timeouts
    assert sock.client.connected
    gate.set()
    assert await first == {"result": "success"}
    assert await second == {"result": "success"}
    assert await sock.call("ping") == {}


def test_engineio_internals_backpressure_needs_are_there() -> None:
    """Tripwire: python-engineio still has the handler and socket tables we reach into."""
    import engineio

    eio = engineio.AsyncServer(async_mode="asgi")
    eio.on("message", lambda sid, data: None)
    engineio_compat.check(eio)
    assert callable(engineio.async_socket.AsyncSocket.send)
    assert "last_ping" in engineio.base_socket.BaseSocket.__init__.__code__.co_names


async def test_big_packets_pause_a_socket_by_bytes_and_its_user_by_bytes(
    make_server: ServerFactory,
) -> None:
    """Counting events is not enough when each may be 1 MB: the bytes of received packets
    whose events have not finished are bounded per socket and per user; past either bound the
    socket (or every socket of that user) is paused, and nothing is lost."""
    gate = asyncio.Event()
    server = await make_server(plugins=[("hold", Hold(gate, ordered=False))])
    dispatcher = server.app.dispatcher
    dispatcher.max_held_bytes = 300_000
    dispatcher.max_held_bytes_per_user = 500_000
    first = await server.client("alice")
    second = await server.client("alice")
    stranger = await server.client("bob")
    pad = "p" * 100_000
    calls = [asyncio.create_task(first.call("hold", {"pad": pad}, timeout=20)) for _ in range(6)]
    assert await paused(server.app, first.sid)  # ~300 KB held by three events: it waits
    assert not dispatcher.paused(second.sid)
    calls += [asyncio.create_task(second.call("hold", {"pad": pad}, timeout=20)) for _ in range(3)]
    assert await paused(server.app, second.sid)  # the user's 500 KB: its other socket waits
    assert await stranger.call("ping", timeout=2) == {}  # another user is not held back
    gate.set()
    answers = await asyncio.gather(*calls)
    assert answers == [{"result": "success", "size": 100_000}] * 9  # every event, none lost
    assert not dispatcher.paused(first.sid) and not dispatcher.paused(second.sid)
    assert await first.call("ping") == {} and await second.call("ping") == {}
