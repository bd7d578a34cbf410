"""A share of the hostile payloads sent by the stock JavaScript client (socket.io-client).

The payloads go through JSON.parse and the client's own encoder, so strings with lone
surrogates reach the server exactly as a browser or Node client writes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.e2e.node import run_scenario

from .conftest import FUZZ_REPORTS
from .fuzz import error_logs
from .payloads import encoded_size, generate, hostile
from .support import BadAck, classify

PAYLOADS = 150


async def test_stock_client_hostile_payloads(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(plugin_options={"rpc": {"grace": 0, "timeout": 2}})
    events = server.app.registry.events()
    pool = [p for p in generate(hostile, PAYLOADS) if encoded_size(p) <= 20_000]
    sends: list[tuple[str, list[Any]]] = [(e, []) for e in events]  # only a callback
    sends += [(e, [None]) for e in events]
    sends += [(events[i % len(events)], [p]) for i, p in enumerate(pool)]
    sends += [(events[(i + 7) % len(events)], [p]) for i, p in enumerate(pool)]
    steps: list[dict[str, Any]] = [{"op": "connect", "auth": {"token": await server.token("js")}}]
    steps += [{"op": "emit", "event": e, "args": args, "ack": True} for e, args in sends]
    steps += [{"op": "emit", "event": "ping", "ack": True}]
    results = (await run_scenario(server.url, steps, timeout_ms=5000))["results"]
    assert results[0].get("connected") is True, results[0]
    failures = []
    for (event, args), result in zip(sends, results[1:-1], strict=True):
        handler = server.app.registry.get(event)
        assert handler is not None
        if result.get("timeout"):
            failures.append(f"{event} {str(args)[:120]}: no ack")
            continue
        try:
            classify(event, handler.envelope, result.get("ack"))
        except BadAck as exc:
            failures.append(f"{event} {str(args)[:120]}: {exc}")
    assert results[-1] == {"ack": {}, "ackArgs": [{}]}
    failures += error_logs(caplog)
    FUZZ_REPORTS.append(f"hostile fuzz (stock JS client): {len(sends)} payloads with an ack")
    assert not failures, "\n".join(failures[:15])
