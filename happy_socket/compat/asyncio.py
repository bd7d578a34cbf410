"""asyncio internals happy-socket relies on (tests/core/test_compat_asyncio.py fails when they
change).

- ``_SelectorSocketTransport.max_size``: how many bytes one read of a socket takes (256 KB).
  Websockets read less per turn (:func:`set_read_size`), so one socket's burst of tiny
  frames cannot hold the event loop while it is parsed.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("happy_socket.websocket")


def set_read_size(transport: asyncio.BaseTransport, size: int) -> bool:
    """Make each read of ``transport`` take at most ``size`` bytes; False if it cannot.

    Other transports (uvloop's, say) keep their own read size, and the log says so once.
    """
    if not isinstance(getattr(transport, "max_size", None), int):
        global _warned
        if not _warned:
            _warned = True
            log.info(
                "transport %s has no read size to lower: a websocket's burst of frames is "
                "parsed in one event-loop turn",
                type(transport).__name__,
            )
        return False
    transport.max_size = size  # type: ignore[attr-defined]
    return True


_warned = False
