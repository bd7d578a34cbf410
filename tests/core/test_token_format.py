"""Tokens the happy app can read: the middle part is standard base64 of JSON with a string
``sub``, for any user id; tokens issued by earlier versions (PyJWT) still verify; tampered
tokens are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from happy_socket.auth import MAX_TOKEN_LENGTH, VERIFIED_CACHE_SIZE, Tokens
from happy_socket.cli import cli
from tests.e2e.node import require_node

SECRET = "k" * 32
STANDARD_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
HOSTILE_IDS = [
    "a?~>",
    ">>>",
    "???",
    "~~~",
    "?>~",
    "a>b?c~d",
    "x" * 200,
    "\x00",
    '"',
    "\\",
    "</script>",
    " ",
    "\u2028",
    "é",
    "😀",
    "日本語",
    "\udc80",
    "alice.bob",
    "a=b",
    "-_+/",
]


def app_decode(token: str) -> dict[str, Any]:
    """What the happy app does with a token; raises when it would fail."""
    parts = token.split(".")
    assert len(parts) == 3 and all(parts), token
    middle = parts[1]
    assert STANDARD_B64.fullmatch(middle), middle
    assert len(middle) % 4 != 1, middle
    raw = base64.b64decode(middle + "=" * (-len(middle) % 4), validate=True)
    claims = json.loads(raw.decode("utf-8"))
    assert isinstance(claims, dict) and isinstance(claims["sub"], str), claims
    return claims


def random_ids(count: int) -> list[str]:
    rng = random.Random(20_251_125)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz0123456789",
        ">?~",
        "".join(chr(c) for c in range(32, 127)),
        "é日本😀\u2028\x7f\x01",
    ]
    ids = []
    for _ in range(count):
        pool = "".join(rng.sample(alphabets, rng.randint(1, len(alphabets))))
        ids.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 60))))
    return ids


def test_every_token_is_readable_by_the_app() -> None:
    tokens = Tokens(SECRET)
    ids = HOSTILE_IDS + random_ids(3000)
    with_plus_or_slash = 0
    for user_id in ids:
        token = tokens.issue(user_id)
        assert app_decode(token)["sub"] == user_id
        assert tokens.verify(token) == user_id
        with_plus_or_slash += bool(set(token.split(".")[1]) & {"+", "/"})
    assert with_plus_or_slash > 100  # the ids did exercise the standard-only letters


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_any_user_id_gives_a_readable_token(user_id: str) -> None:
    tokens = Tokens(SECRET)
    token = tokens.issue(user_id)
    assert app_decode(token)["sub"] == user_id
    assert tokens.verify(token) == user_id


def test_the_app_decoder_in_javascript_reads_the_tokens() -> None:
    """``atob`` (what the web app uses) and a strict UTF-8 decode, in Node."""
    node = require_node()
    tokens = Tokens(SECRET)
    ids = HOSTILE_IDS[:16] + random_ids(300)
    script = """
    const tokens = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const out = tokens.map((t) => {
      const parts = t.split('.');
      if (parts.length !== 3 || parts.some((p) => !p)) return null;
      const bytes = Uint8Array.from(atob(parts[1]), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
      return typeof claims.sub === 'string' ? claims.sub : null;
    });
    process.stdout.write(JSON.stringify(out));
    """
    issued = [tokens.issue(user_id) for user_id in ids]
    done = subprocess.run(
        [node, "-e", script],
        input=json.dumps(issued),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    subs = json.loads(done.stdout)
    # JSON.stringify writes lone surrogates as escapes, json.loads reads them back
    assert subs == ids


def test_tokens_are_fresh_and_jwt_shaped() -> None:
    tokens = Tokens(SECRET)
    first, second = tokens.issue("alice"), tokens.issue("alice")
    assert first != second
    header = json.loads(base64.urlsafe_b64decode(first.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = app_decode(first)
    assert set(claims) == {"sub", "iss", "iat", "jti"}
    assert claims["iss"] == "happy-socket" and abs(claims["iat"] - time.time()) < 5
    # an id without '>', '?' or '~' gives a token any JWT library reads
    assert jwt.decode(first, SECRET, algorithms=["HS256"], issuer="happy-socket")["sub"] == "alice"


def pyjwt_token(sub: Any, secret: str = SECRET, **claims: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode({"sub": sub, "iss": "happy-socket", "iat": 1, **claims}, secret, "HS256")


@pytest.mark.parametrize("user_id", ["alice", "a?~>", "é😀", "x" * 300, "???>>>~~~"])
def test_tokens_issued_before_still_verify(user_id: str) -> None:
    old = pyjwt_token(user_id)
    tokens = Tokens(SECRET)
    assert tokens.verify(old) == user_id
    assert tokens.verify(old) == user_id  # from the cache


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signed(header: dict[str, Any], claims: dict[str, Any], secret: str = SECRET) -> str:
    head = _b64url(json.dumps(header).encode())
    body = base64.b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def test_tampered_tokens_are_refused() -> None:
    tokens = Tokens(SECRET)
    good = tokens.issue("alice")
    head, body, sig = good.split(".")
    claims = app_decode(good)
    forged_body = base64.b64encode(json.dumps({**claims, "sub": "bob"}).encode()).decode()
    flipped_sig = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    none_head = _b64url(b'{"alg":"none","typ":"JWT"}')
    hs256 = {"alg": "HS256", "typ": "JWT"}
    refused = [
        f"{head}.{forged_body.rstrip('=')}.{sig}",  # payload changed
        f"{head}.{body[:-2]}{body[-1]}{body[-2]}.{sig}",  # payload letters swapped
        f"{head}.{body}.{flipped_sig}",  # signature changed
        f"{head}.{body}.{sig}=",
        f"{head}.{body}.",  # no signature
        f"{none_head}.{body}.",  # alg none, unsigned
        f"{none_head}.{body}.{sig}",  # alg none, the old signature
        Tokens("another-secret-0123456789abcdef").issue("alice"),
        pyjwt_token("alice", secret="another-secret-0123456789abcdef"),
        _signed({"alg": "HS512", "typ": "JWT"}, claims),  # signed, but not HS256
        _signed(hs256, {**claims, "iss": "someone-else"}),
        _signed(hs256, {"iss": "happy-socket"}),  # no sub
        _signed(hs256, {**claims, "sub": ""}),
        _signed(hs256, {**claims, "sub": 7}),
        _signed(hs256, {**claims, "sub": None}),
        _signed(hs256, ["not", "an", "object"]),  # type: ignore[arg-type]
        f"{head}.{body}",
        f"{head}.{body}.{sig}.{sig}",
        f".{body}.{sig}",
        f"{head}..{sig}",
        f"{head}.{body}é.{sig}",
        good + " ",
        "",
        "a.b",
        "x" * 5000,
    ]
    for token in refused:
        assert tokens.verify(token) is None, token
    for value in (None, 7, ["t"], {"t": 1}, b"bytes"):
        assert tokens.verify(value) is None
    assert tokens.verify(good) == "alice"


def test_tokens_past_the_length_limit_are_refused_unread() -> None:
    tokens = Tokens(SECRET)
    long_id = "z" * 3000
    token = tokens.issue(long_id)
    assert len(token) > MAX_TOKEN_LENGTH
    assert app_decode(token)["sub"] == long_id
    assert tokens.verify(token) is None


def test_the_verified_cache_stays_bounded() -> None:
    tokens = Tokens(SECRET)
    issued = [tokens.issue(f"user-{i}") for i in range(VERIFIED_CACHE_SIZE + 10)]
    assert all(tokens.verify(token) == f"user-{i}" for i, token in enumerate(issued))
    assert 0 < len(tokens._verified) <= VERIFIED_CACHE_SIZE


def test_cli_token_for_any_user_id_is_readable(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    result = CliRunner().invoke(cli, ["token", "a?~>", "--db", db, "--secret", SECRET])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert app_decode(token)["sub"] == "a?~>"
    assert Tokens(SECRET).verify(token) == "a?~>"
