"""POST /v1/auth with a tweetnacl-signed challenge from Node, then the token on the socket."""

from __future__ import annotations

import base64

from happy_socket.testing import ServerHarness

from .node import results

SEED = "11" * 32


def account_of(server: ServerHarness, token: str) -> str:
    """The account a token stands for, as the server reads it."""
    user_id = server.app.tokens.verify(token)
    assert user_id is not None, token
    return user_id


async def test_login_connect_ping(server: ServerHarness) -> None:
    key, login, connected, pong = await results(
        server.url,
        [
            {"op": "keypair"},
            {"op": "login"},
            {"op": "connect", "useToken": True},
            {"op": "emit", "event": "ping", "ack": True},
        ],
    )
    assert login["status"] == 200
    assert set(login["body"]) == {"success", "token"}
    assert login["body"]["success"] is True
    assert connected["connected"] is True
    assert pong == {"ack": {}, "ackArgs": [{}]}
    user_id = account_of(server, login["body"]["token"])
    assert await server.app.accounts.exists(user_id)
    assert key["publicKey"]


async def test_replayed_challenge_and_signature_are_refused(server: ServerHarness) -> None:
    first, replay, fresh = await results(
        server.url,
        [
            {"op": "login"},
            {"op": "login", "replay": True},
            {"op": "login"},
        ],
    )
    assert first["status"] == 200
    assert replay["challenge"] == first["challenge"]
    assert replay["signature"] == first["signature"]
    assert (replay["status"], replay["body"]) == (401, {"error": "Challenge already used"})
    assert fresh["status"] == 200


async def test_bad_signature_is_refused(server: ServerHarness) -> None:
    bad, connected = await results(
        server.url,
        [{"op": "login", "badSignature": True}, {"op": "connect", "useToken": True}],
    )
    assert (bad["status"], bad["body"]) == (401, {"error": "Invalid signature"})
    assert connected == {"connect_error": "Missing authentication token"}


async def test_signature_by_another_key_is_refused(server: ServerHarness) -> None:
    _, first, forged = await results(
        server.url,
        [
            {"op": "keypair"},
            {"op": "login"},
            {"op": "keypair"},
        ],
    )
    # the first key's (challenge, signature) presented under the second key
    answer = await results(
        server.url,
        [
            {
                "op": "http",
                "method": "POST",
                "path": "/v1/auth",
                "body": {
                    "publicKey": forged["publicKey"],
                    "challenge": first["challenge"],
                    "signature": first["signature"],
                },
            }
        ],
    )
    assert answer == [{"status": 401, "body": {"error": "Invalid signature"}}]


async def test_same_key_logs_into_the_same_account(server: ServerHarness) -> None:
    key, one, two = await results(
        server.url,
        [{"op": "keypair", "seed": SEED}, {"op": "login"}, {"op": "login"}],
    )
    assert one["challenge"] != two["challenge"]
    assert one["status"] == two["status"] == 200
    assert account_of(server, one["body"]["token"]) == account_of(server, two["body"]["token"])
    # a later run with the same key (a new process, like a restarted client) too
    _, three = await results(server.url, [{"op": "keypair", "seed": SEED}, {"op": "login"}])
    assert three["status"] == 200
    assert account_of(server, three["body"]["token"]) == account_of(server, one["body"]["token"])
    # and another key gets another account
    _, other = await results(server.url, [{"op": "keypair", "seed": "22" * 32}, {"op": "login"}])
    assert account_of(server, other["body"]["token"]) != account_of(server, one["body"]["token"])
    assert key["publicKey"] == base64.b64encode(bytes.fromhex(_ed25519_public(SEED))).decode()


def _ed25519_public(seed_hex: str) -> str:
    """The public key of a seed, computed independently of tweetnacl."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
