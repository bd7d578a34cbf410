"""HTTP bootstrap (PROTOCOL.md §10): ``GET /health`` and ``POST /v1/auth`` (Ed25519 login)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import hashlib
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from happy_socket import App, HttpContext, HTTPError, JSONResponse, Routes, hookimpl, now_ms

REPLAY_WINDOW_MS = 30 * 24 * 3600 * 1000
PRUNE_EVERY_S = 6 * 3600
MAX_FIELD = 4096

auth_replays = sa.Table(
    "auth_replays",
    sa.MetaData(),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("seen_at", sa.BigInteger, nullable=False, index=True),
)


def _iso_now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


async def health(ctx: HttpContext) -> Any:
    """``{status: "ok"}``, or 503 when the database does not answer."""
    body = {"timestamp": _iso_now(), "service": "happy-socket"}
    if await ctx.app.db.ping():
        return {"status": "ok", **body}
    return JSONResponse({"status": "error", **body, "error": "Database unavailable"}, 503)


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
    if not await _first_use(ctx.app, digest):
        raise HTTPError(401, "Challenge already used")
    user_id = await ctx.app.accounts.for_public_key(base64.b64encode(public_key).decode())
    return {"success": True, "token": ctx.app.tokens.issue(user_id)}


async def _first_use(app: App, digest: str) -> bool:
    """Record a (key, challenge, signature) triple; False when it was seen in the window."""
    stmt = (
        app.db.insert(auth_replays)
        .values(digest=digest, seen_at=now_ms())
        .on_conflict_do_nothing(index_elements=["digest"])
        .returning(auth_replays.c.digest)
    )
    return await app.db.write(lambda tx: tx.fetch_val(stmt)) is not None


async def prune_replays(app: App) -> None:
    """Forget triples older than the replay window."""
    cutoff = now_ms() - REPLAY_WINDOW_MS
    await app.db.execute(auth_replays.delete().where(auth_replays.c.seen_at < cutoff))


async def _prune_forever(app: App) -> None:
    while True:
        with contextlib.suppress(Exception):
            await prune_replays(app)
        await asyncio.sleep(PRUNE_EVERY_S)


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    auth_replays.to_metadata(metadata)


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add("/health", health, methods=["GET"])
    routes.add("/v1/auth", login, methods=["POST"])


@hookimpl
def startup(app: App) -> None:
    app.spawn(_prune_forever(app), name="auth-replay-prune")
