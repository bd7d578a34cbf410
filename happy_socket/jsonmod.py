"""orjson behind the ``json`` module interface python-socketio and engine.io expect."""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
    """Compact JSON text; falls back to the stdlib for what orjson refuses (depth > 254, big ints)."""
    try:
        return orjson.dumps(obj, option=_OPTIONS).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=str)


def loads(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
    """Parse JSON text; deeper than 1024 levels, NaN/Infinity and invalid JSON are refused.

    Integers beyond the 64-bit range become floats. A lone UTF-16 surrogate escape
    (``"\\ud800"``, which JavaScript's JSON.stringify produces for a broken string) is
    replaced by U+FFFD, as Node does when it encodes such a string to UTF-8, instead of
    failing the whole packet (python-socketio would then drop it without an ack).
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise
    return _loads_replacing_surrogates(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int(digits: str) -> int | float:
    value = int(digits)
    return value if -(2**63) <= value < 2**64 else float(value)


def _repair(value: str) -> str:
    if value.isascii():
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _loads_replacing_surrogates(text: str | bytes) -> Any:
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_int=_int)
    except (RecursionError, ValueError) as exc:
        raise JSONDecodeError(str(exc), str(text)[:100], 0) from None
    if isinstance(data, str):
        return _repair(data)
    stack = [data] if isinstance(data, dict | list) else []
    while stack:  # iterative: no recursion on nested input
        node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, value in items:
                node[_repair(key)] = _repair(value) if isinstance(value, str) else value
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        else:
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = _repair(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
    return data
