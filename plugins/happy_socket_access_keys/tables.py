"""The ``access_keys`` table: one opaque key per (user, machine, session)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

access_keys = sa.Table(
    "access_keys",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("machine_id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("data_version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # deleting a session removes its keys: (account_id, session_id) lookups
    sa.Index("ix_access_keys_account_session", "account_id", "session_id"),
)
