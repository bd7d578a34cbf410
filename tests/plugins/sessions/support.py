"""Shared helpers of the sessions and machines tests: a fake clock and exact-update checks."""

from __future__ import annotations

import re
from typing import Any

from happy_socket import App, Settings, create_app, now_ms

SECRET = "test-secret-0123456789abcdef0123456789"
MIN = 60_000


class FakeClock:
    """A clock the test moves by hand (milliseconds)."""

    def __init__(self, start: int | None = None) -> None:
        self.now = now_ms() if start is None else start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


def make_app(db: str, clock: FakeClock, **settings: Any) -> App:
    """An app with every installed plugin, on ``db``, with ``clock``."""
    return create_app(Settings(db=db, secret=SECRET, **settings), clock=clock)


def body_of(update: Any, seq: int | None = None) -> dict[str, Any]:
    """Check the ``update`` envelope (id, seq, createdAt) and return its body."""
    assert set(update) == {"id", "seq", "body", "createdAt"}, update
    assert isinstance(update["id"], str) and re.fullmatch(r"[A-Za-z0-9]{12}", update["id"])
    assert isinstance(update["seq"], int) and update["seq"] >= 1
    assert isinstance(update["createdAt"], int)
    if seq is not None:
        assert update["seq"] == seq, update
    body: dict[str, Any] = update["body"]
    return body
