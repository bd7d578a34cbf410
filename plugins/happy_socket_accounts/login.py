"""``POST /v1/auth``: Ed25519 login, and the replay table that refuses a login sent twice.

The client picks the challenge, so a captured login would log in again; every accepted
(key, challenge) pair is remembered (its SHA-256) for ``REPLAY_WINDOW_MS`` and a repeat is
refused with 401 ``Challenge already used``, whatever encoding of the signature comes with it.
Signatures are checked with libsodium's rules (PyNaCl): small-order and non-canonical keys and
signatures are refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.exceptions
import nacl.signing
import sqlalchemy as sa

from happy_socket import App, HttpContext, HTTPError, Tx
from happy_socket.validation import decode_b64

from .service import AccountsService
from .tables import auth_replays

REPLAY_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_FIELD = 4096


def _b64(value: Any) -> bytes:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise HTTPError(400, "Invalid request")
    decoded = decode_b64(value)
    if decoded is None:
        raise HTTPError(401, "Invalid signature")
    return decoded


async def login(ctx: HttpContext) -> Any:
    """Verify an Ed25519 signature of a challenge; answer a token for the key's account."""
    data = await ctx.json()
    fields = [data.get(k) for k in ("publicKey", "challenge", "signature")]
    if not all(isinstance(f, str) and f and len(f) <= MAX_FIELD for f in fields):
        raise HTTPError(400, "Invalid request")  # the shape first, then the contents
    public_key, challenge, signature = (_b64(f) for f in fields)
    if not verified(public_key, challenge, signature):
        raise HTTPError(401, "Invalid signature")
    # keyed by (key, challenge), not the signature: an Ed25519 signature is deterministic, and
    # a second encoding of the same signature must not log in again
    digest = hashlib.sha256(public_key + b"\0" + challenge).hexdigest()
    # releases before this one recorded the whole triple: those rows still count until pruned
    legacy = hashlib.sha256(public_key + b"\0" + challenge + b"\0" + signature).hexdigest()
    if not await first_use(ctx.app, digest, also_seen_as=legacy):
        raise HTTPError(401, "Challenge already used")
    user_id = await ctx.app.service(AccountsService).for_public_key(public_key)
    return {"success": True, "token": ctx.app.tokens.issue(user_id)}


def verified(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's Ed25519 check: small-order or non-canonical keys and signatures fail.

    (The identity point as a public key, with a signature made of the identity and a zero
    scalar, "verifies" every message under a permissive check: one shared account for anyone.)
    """
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


async def first_use(app: App, digest: str, *, also_seen_as: str | None = None) -> bool:
    """Record ``digest``; False when it, or ``also_seen_as``, was seen in the window."""
    stmt = (
        app.db.insert(auth_replays)
        .values(digest=digest, seen_at=app.clock())
        .on_conflict_do_nothing(index_elements=["digest"])
        .returning(auth_replays.c.digest)
    )
    legacy = sa.select(auth_replays.c.digest).where(auth_replays.c.digest == also_seen_as)

    async def unit(tx: Tx) -> bool:
        if also_seen_as is not None and await tx.fetch_val(legacy) is not None:
            return False
        return await tx.fetch_val(stmt) is not None

    return await app.db.write(unit)


async def prune_replays(app: App) -> None:
    """Forget (key, challenge) pairs older than the replay window."""
    cutoff = app.clock() - REPLAY_WINDOW_MS
    await app.db.execute(auth_replays.delete().where(auth_replays.c.seen_at < cutoff))
