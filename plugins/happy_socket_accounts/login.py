"""``POST /v1/auth``: Ed25519 login, and the replay table that refuses a login sent twice.

The client picks the challenge, so a captured (key, challenge, signature) triple would log in
again; every accepted triple is remembered (its SHA-256) for ``REPLAY_WINDOW_MS`` and a repeat
is refused with 401 ``Challenge already used``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from happy_socket import App, HttpContext, HTTPError

from .service import AccountsService
from .tables import auth_replays

REPLAY_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_FIELD = 4096


def _b64(value: Any) -> bytes:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise HTTPError(400, "Invalid request")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(401, "Invalid signature") from None


async def login(ctx: HttpContext) -> Any:
    """Verify an Ed25519 signature of a challenge; answer a token for the key's account."""
    data = await ctx.json()
    public_key, challenge, signature = (
        _b64(data.get(k)) for k in ("publicKey", "challenge", "signature")
    )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, challenge)
    except (InvalidSignature, ValueError):
        raise HTTPError(401, "Invalid signature") from None
    digest = hashlib.sha256(public_key + b"\0" + challenge + b"\0" + signature).hexdigest()
    if not await first_use(ctx.app, digest):
        raise HTTPError(401, "Challenge already used")
    user_id = await ctx.app.service(AccountsService).for_public_key(public_key)
    return {"success": True, "token": ctx.app.tokens.issue(user_id)}


async def first_use(app: App, digest: str) -> bool:
    """Record a (key, challenge, signature) digest; False when it was seen in the window."""
    stmt = (
        app.db.insert(auth_replays)
        .values(digest=digest, seen_at=app.clock())
        .on_conflict_do_nothing(index_elements=["digest"])
        .returning(auth_replays.c.digest)
    )
    return await app.db.write(lambda tx: tx.fetch_val(stmt)) is not None


async def prune_replays(app: App) -> None:
    """Forget triples older than the replay window."""
    cutoff = app.clock() - REPLAY_WINDOW_MS
    await app.db.execute(auth_replays.delete().where(auth_replays.c.seen_at < cutoff))
