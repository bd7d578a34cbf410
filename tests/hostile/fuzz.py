"""The fuzz driver: throws payloads at every registered event and checks every answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import attrs
import pytest

from happy_socket import App
from happy_socket.testing import ServerHarness, TestSocket

from .payloads import generate, generic_template, hostile, mutated, templates
from .support import BadAck, Resources, classify, create_resources, row_counts, rows_mentioning

WATCHED_LOGGERS = ("happy_socket", "engineio", "socketio", "uvicorn")
IN_FLIGHT = 32
ACK_TIMEOUT_S = 10.0

NO_ARGS: Any = object()  # "no argument at all"
TWO_ARGS = "two-args"


@attrs.define
class Tally:
    """What a fuzz run did and what went wrong."""

    sent: int = 0
    without_ack: int = 0
    outcomes: dict[str, int] = attrs.Factory(dict)
    failures: list[str] = attrs.Factory(list)
    checked_batches: int = 0

    def fail(self, event: str, payload: Any, problem: str) -> None:
        self.failures.append(f"{event} <- {_short(payload)}: {problem}")

    def report(self) -> str:
        return (
            f"{self.sent} payloads with an ack + {self.without_ack} without; "
            f"outcomes {dict(sorted(self.outcomes.items()))}; "
            f"{self.checked_batches} batches without a success checked for stored rows"
        )


def _short(value: Any, limit: int = 300) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = "<deeply nested>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def error_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR (and worse) records of the server's loggers captured so far."""
    return [
        f"{r.name}: {r.getMessage()[:300]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(WATCHED_LOGGERS)
    ]


class Fuzzer:
    """Sends payloads from one socket; each ack is classified against the event's envelope."""

    def __init__(self, server: ServerHarness, sock: TestSocket, tally: Tally) -> None:
        self.app: App = server.app
        self.sock = sock
        self.tally = tally
        self._limit = asyncio.Semaphore(IN_FLIGHT)

    async def call(self, event: str, payload: Any) -> str:
        """Send ``payload`` to ``event`` with an ack; returns success/error/neutral/bad."""
        handler = self.app.registry.get(event)
        assert handler is not None
        async with self._limit:
            self.tally.sent += 1
            client = self.sock.client
            try:
                if payload is NO_ARGS:
                    ack = await client.call(event, timeout=ACK_TIMEOUT_S)
                elif isinstance(payload, tuple) and payload[:1] == (TWO_ARGS,):
                    ack = await client.call(event, payload[1:], timeout=ACK_TIMEOUT_S)
                else:
                    ack = await client.call(event, (payload,), timeout=ACK_TIMEOUT_S)
            except TimeoutError:
                self.tally.fail(event, payload, "no ack")
                return "bad"
            try:
                kind = classify(event, handler.envelope, ack)
            except BadAck as exc:
                self.tally.fail(event, payload, str(exc))
                return "bad"
        self.tally.outcomes[kind] = self.tally.outcomes.get(kind, 0) + 1
        return kind

    async def emit(self, event: str, payload: Any) -> None:
        """Send without asking for an ack."""
        self.tally.without_ack += 1
        if payload is NO_ARGS:
            await self.sock.client.emit(event)
        else:
            await self.sock.client.emit(event, (payload,))

    async def healthy(self) -> bool:
        """The socket is connected and answers ``ping``."""
        if not self.sock.client.connected:
            return False
        try:
            ack = await self.sock.call("ping", timeout=ACK_TIMEOUT_S)
        except TimeoutError:
            return False
        return bool(ack == {})

    async def batch(self, sends: Iterable[tuple[str, Any]]) -> None:
        """Send a batch concurrently; when no ack was a success nothing may have been stored."""
        sends = list(sends)
        before = await row_counts(self.app)
        kinds = await asyncio.gather(*(self.call(event, payload) for event, payload in sends))
        if not await self.healthy():
            raise AssertionError(f"socket unusable after a batch: {self.tally.failures[-5:]}")
        if "success" not in kinds:
            after = await row_counts(self.app)
            self.tally.checked_batches += 1
            if after != before:
                changed = {
                    k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)
                }
                self.tally.fail("batch", [e for e, _ in sends][:10], f"rows changed: {changed}")


def special_forms(events: list[str]) -> list[tuple[str, Any]]:
    """No argument at all, explicit null, scalars, arrays, and a second argument, per event."""
    forms: list[Any] = [NO_ARGS, None, 0, -1, True, "", "x", [], [None], {}, (TWO_ARGS, {}, {})]
    return [(event, form) for event in events for form in forms]


async def run_fuzz(
    server: ServerHarness, caplog: pytest.LogCaptureFixture, *, junk: int, field_aware: int
) -> Tally:
    """Fuzz every event of ``server.app.registry``; returns the tally (failures included)."""
    app = server.app
    caplog.set_level(logging.INFO, logger="happy_socket")
    events = app.registry.events()
    fuzz_sock = await server.client("fuzzer")
    victim_sock = await server.client("victim")
    bystander = await server.client("bystander")
    own: Resources = await create_resources(server.url, app, "fuzzer", fuzz_sock)
    victim: Resources = await create_resources(server.url, app, "victim", victim_sock)
    victim_rows = await rows_mentioning(app, victim.needles)
    ids = {
        "session": [own.session_id, victim.session_id, "unknown-session", "s" * 257],
        "machine": [own.machine_id, victim.machine_id, "unknown-machine", "m" * 257],
        "artifact": [own.artifact_id, victim.artifact_id, "new-artifact", "a" * 257],
        "method": [f"{own.machine_id}:ls", f"{victim.machine_id}:ls", "m" * 1025, ""],
    }
    tally = Tally()
    fuzzer = Fuzzer(server, fuzz_sock, tally)

    await fuzzer.batch(special_forms(events))
    for event in events:
        await fuzzer.emit(event, NO_ARGS)
        await fuzzer.emit(event, None)

    pool = generate(hostile, junk)
    step = max(1, 600 // max(1, len(events)))
    for start in range(0, len(pool), step):
        chunk = pool[start : start + step]
        await fuzzer.batch((event, value) for value in chunk for event in events)
        await fuzzer.emit(events[start % len(events)], chunk[0])

    known = templates(ids)
    for event in events:
        variants = generate(mutated(known.get(event, generic_template(ids))), field_aware)
        for start in range(0, len(variants), 100):
            await fuzzer.batch((event, v) for v in variants[start : start + 100])

    assert await fuzzer.healthy()
    assert await rows_mentioning(app, victim.needles) == victim_rows, "victim's rows changed"
    await asyncio.sleep(0.2)
    got = {k: len(v) for k, v in bystander.events.items() if v}
    if got:
        tally.fail("bystander", None, f"another user's socket received {got}")
    for line in error_logs(caplog)[:20]:
        tally.fail("log", None, line)
    return tally
