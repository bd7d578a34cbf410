"""The uvicorn websocket protocol ``happy-socket serve`` runs: lighter per connection.

uvicorn's websockets-sansio protocol with its receive queue and ``writable`` event replaced by
:class:`~happy_socket.lean.LeanQueue` and :class:`~happy_socket.lean.LeanEvent` (about 4 KB
less per connection). Embedders running their own uvicorn can pass :func:`websocket_protocol`
as ``uvicorn.Config(ws=...)``.
"""

from __future__ import annotations

from typing import Any

from .lean import LeanEvent, LeanQueue


def websocket_protocol() -> Any:
    """The protocol class for ``uvicorn.Config(ws=...)``, or ``"auto"`` if uvicorn lacks it."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # pragma: no cover - uvicorn < 0.35 or websockets missing
        return "auto"

    class LeanWebSocketsProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """websockets-sansio with a lean receive queue and ``writable`` event."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = LeanQueue()  # type: ignore[assignment]
            self.writable = LeanEvent()  # type: ignore[assignment]
            self.writable.set()

    return LeanWebSocketsProtocol
