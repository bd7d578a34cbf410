"""Server-signed bearer tokens and the default ``authenticate`` hook.

A token is ``<header>.<payload>.<signature>``, shaped like an HS256 JWT so that the happy app
can read its user id: it splits the token on ``.`` and decodes the middle part with a
*standard* base64 decoder. So the payload (ASCII JSON ``{"sub", "iss", "iat", "jti"}``) is
written in unpadded standard base64: identical to base64url unless the JSON holds ``>``,
``?`` or ``~`` (a user id can be any string), in which case it has ``+`` or ``/``, which a
stock JWT library refuses, so tokens are signed and checked here (HMAC-SHA256 over
``header.payload``, compared in constant time). Tokens issued earlier by PyJWT (base64url
payload) verify too: clients never refresh a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .context import now_ms
from .errors import ConfigError
from .hookspecs import hookimpl
from .ids import random_id
from .validation import decode_b64

if TYPE_CHECKING:
    from .app import App
    from .settings import Settings

log = logging.getLogger("happy_socket.auth")

ISSUER = "happy-socket"
MAX_TOKEN_LENGTH = 4096
VERIFIED_CACHE_SIZE = 20_000


def secret_file_for(settings: Settings) -> Path | None:
    """Where a generated secret is kept: beside the SQLite file (``<db>.secret``)."""
    db_file = settings.sqlite_file
    return None if db_file is None else db_file.with_name(db_file.name + ".secret")


def resolve_secret(settings: Settings) -> str:
    """The signing secret: ``--secret``, else the persisted one, else a new one (persisted)."""
    if settings.secret:
        return settings.secret
    path = secret_file_for(settings)
    if path is None:
        if settings.is_sqlite:  # in-memory database: nothing outlives the process anyway
            return secrets.token_urlsafe(32)
        raise ConfigError(
            "A secret is required with PostgreSQL: pass --secret or set HAPPY_SOCKET_SECRET "
            "(the same value on every process)."
        )
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    log.warning("generated a token signing secret and stored it in %s", path.resolve())
    return secret


class Tokens:
    """Issues and verifies the server's own tokens."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()
        # token -> user of tokens already verified: a token never expires, so a reconnecting
        # client skips the decode and HMAC (a tenth of a handshake's CPU)
        self._verified: dict[str, str] = {}

    def issue(self, user_id: str) -> str:
        """A bearer token for ``user_id`` (no expiry, like the reference server's).

        Every call gives a new token (``jti``), even within one second.
        """
        claims = {"sub": user_id, "iss": ISSUER, "iat": now_ms() // 1000, "jti": random_id(16)}
        raw = json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode()
        payload = base64.b64encode(raw).decode().rstrip("=")
        return f"{_HEADER}.{payload}.{self._sign(_HEADER, payload)}"

    def verify(self, token: Any) -> str | None:
        """The user id inside a valid token, or None."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        known = self._verified.get(token)
        if known is not None:
            return known
        sub = self._check(token)
        if sub is None:
            return None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = sub
        return sub

    def _sign(self, header: str, payload: str) -> str:
        digest = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _check(self, token: str) -> str | None:
        parts = token.split(".")
        if len(parts) != 3 or not all(parts) or not token.isascii():
            return None
        header, payload, signature = parts
        if not hmac.compare_digest(self._sign(header, payload), signature):
            return None
        head, claims = _json_part(header), _json_part(payload)
        if not isinstance(head, dict) or head.get("alg") != "HS256":
            return None
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) and sub else None


def _json_part(part: str) -> Any:
    """A token part decoded from base64 (standard or url-safe, padded or not) and JSON."""
    raw = decode_b64(part, max_length=None, urlsafe=True)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")


class DefaultAuth:
    """The core's ``authenticate``: the server's own tokens of existing accounts.

    The account check is cached for ``Accounts.known_ttl_ms`` (15 s); deleted accounts are
    revoked on every process by ``app.revocation`` (started and stopped here).
    """

    @hookimpl(trylast=True)
    async def authenticate(self, app: App, token: str, auth: dict[str, Any]) -> str | None:
        user_id = app.tokens.verify(token)
        if user_id is None or not await app.accounts.exists(user_id):
            return None
        return user_id

    @hookimpl(tryfirst=True)
    async def startup(self, app: App) -> None:
        await app.revocation.start()

    @hookimpl
    async def shutdown(self, app: App) -> None:
        await app.revocation.stop()
