"""Shutdown lets running handlers finish their writes before the database closes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from happy_socket import Context, Registry, Tx, hookimpl
from happy_socket import app as app_module
from happy_socket.app import App

from .in_process import started_with


class SlowWriter:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.closed_db_seen_by_hook: bool | None = None

    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("slow-write", self.slow_write)

    @hookimpl
    def shutdown(self, app: App) -> None:
        self.closed_db_seen_by_hook = not app.db.connected

    async def slow_write(self, ctx: Context, data: Any) -> Any:
        self.started.set()
        await self.release.wait()

        async def unit(tx: Tx) -> int:
            return int(await tx.fetch_val("SELECT 41 + 1"))

        return {"result": "success", "value": await ctx.write(unit)}


async def started_app(tmp_path: Any) -> tuple[App, SlowWriter]:
    plugin = SlowWriter()
    return await started_with(f"sqlite:///{tmp_path / 's.db'}", "slow", plugin), plugin


async def test_a_running_handler_finishes_its_write_before_the_database_closes(
    tmp_path: Any,
) -> None:
    app, plugin = await started_app(tmp_path)
    handler = app.registry.get("slow-write")
    assert handler is not None
    running = asyncio.ensure_future(app.dispatcher.run_concurrent("sid1", handler, {}))
    await plugin.started.wait()
    stopping = asyncio.ensure_future(app.shutdown())
    await asyncio.sleep(0.2)
    assert not stopping.done() and app.db.connected  # shutdown waits for the handler
    plugin.release.set()
    assert await running == {"result": "success", "value": 42}
    await stopping
    assert plugin.closed_db_seen_by_hook is False  # hooks ran after the drain, before the close
    assert not app.db.connected


async def test_a_stuck_handler_delays_shutdown_only_until_the_timeout(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app_module, "DRAIN_TIMEOUT_S", 0.3)
    app, plugin = await started_app(tmp_path)
    handler = app.registry.get("slow-write")
    assert handler is not None
    running = asyncio.ensure_future(app.dispatcher.run_concurrent("sid1", handler, {}))
    await plugin.started.wait()
    with caplog.at_level(logging.WARNING, logger="happy_socket"):
        await asyncio.wait_for(app.shutdown(), 3)
    assert "1 event handlers still running" in caplog.text
    plugin.release.set()
    answer = await running  # the database is closed now: answered, not raised
    assert answer == {"result": "error", "message": "Internal error"}
