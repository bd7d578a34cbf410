"""Shared helpers of the hostile suite: ack classification, resources of a user, DB snapshots."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from typing import Any

import attrs
import httpx
import sqlalchemy as sa

from happy_socket import App, Envelope
from happy_socket.testing import TestSocket

# Events whose handler answers the ack with nothing (docs/events.md): heartbeats, and the RPC
# registration events that reply with an event of their own. Every other *known* event must
# answer a dict; events this suite does not know yet may answer nothing or an envelope dict.
NO_ACK_EVENTS = frozenset(
    {"session-alive", "session-end", "machine-alive", "rpc-register", "rpc-unregister"}
)
ACK_EVENTS = frozenset(
    {
        "update-metadata",
        "update-state",
        "message",
        "app-state",
        "machine-update-metadata",
        "machine-update-state",
        "artifact-read",
        "artifact-create",
        "artifact-update",
        "artifact-delete",
        "rpc-call",
        "access-key-get",
        "usage-report",
        "ping",
    }
)
ENVELOPE_KEYS = {Envelope.RESULT: "result", Envelope.OK: "ok", Envelope.SUCCESS: "success"}


class BadAck(AssertionError):
    """An ack that breaks the contract."""


def classify(event: str, envelope: Envelope, ack: Any) -> str:
    """``"success"``, ``"error"`` or ``"neutral"`` for a well-formed ack; BadAck otherwise."""
    if ack is None:
        if event in ACK_EVENTS:
            raise BadAck(f"{event}: empty ack, expected a {envelope.value!r} envelope")
        return "neutral"
    if not isinstance(ack, dict):
        raise BadAck(f"{event}: ack is not an object: {ack!r:.200}")
    key = ENVELOPE_KEYS[envelope]
    if key not in ack:
        foreign = [k for e, k in ENVELOPE_KEYS.items() if e is not envelope and k in ack]
        if foreign:
            raise BadAck(f"{event}: ack uses another envelope ({foreign}): {ack!r:.200}")
        if ack == {} and event not in NO_ACK_EVENTS:
            return "neutral"  # ping's {}
        raise BadAck(f"{event}: ack lacks {key!r}: {ack!r:.200}")
    if "Internal error" in (ack.get("message"), ack.get("error")):
        raise BadAck(f"{event}: Internal error")
    value = ack[key]
    if envelope is Envelope.RESULT:
        if value == "success":
            return "success"
        if value == "version-mismatch":
            return "error"
        if value != "error":
            raise BadAck(f"{event}: result is {value!r}")
        if "message" in ack and not isinstance(ack["message"], str):
            raise BadAck(f"{event}: message is not a string: {ack!r:.200}")
        return "error"
    if value is True:
        return "success"
    if value is not False or not isinstance(ack.get("error"), str):
        raise BadAck(f"{event}: malformed {key!r} envelope: {ack!r:.200}")
    return "error"


def all_tables(app: App) -> list[sa.Table]:
    """Every table of the app (core and plugins)."""
    seen: dict[str, sa.Table] = {}
    for tables in app.tables.values():
        for table in tables:
            seen[table.name] = table
    for table in app.metadata.tables.values():
        seen.setdefault(table.name, table)
    return [seen[name] for name in sorted(seen)]


async def row_counts(app: App) -> dict[str, int]:
    """Rows per table, plus the sum of every account's update seq (``accounts.seq``)."""
    counts: dict[str, int] = {}
    for table in all_tables(app):
        counts[table.name] = int(
            await app.db.fetch_val(sa.select(sa.func.count()).select_from(table)) or 0
        )
        if table.name == "accounts":
            total = await app.db.fetch_val(sa.select(sa.func.coalesce(sa.func.sum(table.c.seq), 0)))
            counts["accounts.seq"] = int(total or 0)
    return counts


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


async def rows_mentioning(app: App, needles: Iterable[str]) -> dict[str, list[str]]:
    """Every row (as sorted JSON) of every table with a column equal to one of ``needles``."""
    wanted = set(needles)
    found: dict[str, list[str]] = {}
    for table in all_tables(app):
        rows = await app.db.fetch_all(sa.select(table))
        hits = [
            json.dumps({k: _plain(v) for k, v in row.items()}, sort_keys=True, default=str)
            for row in rows
            if any(isinstance(v, str) and v in wanted for v in row.values())
        ]
        found[table.name] = sorted(hits)
    return found


# A new connection per request: every hostile request stands alone (and before the harness
# listened with IPPROTO_TCP, keep-alive requests to it waited ~40 ms each).
FRESH = httpx.Limits(max_keepalive_connections=0)


def b64(data: bytes) -> str:
    """Standard base64."""
    return base64.b64encode(data).decode()


@attrs.define
class Resources:
    """One user's resources, created through the protocol (HTTP routes and socket events)."""

    user: str
    token: str
    marker: str
    session_id: str = ""
    session_tag: str = ""
    machine_id: str = ""
    artifact_id: str = ""
    rpc_method: str = ""
    usage_key: str = ""
    has_access_key: bool = False

    @property
    def needles(self) -> list[str]:
        """Strings that identify this user's data in rows and payloads."""
        values = [self.user, self.session_id, self.machine_id, self.artifact_id, self.marker]
        return [v for v in values if v]


async def create_resources(
    base_url: str, app: App, user: str, sock: TestSocket | None = None
) -> Resources:
    """A session, a machine, an artifact, an access key and a usage report for ``user``.

    Parts whose plugin is not installed are left empty.
    """
    token = await app.issue_token(user)
    marker = f"marker-{uuid.uuid4().hex[:12]}"  # content only: no id contains it
    tag = uuid.uuid4().hex[:12]
    res = Resources(user=user, token=token, marker=marker)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=10, limits=FRESH
    ) as http:
        if "sessions" in app.services:
            res.session_tag = f"tag-{tag}"
            body = {"tag": res.session_tag, "metadata": marker, "agentState": marker}
            reply = await http.post("/v1/sessions", json=body)
            assert reply.status_code == 200, reply.text
            res.session_id = reply.json()["session"]["id"]
        if "machines" in app.services:
            res.machine_id = f"m-{tag}"
            body = {"id": res.machine_id, "metadata": marker, "daemonState": marker}
            reply = await http.post("/v1/machines", json=body)
            assert reply.status_code == 200, reply.text
        if "access-keys" in app.services and res.session_id and res.machine_id:
            path = f"/v1/access-keys/{res.session_id}/{res.machine_id}"
            reply = await http.post(path, json={"data": marker})
            assert reply.status_code == 200, reply.text
            res.has_access_key = True
    if sock is not None:
        if "artifact-create" in app.registry:
            res.artifact_id = f"a-{tag}"
            blob = b64(marker.encode())
            ack = await sock.call(
                "artifact-create",
                {"id": res.artifact_id, "header": blob, "body": blob, "dataEncryptionKey": blob},
            )
            assert ack["result"] == "success", ack
        if "message" in app.registry and res.session_id:
            ack = await sock.call("message", {"sid": res.session_id, "message": marker})
            assert ack["result"] == "success", ack
        if "usage-report" in app.registry and res.session_id:
            res.usage_key = f"k-{tag}"
            report = {
                "key": res.usage_key,
                "sessionId": res.session_id,
                "tokens": {"total": 1},
                "cost": {"total": 1},
            }
            ack = await sock.call("usage-report", report)
            assert ack["success"] is True, ack
    return res
