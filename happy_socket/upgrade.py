"""The websocket handshake from the request h11 has parsed already (``happy-socket serve``).

uvicorn's h11 protocol parses an upgrade request, then writes it out again and hands the bytes
to the websocket protocol, whose websockets ``ServerProtocol`` parses them a second time,
validates them and builds its 101 response as a ``Response`` with a ``Headers`` multidict that
uvicorn then edits. For the handshakes every client sends, :func:`accept_key` checks h11's
parsed headers as websockets would and :func:`response_head` writes the same 101 response
bytes uvicorn writes. Anything else (a missing, repeated or malformed header, a body, a
subprotocol, per-message deflate turned on) returns None and takes uvicorn's path unchanged,
so websockets still answers every request it would refuse, with the same status and text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

#: RFC 6455's GUID for ``Sec-WebSocket-Accept``
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 token (a Connection option)
_ONCE = (b"sec-websocket-key", b"sec-websocket-version", b"upgrade")
_REFUSED = frozenset(  # present: take websockets' path (a body, a subprotocol to negotiate)
    (b"sec-websocket-protocol", b"content-length", b"transfer-encoding")
)


def _limits() -> tuple[int, int]:
    """websockets' header count and line length limits (its environment overrides apply)."""
    from websockets import http11

    return getattr(http11, "MAX_NUM_HEADERS", 128), getattr(http11, "MAX_LINE_LENGTH", 8192)


MAX_HEADERS, MAX_LINE = _limits()


def accept_key(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Sec-WebSocket-Accept`` value for a handshake websockets would accept as it is,
    else None (the caller takes websockets' own path, which answers it as before).

    ``headers``: h11's, names lowercased. uvicorn has checked that ``Upgrade`` is
    ``websocket`` and ``Connection`` lists ``upgrade`` (its last value only).
    """
    if method != b"GET" or len(headers) > MAX_HEADERS or len(target) + 16 > MAX_LINE:
        return None
    seen: dict[bytes, bytes] = {}
    upgrade_option = False
    for name, value in headers:
        if len(name) + len(value) + 4 > MAX_LINE or name in _REFUSED:
            return None
        if name in _ONCE:
            if name in seen:
                return None  # websockets: "multiple values"
            seen[name] = value
        elif name == b"connection":
            for option in value.split(b","):
                option = option.strip(b" \t")
                if _TOKEN.fullmatch(option) is None:
                    return None  # websockets' parser would refuse it: let it say how
                upgrade_option = upgrade_option or option.lower() == b"upgrade"
    key = seen.get(b"sec-websocket-key")
    if (
        not upgrade_option
        or key is None
        or seen.get(b"upgrade", b"").lower() != b"websocket"
        or seen.get(b"sec-websocket-version") != b"13"
    ):
        return None
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def response_head(
    accept: bytes,
    default_headers: list[tuple[bytes, bytes]],
    headers: Any = (),
    subprotocol: str | None = None,
) -> bytes:
    """The 101 response uvicorn's websockets-sansio protocol writes on ``websocket.accept``:
    websockets' headers (its ``Date`` removed), then uvicorn's default headers (``date``,
    ``server``), the app's ``headers`` and the subprotocol, names as uvicorn writes them."""
    lines = [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept.decode()}\r\n"
    ]
    for name, value in [*default_headers, *headers]:
        lines.append(f"{name.decode('latin-1').lower()}: {value.decode('latin-1')}\r\n")
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def websocket_scope(http_scope: dict[str, Any], scheme: str) -> dict[str, Any]:
    """The ASGI websocket scope uvicorn builds for the upgrade request of ``http_scope``
    (h11's scope of the same request: the same path, query string and headers)."""
    return {
        "type": "websocket",
        "asgi": {"version": http_scope["asgi"]["version"], "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "server": http_scope["server"],
        "client": http_scope["client"],
        "root_path": http_scope["root_path"],
        "path": http_scope["path"],
        "raw_path": http_scope["raw_path"],
        "query_string": http_scope["query_string"],
        "headers": http_scope["headers"],
        "subprotocols": [],  # a request that offers one takes websockets' path
        "state": http_scope["state"],
        "extensions": {"websocket.http.response": {}},
    }
