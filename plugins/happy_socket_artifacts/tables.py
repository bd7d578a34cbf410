"""The ``artifacts`` table: one row per artifact, ids unique across all users."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

artifacts = sa.Table(
    "artifacts",
    metadata,
    # Primary key on the id alone: an id belongs to exactly one account, so a second
    # account's create with the same id is refused instead of silently coexisting.
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("header", sa.LargeBinary, nullable=False),
    sa.Column("header_version", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("body_version", sa.BigInteger, nullable=False),
    sa.Column("data_encryption_key", sa.LargeBinary, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_artifacts_account_updated", "account_id", "updated_at"),
)
