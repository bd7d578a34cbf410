"""Small checks for payloads that can be any JSON value. Each raises InvalidParams by default."""

from __future__ import annotations

import math
from typing import Any

from .errors import HandlerError, InvalidParams

MAX_ID_LENGTH = 256


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def require_object(data: Any, error: HandlerError | None = None) -> dict[str, Any]:
    """``data`` if it is a JSON object."""
    if not isinstance(data, dict):
        raise error or InvalidParams()
    return data


def require_str(
    data: dict[str, Any],
    key: str,
    *,
    max_length: int | None = None,
    allow_empty: bool = False,
    error: HandlerError | None = None,
) -> str:
    """``data[key]`` as a string (non-empty unless ``allow_empty``) of bounded length."""
    value = data.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise error or InvalidParams()
    if max_length is not None and len(value) > max_length:
        raise error or InvalidParams()
    return value


def require_id(data: dict[str, Any], key: str, error: HandlerError | None = None) -> str:
    """``data[key]`` as a non-empty id of at most ``MAX_ID_LENGTH`` characters."""
    return require_str(data, key, max_length=MAX_ID_LENGTH, error=error)


def require_int(
    data: dict[str, Any], key: str, *, minimum: int | None = None, error: HandlerError | None = None
) -> int:
    """``data[key]`` as an integer (bools refused), at least ``minimum``."""
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise error or InvalidParams()
    if minimum is not None and value < minimum:
        raise error or InvalidParams()
    return value


def optional_str(
    data: dict[str, Any],
    key: str,
    *,
    max_length: int | None = None,
    error: HandlerError | None = None,
) -> str | None:
    """``data[key]`` as a string, or None when absent or null."""
    if data.get(key) is None:
        return None
    return require_str(data, key, max_length=max_length, allow_empty=True, error=error)
