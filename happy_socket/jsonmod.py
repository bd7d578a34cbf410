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
    """Parse JSON text; deeper than 1024 levels or integers over 64 bits are refused."""
    return orjson.loads(text)
