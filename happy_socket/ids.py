"""Random identifiers."""

from __future__ import annotations

import os
import string

_ALPHABET = string.ascii_letters + string.digits

# bytes below 248 (= 4 * 62) map uniformly onto the alphabet; the others are dropped
_LIMIT = 4 * len(_ALPHABET)
_TABLE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _LIMIT else 0 for b in range(256))
_REJECT = bytes(range(_LIMIT, 256))

# urandom output is drawn 4 KiB at a time (one getrandom syscall costs ~8 us on a VM, and
# every message needs two ids); refilled after a fork so processes never share bytes
_POOL_SIZE = 4096
_pool = bytearray()
_pool_pid = -1


def _urandom(n: int) -> bytes:
    global _pool, _pool_pid
    if len(_pool) < n or _pool_pid != os.getpid():
        _pool = bytearray(os.urandom(max(_POOL_SIZE, n)))
        _pool_pid = os.getpid()
    out = bytes(_pool[:n])
    del _pool[:n]
    return out


def random_id(length: int = 12) -> str:
    """A random alphanumeric id (an ``update``'s ``id`` is 12: docs/protocol.md, "Updates and ephemerals")."""
    out = b""
    while len(out) < length:
        out += _urandom(length + 8).translate(_TABLE, _REJECT)
    return out[:length].decode()


def new_id() -> str:
    """A new 24-character id for accounts, sessions and other rows."""
    return random_id(24)
