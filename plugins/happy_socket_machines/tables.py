"""The machines table and its wire serialization (docs/http/sessions.md)."""

from __future__ import annotations

import base64
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

machines = sa.Table(
    "machines",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # chosen by the daemon; unique across users
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("metadata_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("daemon_state", sa.Text, nullable=True),
    sa.Column("daemon_state_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("data_encryption_key", sa.LargeBinary, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_active_at", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_machines_account_last", "account_id", "last_active_at"),
    sa.Index("ix_machines_active_last", "active", "last_active_at"),
)


def machine_json(row: dict[str, Any], *, seq: bool = True) -> dict[str, Any]:
    """A machine row in the shape of ``GET /v1/machines`` (``seq=False``: ``POST /v1/machines``)."""
    key = row["data_encryption_key"]
    out: dict[str, Any] = {
        "id": row["id"],
        "metadata": row["metadata"],
        "metadataVersion": int(row["metadata_version"]),
        "daemonState": row["daemon_state"],
        "daemonStateVersion": int(row["daemon_state_version"]),
        "dataEncryptionKey": None if key is None else base64.b64encode(bytes(key)).decode(),
    }
    if seq:
        out["seq"] = int(row["seq"])
    out.update(
        active=bool(row["active"]),
        activeAt=int(row["last_active_at"]),
        createdAt=int(row["created_at"]),
        updatedAt=int(row["updated_at"]),
    )
    return out


def new_machine_body(row: dict[str, Any]) -> dict[str, Any]:
    """The ``new-machine`` update body."""
    body = machine_json(row)
    return {"t": "new-machine", "machineId": body.pop("id"), **body}
