"""Socket.IO v5 spoken by hand over a websocket, to send packets no client library would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any

import websockets


class RawSocket:
    """One engine.io websocket; ``send`` takes the Socket.IO packet text as is."""

    def __init__(self, url: str, path: str = "/v1/updates") -> None:
        ws_url = url.replace("http://", "ws://").rstrip("/")
        self.url = f"{ws_url}{path}/?EIO=4&transport=websocket"
        self._ws: Any = None

    async def __aenter__(self) -> RawSocket:
        self._ws = await websockets.connect(self.url, max_size=None)
        opening = await self._ws.recv()
        assert str(opening).startswith("0"), opening
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def connect(self, auth: dict[str, Any]) -> str:
        """The Socket.IO connect packet; returns the server's answer packet."""
        await self.send("0" + json.dumps(auth))
        answer = await self.recv()
        assert answer is not None
        return answer

    async def send(self, packet: str) -> None:
        """Send the Socket.IO packet ``packet`` as one engine.io message."""
        await self._ws.send("4" + packet)

    async def recv(self, timeout: float = 3.0) -> str | None:
        """The next Socket.IO packet (engine.io pings are answered), or None on timeout/close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                message = await asyncio.wait_for(self._ws.recv(), max(0.0, deadline - loop.time()))
            except (TimeoutError, websockets.ConnectionClosed):
                return None
            text = str(message)
            if text == "2":
                await self._ws.send("3")
                continue
            return text[1:] if text.startswith("4") else text

    async def ack(self, ack_id: int, timeout: float = 3.0) -> Any:
        """Wait for the ack ``ack_id``; returns its first argument, or raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        prefix = f"3{ack_id}["
        while loop.time() < deadline:
            packet = await self.recv(max(0.0, deadline - loop.time()))
            if packet is None:
                break
            if packet.startswith(prefix):
                args = json.loads(packet[len(prefix) - 1 :])
                return args[0] if args else None
        raise TimeoutError(f"no ack {ack_id}")

    @property
    def open(self) -> bool:
        """The websocket is still open."""
        return self._ws is not None and self._ws.state.name == "OPEN"
