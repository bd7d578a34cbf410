"""Helpers shared by the scale-out tests."""

from __future__ import annotations

import asyncio
from typing import Any

from happy_socket.testing import TestSocket

DISCONNECTED = {"ok": False, "error": "RPC target disconnected"}
NOT_AVAILABLE = {"ok": False, "error": "RPC method not available"}


def answer_with(sock: TestSocket, name: str) -> None:
    """Make ``sock`` answer every rpc-request with ``{"by": name, "echo": request}``."""

    async def on_request(data: Any) -> Any:
        return {"by": name, "echo": data}

    sock.client.on("rpc-request", on_request)


def blocking_holder(sock: TestSocket) -> tuple[asyncio.Event, asyncio.Event]:
    """``sock`` announces each rpc-request (first event) and answers once released (second)."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(data: Any) -> Any:
        arrived.set()
        await release.wait()
        return "late"

    sock.client.on("rpc-request", slow)
    return arrived, release


async def register(sock: TestSocket, method: str) -> None:
    """Register ``method`` and check the reply."""
    await sock.emit("rpc-register", {"method": method})
    assert await sock.next("rpc-registered") == {"method": method}


async def unregister(sock: TestSocket, method: str) -> None:
    """Unregister ``method`` and check the reply."""
    await sock.emit("rpc-unregister", {"method": method})
    assert await sock.next("rpc-unregistered") == {"method": method}
