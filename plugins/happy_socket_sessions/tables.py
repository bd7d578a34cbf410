"""Tables of the sessions plugin and their wire serialization (docs/http/sessions.md)."""

from __future__ import annotations

import base64
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),  # last message seq
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("metadata_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("agent_state", sa.Text, nullable=True),
    sa.Column("agent_state_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("data_encryption_key", sa.LargeBinary, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("last_active_at", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_sessions_account_tag", "account_id", "tag", unique=True),
    sa.Index("ix_sessions_account_updated", "account_id", "updated_at"),
    sa.Index("ix_sessions_active_last", "active", "last_active_at"),
)

session_messages = sa.Table(
    "session_messages",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("local_id", sa.Text, nullable=True),
    sa.Column("content", sa.Text, nullable=False),  # the opaque encrypted message string
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_session_messages_session_seq", "session_id", "seq", unique=True),
    sa.Index("ix_session_messages_session_local", "session_id", "local_id", unique=True),
)


def b64(value: bytes | None) -> str | None:
    """Bytes as standard base64, or None."""
    return None if value is None else base64.b64encode(bytes(value)).decode()


def session_json(row: dict[str, Any]) -> dict[str, Any]:
    """A session row in the wire shape of ``new-session`` / ``POST /v1/sessions`` (no ``t``)."""
    return {
        "id": row["id"],
        "seq": int(row["seq"]),
        "metadata": row["metadata"],
        "metadataVersion": int(row["metadata_version"]),
        "agentState": row["agent_state"],
        "agentStateVersion": int(row["agent_state_version"]),
        "dataEncryptionKey": b64(row["data_encryption_key"]),
        "active": bool(row["active"]),
        "activeAt": int(row["last_active_at"]),
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }


def message_json(row: dict[str, Any]) -> dict[str, Any]:
    """A message row in the wire shape of ``new-message.message`` and the messages route."""
    return {
        "id": row["id"],
        "seq": int(row["seq"]),
        "content": {"t": "encrypted", "c": row["content"]},
        "localId": row["local_id"],
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }
