"""websockets API happy-socket relies on beyond uvicorn's use of it (tests/core/
test_upgrade.py fails when it changes).

- ``websockets.server.ServerProtocol(state=OPEN, max_size=..., logger=...)``: a sans-I/O
  connection whose opening handshake is done, which parses frames from its first byte
  (documented: "state: Initial state of the WebSocket connection"). :mod:`happy_socket.
  websocket` starts one for a handshake it answered from h11's parsed request
  (:mod:`happy_socket.upgrade`) instead of feeding the request to websockets again.
- ``ServerProtocol.logger`` (public): the connection's logger, for websockets' own
  "connection open" line that ``send_response`` would log.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

log = logging.getLogger("happy_socket.websocket")


def open_protocol_supported() -> bool:
    """True when ``ServerProtocol`` takes an initial ``state`` (websockets 10+); else logged."""
    from websockets.server import ServerProtocol

    try:
        params = inspect.signature(ServerProtocol.__init__).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "state" in params and "max_size" in params and "logger" in params:
        return True
    import websockets

    log.warning(
        "websockets %s's ServerProtocol takes no initial state: websocket handshakes are "
        "parsed twice (uvicorn's path)",
        getattr(websockets, "__version__", "?"),
    )
    return False


def open_protocol(max_size: Any, logger: Any) -> Any:
    """A websockets server connection past its opening handshake (state OPEN), no extensions."""
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    return ServerProtocol(extensions=[], state=State.OPEN, max_size=max_size, logger=logger)
