"""The clients' crypto for the accounts tests: an approving phone and a requesting device.

Box bundles are what the happy app sends as ``response``: an ephemeral X25519 public key, a
24-byte nonce, then the NaCl ``crypto_box`` output, in standard base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import httpx
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey

from tests.plugins.sessions.support import SECRET, FakeClock, body_of, make_app

__all__ = ["SECRET", "FakeClock", "Phone", "Requester", "b64", "body_of", "make_app"]


def b64(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    """Unpadded base64url, as the links in QR codes carry keys."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def content_public_key(secret: bytes) -> bytes:
    """The account's content public key, derived from its secret as the app does."""
    chain = hmac.new(b"Happy EnCoder Master Seed", secret, hashlib.sha512).digest()[32:]
    seed = hmac.new(chain, b"\x00content", hashlib.sha512).digest()[:32]
    return bytes(PrivateKey.from_seed(seed).public_key)


def bundle(payload: bytes, recipient: bytes) -> str:
    """``payload`` boxed to ``recipient`` from a fresh ephemeral key (base64)."""
    ephemeral = PrivateKey.generate()
    boxed = Box(ephemeral, PublicKey(recipient)).encrypt(payload, os.urandom(24))
    return b64(bytes(ephemeral.public_key) + bytes(boxed))


class Phone:
    """An account holder's phone: a 32-byte secret whose Ed25519 key logs in."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or os.urandom(32)
        self.signing = SigningKey(self.secret)

    def login_body(self) -> dict[str, str]:
        """A fresh ``POST /v1/auth`` body."""
        challenge = os.urandom(32)
        return {
            "publicKey": b64(bytes(self.signing.verify_key)),
            "challenge": b64(challenge),
            "signature": b64(self.signing.sign(challenge).signature),
        }

    async def login(self, http: httpx.AsyncClient) -> str:
        """A token from ``POST /v1/auth``."""
        reply = await http.post("/v1/auth", json=self.login_body())
        assert reply.status_code == 200, reply.text
        token: str = reply.json()["token"]
        return token

    def v1_response(self, requester: bytes) -> str:
        """The account secret boxed to ``requester``."""
        return bundle(self.secret, requester)

    def v2_response(self, requester: bytes) -> str:
        """``0x00`` and the content public key, boxed to ``requester``."""
        return bundle(b"\x00" + content_public_key(self.secret), requester)


class Requester:
    """A device asking to be linked: the CLI's raw X25519 secret, or the web app's seeded one."""

    def __init__(self, *, seeded: bool = False) -> None:
        raw = os.urandom(32)
        self.key = PrivateKey.from_seed(raw) if seeded else PrivateKey(raw)
        self.public = bytes(self.key.public_key)

    @property
    def b64(self) -> str:
        """The public key as the HTTP bodies carry it."""
        return b64(self.public)

    @property
    def b64url(self) -> str:
        """The public key as the QR links carry it."""
        return b64url(self.public)

    def open(self, response: Any) -> bytes:
        """Decrypt a ``response`` bundle."""
        raw = base64.b64decode(response, validate=True)
        box = Box(self.key, PublicKey(raw[:32]))
        return box.decrypt(raw[56:], raw[32:56])
