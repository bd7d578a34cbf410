"""Hypothesis strategies for hostile JSON, and per-event templates of valid-looking payloads.

Payload lists are generated up front with a fixed seed (``derandomize=True``): a failure
names its payload and reproduces. (Hypothesis also mixes in literals it finds in the loaded
source code, so the pool differs slightly between running one file and the whole suite.)
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EDGE_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
EDGE_FLOATS = [0.0, -0.0, 0.5, -1.5, 1e-300, 1e300, -1e300, 2.0**53, 1.7976931348623157e308]
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "\x00\x01\x7f",
    "null",
    "undefined",
    "NaN",
    "true",
    "0",
    "-1",
    "__proto__",
    "constructor",
    "toString",
    "../../etc/passwd",
    "' OR 1=1 --",
    "'; DROP TABLE sessions; --",
    "%s%s%n",
    "{{7*7}}",
    "\u202e\u200b\ufeff",
    "\U0001f600" * 50,
    "e\u0301" * 30,
    "\ud7ff\ue000\uffff",
    "\ud800",
    "a\udfffb",
    "\udbff\udfff",
    "a" * 256,
    "a" * 257,
    "x" * 1025,
    "user:alice:session:s1",
    "*",
    "====",
    "not base64!",
]
KEYS = [
    "sid",
    "sessionId",
    "machineId",
    "artifactId",
    "id",
    "method",
    "params",
    "expectedVersion",
    "metadata",
    "agentState",
    "daemonState",
    "message",
    "localId",
    "time",
    "thinking",
    "state",
    "key",
    "tokens",
    "cost",
    "total",
    "header",
    "body",
    "data",
    "dataEncryptionKey",
    "__proto__",
    "constructor",
    "",
]

# Characters from every plane, lone surrogates included (the client writes them as
# ``\\ud800`` escapes, as JSON.stringify does; the server reads them as U+FFFD).
chars = st.one_of(st.characters(), st.characters(categories=["Cs"]))
huge_strings = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["a", "é", "\u4e2d", "\U0001f600", "\\", '"']),
    st.integers(1_000, 100_000),
)
strings = st.one_of(
    st.text(chars, max_size=40),
    st.sampled_from(ODD_STRINGS),
    huge_strings,
)
numbers = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, strings)
keys = st.one_of(st.sampled_from(KEYS), st.text(chars, max_size=12))
junk = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=10,
)
small_junk = st.one_of(
    leaves, st.lists(leaves, max_size=3), st.dictionaries(keys, leaves, max_size=3)
)


def deep(depth: int) -> Any:
    """Nested lists and objects ``depth`` levels deep."""
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"sid": value}
    return value


deep_values = st.sampled_from([deep(31), deep(32), deep(33), deep(200)])
hostile = st.one_of(junk, junk, junk, deep_values)

# -- field-aware variants ------------------------------------------------------------

Ids = dict[str, list[Any]]


def templates(ids: Ids) -> dict[str, dict[str, list[Any]]]:
    """Per known event: each field and some valid-looking values for it.

    ``ids`` maps "session", "machine", "artifact", "method" to candidate values (the
    user's own, another user's, unknown ones).
    """
    now = [1_700_000_000_000, 0, -1, 2**63 - 1, "now"]
    version = [0, 1, 2, -1, 2**53, 2**63 - 1, 1.0, 0.5, "1"]
    b64s = ["", "AAAA", "aGVsbG8=", "aGVsbG8", "!!!!", "A" * 4000]
    opaque = ["", "x", "enc:abc", "\U0001f600"]
    part = [{"data": b, "expectedVersion": v} for b in b64s[:3] for v in (0, 1, 7)] + [
        {"data": "AAAA"},
        {"expectedVersion": 1},
        {},
        None,
        0,
        "",
    ]
    totals = [{"total": 1}, {"total": 0.5, "in": 2}, {"total": "1"}, {}, {"total": None}]
    session, machine = ids["session"], ids["machine"]
    artifact, method = ids["artifact"], ids["method"]
    return {
        "update-metadata": {"sid": session, "metadata": opaque, "expectedVersion": version},
        "update-state": {
            "sid": session,
            "agentState": [*opaque, None],
            "expectedVersion": version,
        },
        "session-alive": {"sid": session, "time": now, "thinking": [True, False, "yes"]},
        "session-end": {"sid": session, "time": now},
        "message": {"sid": session, "message": opaque, "localId": ["l1", "", None, "l" * 257]},
        "app-state": {"state": ["active", "background", "", None]},
        "machine-alive": {"machineId": machine, "time": now},
        "machine-update-metadata": {
            "machineId": machine,
            "metadata": opaque,
            "expectedVersion": version,
        },
        "machine-update-state": {
            "machineId": machine,
            "daemonState": opaque,
            "expectedVersion": version,
        },
        "artifact-read": {"artifactId": artifact},
        "artifact-delete": {"artifactId": artifact},
        "artifact-create": {
            "id": artifact,
            "header": b64s,
            "body": b64s,
            "dataEncryptionKey": b64s,
        },
        "artifact-update": {"artifactId": artifact, "header": part, "body": part},
        "rpc-register": {"method": method},
        "rpc-unregister": {"method": method},
        "rpc-call": {"method": method, "params": [None, {}, "p", [1, 2], {"a": {"b": 1}}]},
        "access-key-get": {"sessionId": session, "machineId": machine},
        "usage-report": {
            "key": ["k", "", "k" * 257, None],
            "sessionId": [*session, "", 0, False],
            "tokens": totals,
            "cost": totals,
        },
        "ping": {},
    }


def generic_template(ids: Ids) -> dict[str, list[Any]]:
    """For events this suite does not know: every id-like field at once."""
    return {
        "sid": ids["session"],
        "sessionId": ids["session"],
        "machineId": ids["machine"],
        "artifactId": ids["artifact"],
        "id": ids["artifact"],
        "method": ids["method"],
        "expectedVersion": [0, 1, -1],
        "metadata": ["x"],
    }


@st.composite
def mutated(draw: st.DrawFn, template: dict[str, list[Any]]) -> Any:
    """A valid-looking payload from ``template`` with some fields dropped, nulled or junk."""
    payload: dict[str, Any] = {}
    for key, values in template.items():
        action = draw(st.sampled_from(["keep", "keep", "junk", "drop", "null", "wrong-type"]))
        if action == "drop":
            continue
        value = draw(st.sampled_from(values)) if values else None
        if action == "junk":
            value = draw(small_junk)
        elif action == "null":
            value = None
        elif action == "wrong-type":
            value = draw(st.sampled_from([[value], {"v": value}, 1, True, "1", 1.5]))
        payload[key] = value
    extra = draw(st.dictionaries(keys, small_junk, max_size=2))
    for key, value in extra.items():
        payload.setdefault(key, value)
    if draw(st.integers(0, 19)) == 0:  # the right fields inside the wrong container
        return draw(st.sampled_from([[payload], {"data": payload}, [payload, payload]]))
    return payload


# -- generation ----------------------------------------------------------------------

MAX_ENCODED = 900_000  # stay under engine.io's 1,000,000-byte packet limit (test_limits)


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as the python-socketio client encodes it (ASCII-escaped JSON)."""
    try:
        return len(json.dumps(value, separators=(",", ":")))
    except RecursionError:  # deeper than the stdlib encoder goes: the client cannot send it
        return MAX_ENCODED + 1


def fingerprint(value: Any) -> str:
    """A canonical text of ``value`` (for de-duplication)."""
    try:
        return json.dumps(value, sort_keys=True)
    except RecursionError:
        return f"deep:{id(value)}"


def generate(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """Up to ``count`` distinct values of ``strategy``, from a fixed seed.

    One hypothesis example per value (``derandomize=True``: a fixed seed, no database);
    values larger than ``MAX_ENCODED`` once encoded are left out.
    """
    out: dict[str, Any] = {}

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        if encoded_size(value) <= MAX_ENCODED:
            out.setdefault(fingerprint(value), value)

    collect()
    return list(out.values())
