"""Server-signed bearer tokens (HS256 JWTs) and the default ``authenticate`` hook."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from .context import now_ms
from .errors import ConfigError
from .hookspecs import hookimpl

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
        self._secret = secret
        # token -> user of tokens already verified: a token never expires, so a reconnecting
        # client skips the JWT decode (~70 us, a tenth of a handshake's CPU)
        self._verified: dict[str, str] = {}

    def issue(self, user_id: str) -> str:
        """A bearer token for ``user_id`` (no expiry, like the reference server's)."""
        claims = {"sub": user_id, "iss": ISSUER, "iat": now_ms() // 1000}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: Any) -> str | None:
        """The user id inside a valid token, or None."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        known = self._verified.get(token)
        if known is not None:
            return known
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["sub", "iss"]},
            )
        except jwt.PyJWTError:
            return None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            return None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = sub
        return sub


class DefaultAuth:
    """The core's ``authenticate``: the server's own tokens of existing accounts."""

    @hookimpl(trylast=True)
    async def authenticate(self, app: App, token: str, auth: dict[str, Any]) -> str | None:
        user_id = app.tokens.verify(token)
        if user_id is None or not await app.accounts.exists(user_id):
            return None
        return user_id
