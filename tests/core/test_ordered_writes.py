"""ctx.write in ordered events: one socket's writes pipeline on SQLite, never reorder anywhere."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from happy_socket import Context, Registry, Tx, hookimpl
from happy_socket.app import App

from .in_process import started_with

log_table = sa.Table(
    "test_ordered_log",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("i", sa.Integer, nullable=False),
)


class OrderedPlugin:
    def __init__(self) -> None:
        self.trace: list[tuple[str, int]] = []

    @hookimpl
    def register_tables(self, metadata: sa.MetaData) -> None:
        log_table.to_metadata(metadata)

    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("append", self.append, ordered=True)

    async def append(self, ctx: Context, data: Any) -> Any:
        i = data["i"]
        self.trace.append(("start", i))

        async def unit(tx: Tx) -> int:
            await tx.execute(log_table.insert().values(i=i))
            if i % 7 == 3:
                raise ValueError(f"unit {i} fails")  # rolls back alone, later events go on
            return i

        try:
            await ctx.write(unit)
        except ValueError:
            self.trace.append(("failed", i))
            return {"result": "error", "i": i}
        self.trace.append(("committed", i))
        await asyncio.sleep(0)  # an emit, say: the next event must not overtake it
        self.trace.append(("answered", i))
        return {"result": "success", "i": i}


@pytest.fixture
async def started(db_url: str) -> Any:
    plugin = OrderedPlugin()
    app = await started_with(db_url, "ordered", plugin)
    yield app, plugin
    await app.shutdown()


async def test_writes_and_answers_keep_arrival_order(started: tuple[App, OrderedPlugin]) -> None:
    app, plugin = started
    handler = app.registry.get("append")
    assert handler is not None
    count = 60
    tasks = [
        asyncio.ensure_future(app.dispatcher.run_ordered("sid1", handler, {"i": i}))
        for i in range(count)
    ]
    acks = await asyncio.gather(*tasks)
    failing = {i for i in range(count) if i % 7 == 3}
    assert acks == [
        {"result": "error" if i in failing else "success", "i": i} for i in range(count)
    ]
    rows = await app.db.fetch_all(sa.select(log_table.c.i).order_by(log_table.c.n))
    assert [r["i"] for r in rows] == [i for i in range(count) if i not in failing]
    # every event finished its work (committed/failed, answered) in arrival order
    finished = [i for what, i in plugin.trace if what in ("answered", "failed")]
    assert finished == list(range(count))
    starts = [i for what, i in plugin.trace if what == "start"]
    assert starts == list(range(count))
    overlapped = any(
        plugin.trace.index(("start", i + 1)) < plugin.trace.index(("committed", i))
        for i in range(count - 1)
        if i not in failing
    )
    # the SQLite writer runs units in queue order, so the next event starts once this one's
    # unit is queued; on PostgreSQL units run concurrently, so events wait for each other
    assert overlapped is app.db.writes_in_order
    if app.db.writes_in_order:
        assert max(app.db.batch_sizes) > 1  # one socket's writes shared a commit


async def test_write_outside_ordered_events_is_a_plain_write(
    started: tuple[App, OrderedPlugin],
) -> None:
    app, _ = started
    conn = app.connection("sid1")
    ctx = Context(app=app, connection=conn, plugin="ordered", event="direct")

    async def unit(tx: Tx) -> int:
        await tx.execute(log_table.insert().values(i=-1))
        return 7

    assert await ctx.write(unit) == 7
    assert await app.db.fetch_val(sa.select(sa.func.count()).select_from(log_table)) == 1
