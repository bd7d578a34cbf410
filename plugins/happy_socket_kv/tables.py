"""The ``kv_entries`` table: one row per (account, key); a NULL value is a tombstone."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

kv_entries = sa.Table(
    "kv_entries",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    # NULL: deleted (a tombstone keeps its version; reads and lists skip it)
    sa.Column("value", sa.LargeBinary, nullable=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
