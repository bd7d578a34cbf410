"""Raw Socket.IO packets looked at before python-socketio parses them, and environ trimming."""

from __future__ import annotations

from typing import Any

import orjson

NAME_NOT_STRING = "event name is not a string"
OVERSIZED_CONNECT = "connect packet too large"
#: A CONNECT packet longer than this (characters, as received) cannot hold an ``auth`` object
#: within the handshake's 4 KB (escapes at most triple a character's bytes): it is refused
#: ``Authentication data too large`` without being parsed.
MAX_CONNECT_PACKET_CHARS = 4 * 4096
INVALID_NAME = "(invalid event name)"  # what an event whose name is not a string becomes


def packet_problem(data: Any) -> str | None:
    """Why a raw Socket.IO packet is refused before python-socketio parses it, or None.

    Protocol events carry no binary, so binary packets (types 5 and 6) and binary frames are
    refused before anything is buffered (python-socketio would hold every announced
    attachment). An event whose name is not a string (an object, a list, a number) is refused
    too: python-socketio cannot dispatch it and would answer nothing.
    """
    if not isinstance(data, str):
        return "binary frame"
    kind = data[:1]
    if kind in ("5", "6"):
        return "binary packet"
    if kind == "0" and len(data) > MAX_CONNECT_PACKET_CHARS:
        return OVERSIZED_CONNECT
    if kind == "2":
        start = data.find("[")
        if start < 0:
            return None  # python-socketio refuses it (no arguments) and the gate closes
        i = start + 1
        while i < len(data) and data[i] in " \t\r\n":
            i += 1
        if i < len(data) and data[i] != '"':
            return NAME_NOT_STRING
    return None


def connect_error_packet(data: str, message: str) -> str:
    """The CONNECT_ERROR packet answering the CONNECT packet ``data`` with ``message``."""
    namespace = ""
    if data[1:2] == "/":
        end = data.find(",", 1)
        namespace = data[1 : end if end > 0 else min(len(data), 256)][:256] + ","
    return "4" + namespace + orjson.dumps({"message": message}).decode()


def unnamed_event(data: str) -> str:
    """``data`` with its event name (not a string) replaced by one no plugin serves."""
    start = data.find("[")
    try:
        args = orjson.loads(data[start:])
    except orjson.JSONDecodeError:
        return data  # python-socketio cannot parse it either: the gate closes the socket
    if not isinstance(args, list) or not args:
        return data
    args[0] = INVALID_NAME
    return data[:start] + orjson.dumps(args).decode()


#: Request headers python-socketio's environ keeps after the handshake (``sio.get_environ``).
KEPT_HEADERS = frozenset(
    {"HTTP_HOST", "HTTP_ORIGIN", "HTTP_USER_AGENT", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"}
)


def trim_environ(environ: dict[str, Any]) -> None:
    """Drop what an accepted socket's environ no longer needs (~4 KB per connection).

    The environ lives as long as the socket. engine.io builds a class per request for its
    ``wsgi.input`` and copies every request header; after the handshake only the
    non-header keys and :data:`KEPT_HEADERS` stay.
    """
    environ.pop("wsgi.input", None)
    for key in [k for k in environ if k.startswith("HTTP_") and k not in KEPT_HEADERS]:
        del environ[key]
