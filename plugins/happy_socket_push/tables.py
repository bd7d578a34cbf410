"""The ``push_tokens`` table: one row per (account, token)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

push_tokens = sa.Table(
    "push_tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ux_push_tokens_account_token", "account_id", "token", unique=True),
)
