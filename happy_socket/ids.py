"""Random identifiers."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_id(length: int = 12) -> str:
    """A random alphanumeric id (the ``update.id`` of PROTOCOL.md §3 is 12 characters)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id() -> str:
    """A new 24-character id for accounts, sessions and other rows."""
    return random_id(24)
