"""Checks for input that can be any JSON value or query string, for handlers and routes alike.

Each check raises :class:`~happy_socket.errors.InvalidParams` (or the ``error`` given), which a
socket event answers in its ack envelope (``Invalid parameters``, the protocol's text) and an
HTTP route as 400. Text is refused when it
holds a NUL character: PostgreSQL cannot store one, and no happy client sends one.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import HandlerError, InvalidParams

MAX_ID_LENGTH = 256
MAX_DEPTH = 32  # protocol payloads nest 3 levels; deeper input is refused before any handler
INT64 = 2**63 - 1

# what JavaScript's Number() accepts as a decimal literal (after trimming whitespace)
_JS_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def is_text(value: Any, *, max_length: int | None = None, allow_empty: bool = True) -> bool:
    """A string without NUL, of at most ``max_length`` characters (non-empty unless allowed)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    if not value and not allow_empty:
        return False
    return max_length is None or len(value) <= max_length


def require_object(data: Any, error: HandlerError | None = None) -> dict[str, Any]:
    """``data`` if it is a JSON object."""
    if not isinstance(data, dict):
        raise error or InvalidParams()
    return data


def require_str(
    data: Mapping[str, Any],
    key: str,
    *,
    max_length: int | None = None,
    allow_empty: bool = False,
    error: HandlerError | None = None,
) -> str:
    """``data[key]`` as a string without NUL (non-empty unless ``allow_empty``), bounded."""
    value = data.get(key)
    if not is_text(value, max_length=max_length, allow_empty=allow_empty):
        raise error or InvalidParams()
    return str(value)


def optional_str(
    data: Mapping[str, Any],
    key: str,
    *,
    max_length: int | None = None,
    error: HandlerError | None = None,
) -> str | None:
    """``data[key]`` as a string (empty allowed), or None when absent or null."""
    if data.get(key) is None:
        return None
    return require_str(data, key, max_length=max_length, allow_empty=True, error=error)


def require_id(data: Mapping[str, Any], key: str, error: HandlerError | None = None) -> str:
    """``data[key]`` as a non-empty id of at most ``MAX_ID_LENGTH`` characters."""
    return require_str(data, key, max_length=MAX_ID_LENGTH, error=error)


def require_int(
    data: Mapping[str, Any],
    key: str,
    *,
    minimum: int | None = None,
    maximum: int | None = INT64,
    error: HandlerError | None = None,
) -> int:
    """``data[key]`` as an integer (bools refused) within ``[minimum, maximum]``."""
    value = data.get(key)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not _within(value, minimum, maximum)
    ):
        raise error or InvalidParams()
    return value


def optional_int(
    data: Mapping[str, Any],
    key: str,
    *,
    minimum: int | None = None,
    maximum: int | None = INT64,
    error: HandlerError | None = None,
) -> int | None:
    """``data[key]`` as a bounded integer, or None when absent or null."""
    if data.get(key) is None:
        return None
    return require_int(data, key, minimum=minimum, maximum=maximum, error=error)


def require_b64(
    data: Mapping[str, Any],
    key: str,
    *,
    max_length: int = 1_000_000,
    error: HandlerError | None = None,
) -> bytes:
    """``data[key]`` decoded from standard base64 (padding required, nothing else allowed)."""
    value = data.get(key)
    decoded = decode_b64(value, max_length=max_length)
    if decoded is None:
        raise error or InvalidParams()
    return decoded


def optional_b64(
    data: Mapping[str, Any],
    key: str,
    *,
    max_length: int = 1_000_000,
    error: HandlerError | None = None,
) -> bytes | None:
    """``data[key]`` decoded from standard base64, or None when absent or null."""
    if data.get(key) is None:
        return None
    return require_b64(data, key, max_length=max_length, error=error)


def decode_b64(
    value: Any, *, max_length: int | None = 1_000_000, urlsafe: bool = False
) -> bytes | None:
    """``value`` decoded from base64, or None when it is not a string of valid base64.

    Standard base64 with its padding and nothing else; ``urlsafe``: ``-``/``_`` are read as
    ``+``/``/`` and the padding may be left out. Longer than ``max_length`` characters
    (None: no limit) is invalid too. The one base64 decoder of the core and the plugins.
    """
    if not isinstance(value, str) or (max_length is not None and len(value) > max_length):
        return None
    try:
        if urlsafe:
            value = value.replace("-", "+").replace("_", "/")
            value += "=" * (-len(value) % 4)
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def expected_version(value: Any) -> int | None:
    """A client's ``expectedVersion`` for a compare-and-set, or None when it is no number.

    Integers from -1 to ``INT64`` are kept; a whole float (``3.0``) in range is its integer; any
    other number (negative, too large, fractional) can never match a stored version and
    becomes -1, so the write answers a version mismatch with the current value.
    """
    if not is_number(value):
        return None
    if is_int(value):
        return value if -1 <= value <= INT64 else -1
    return int(value) if float(value).is_integer() and 0 <= value <= INT64 else -1


def is_js_falsy(value: Any) -> bool:
    """JavaScript-falsy, for JSON input: null, false, ``""`` or 0.

    How the reference server decides that an optional field was "not provided"
    (``if (!sessionId)``). NaN is falsy too but cannot arrive in JSON.
    """
    return value is None or value is False or value == "" or (is_number(value) and value == 0)


def query_int(
    params: Mapping[str, str],
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    error: HandlerError | None = None,
) -> int | None:
    """Query parameter ``name`` read like JavaScript's ``Number()``, which must be an integer.

    Absent gives ``default``; an empty value is 0 (as ``Number("")``); ``1e3`` and ``0x10``
    are integers, ``1.5``, ``abc`` and out-of-range values are refused.
    """
    raw = params.get(name)
    if raw is None:
        return default
    value = js_number(raw)
    if value is None or not value.is_integer() or not _within(int(value), minimum, maximum):
        raise error or InvalidParams(f"Invalid {name}")
    return int(value)


def js_number(raw: str) -> float | None:
    """``Number(raw)`` as JavaScript computes it for decimal and hex literals; None for NaN."""
    text = raw.strip()
    if not text:
        return 0.0
    if _JS_DECIMAL.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else None
    if len(text) > 2 and text[0] == "0" and text[1] in "xXoObB" and "_" not in text:
        base = {"x": 16, "o": 8, "b": 2}[text[1].lower()]
        try:
            return float(int(text[2:], base))
        except ValueError:
            return None
    return None


def _within(value: int, minimum: int | None, maximum: int | None) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def refused_input(data: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``data`` is refused before any handler sees it, or None.

    Nested deeper than ``limit`` lists/objects, or a string (value or key) holding NUL: no happy
    client sends one, and PostgreSQL cannot store one. Iterative, no recursion.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return "nul"
            continue
        if isinstance(value, dict):
            for key in value:
                if "\x00" in key:
                    return "nul"
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth >= limit:
            return "depth"
        stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list | str))
    return None
