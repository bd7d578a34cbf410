"""The uvicorn websocket protocol ``happy-socket serve`` runs: lighter per connection.

uvicorn's websockets-sansio protocol with its receive queue replaced by a
:class:`~happy_socket.queues.LeanQueue` (3 KB less per connection). Embedders running their
own uvicorn can pass :func:`websocket_protocol` as ``uvicorn.Config(ws=...)``.
"""

from __future__ import annotations

from typing import Any

from .queues import LeanQueue


def websocket_protocol() -> Any:
    """The protocol class for ``uvicorn.Config(ws=...)``, or ``"auto"`` if uvicorn lacks it."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # pragma: no cover - uvicorn < 0.35 or websockets missing
        return "auto"

    class LeanWebSocketsProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """websockets-sansio with a :class:`LeanQueue` as the ASGI receive queue."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = LeanQueue()  # type: ignore[assignment]

    return LeanWebSocketsProtocol
