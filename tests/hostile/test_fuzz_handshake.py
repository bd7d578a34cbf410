"""Hostile handshake ``auth`` objects: every one is accepted or refused with an exact message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from tests.conftest import ServerFactory

from .conftest import FUZZ_REPORTS
from .fuzz import error_logs
from .payloads import generate, junk, small_junk

REFUSALS = {
    "Missing authentication token",
    "Session ID required for session-scoped clients",
    "Machine ID required for machine-scoped clients",
    "Invalid authentication token",
    "Authentication data too large",  # the auth object over 4 KB as JSON
}


def auths(token: str) -> st.SearchStrategy[Any]:
    """Junk, and objects with a valid or junk token plus junk or valid-looking fields.

    A bare number is left out at the top level: in a Socket.IO CONNECT packet its leading
    digits read as a packet id (``40123``), so it is not a payload the protocol can carry;
    the server drops such a packet like any other it cannot parse.
    """
    client_types = st.sampled_from(["user-scoped", "session-scoped", "machine-scoped", "x"])
    fields = st.fixed_dictionaries(
        {},
        optional={
            "clientType": st.one_of(client_types, small_junk),
            "sessionId": st.one_of(st.just("s1"), small_junk),
            "machineId": st.one_of(st.just("m1"), small_junk),
            "happyClient": small_junk,
            "appState": st.one_of(st.just("active"), small_junk),
        },
    )
    tokens = st.one_of(st.just(token), st.just(token + "x"), st.just(token[:-2]), small_junk)
    with_token = st.builds(lambda t, f: {"token": t, **f}, tokens, fields)
    not_a_number = junk.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float))
    return st.one_of(not_a_number, with_token, with_token)


async def test_hostile_handshakes(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server()
    token = await server.token("alice")
    values = generate(auths(token), 150)
    failures = []
    accepted = 0
    for auth in values:
        message = await server.refusal(auth)
        if message is None:
            accepted += 1
            if not (isinstance(auth, dict) and auth.get("token") == token):
                failures.append(f"accepted without the token: {auth!r:.200}")
        elif message not in REFUSALS:
            failures.append(f"{auth!r:.200}: refused with {message!r}")
    assert await (await server.client("alice")).call("ping") == {}
    failures += error_logs(caplog)
    FUZZ_REPORTS.append(
        f"hostile fuzz (handshake): {len(values)} auth objects, {accepted} accepted"
    )
    assert accepted > 0
    assert not failures, "\n".join(failures[:15])
