"""Random identifiers."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


# one urandom call per id: bytes below 248 (= 4 * 62) map uniformly onto the alphabet
_LIMIT = 4 * len(_ALPHABET)
_TABLE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _LIMIT else 0 for b in range(256))
_REJECT = bytes(range(_LIMIT, 256))


def random_id(length: int = 12) -> str:
    """A random alphanumeric id (the ``update.id`` of PROTOCOL.md §3 is 12 characters)."""
    out = b""
    while len(out) < length:
        out += secrets.token_bytes(length + 8).translate(_TABLE, _REJECT)
    return out[:length].decode()


def new_id() -> str:
    """A new 24-character id for accounts, sessions and other rows."""
    return random_id(24)
