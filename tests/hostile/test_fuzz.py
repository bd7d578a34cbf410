"""Generated hostile input at every registered event, through the real Socket.IO stack.

Approach: hypothesis strategies (``payloads.py``) generate a pool of hostile JSON values
(wrong types, null, nested junk, huge strings up to 100 KB, odd unicode, numbers at the
edges) and, per event, valid-looking payloads with fields dropped, nulled, retyped or
replaced by junk. Values are generated up front with a fixed seed (``derandomize=True``,
one hypothesis example per value), then every junk value is sent to every event of
``app.registry`` (so a plugin's new event is covered without editing this file), plus the
field-aware variants, "no argument at all" and "only a callback". For each payload: the ack
arrives, it has the event's envelope shape and is not "Internal error"; after each batch
the socket still answers ``ping`` and, when every ack of the batch was an error, no table
gained or lost a row and no update seq was allocated. At the end: no ERROR log from the
server, another user's socket received nothing, the victim's rows are unchanged.
The number of payloads tried is printed in pytest's terminal summary and asserted to be >= 10,000.

``HAPPY_SOCKET_FUZZ_JUNK`` / ``HAPPY_SOCKET_FUZZ_FIELD`` change the pool sizes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from happy_socket import Context, InvalidParams, Registry, hookimpl
from tests.conftest import ServerFactory

from .conftest import FUZZ_REPORTS
from .fuzz import run_fuzz

JUNK = int(os.environ.get("HAPPY_SOCKET_FUZZ_JUNK", "600"))
FIELD = int(os.environ.get("HAPPY_SOCKET_FUZZ_FIELD", "150"))
RPC_FAST = {"rpc": {"grace": 0, "timeout": 2}}


async def test_every_event_survives_hostile_input_sqlite(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(plugin_options=RPC_FAST)
    tally = await run_fuzz(server, caplog, junk=JUNK, field_aware=FIELD)
    FUZZ_REPORTS.append(f"hostile fuzz (SQLite): {tally.report()}")
    assert not tally.failures, f"{len(tally.failures)} failures:\n" + "\n".join(tally.failures[:15])
    if JUNK >= 600:
        assert tally.sent >= 10_000, tally.report()


async def test_every_event_survives_hostile_input_postgresql(
    make_server: ServerFactory, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(db=pg_url, plugin_options=RPC_FAST)
    tally = await run_fuzz(server, caplog, junk=JUNK // 10, field_aware=FIELD // 5)
    FUZZ_REPORTS.append(f"hostile fuzz (PostgreSQL): {tally.report()}")
    assert not tally.failures, f"{len(tally.failures)} failures:\n" + "\n".join(tally.failures[:15])


class BrokenPlugin:
    """An event that breaks each rule the fuzz checks, to show the fuzz notices."""

    @hookimpl
    def register_handlers(self, registry: Registry) -> None:
        registry.add("hostile-broken", self.broken)

    @staticmethod
    async def broken(ctx: Context, data: Any) -> Any:
        if isinstance(data, dict) and "sid" in data:
            return {"result": "error", "message": data["missing"]}  # KeyError: Internal error
        if isinstance(data, str):
            return {"ok": False, "error": "wrong envelope"}
        if isinstance(data, list):
            await ctx.app.accounts.next_seq(ctx.user_id)  # stores, then rejects
        raise InvalidParams()


async def test_the_fuzz_notices_a_broken_handler(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(plugins=[("broken", BrokenPlugin())], plugin_options=RPC_FAST)
    tally = await run_fuzz(server, caplog, junk=60, field_aware=20)
    found = "\n".join(tally.failures)
    assert "hostile-broken" in found
    assert "Internal error" in found
    assert "another envelope" in found
    assert "rows changed" in found and "accounts.seq" in found
    assert "event 'hostile-broken' failed" in found  # the ERROR log line
