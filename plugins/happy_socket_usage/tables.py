"""The ``usage_reports`` table: one row per (user, session-or-none, key).

"No session" is stored as the empty string, never NULL: a unique index treats NULLs
as distinct on SQLite and (by default) on PostgreSQL, so a NULL session column would let
two session-less reports with the same key in. Session ids are never empty (an empty
``sessionId`` is treated as "no session"), so ``""`` cannot collide with a real session,
and the same plain unique index and ``ON CONFLICT`` target work on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

NO_SESSION = ""

usage_reports = sa.Table(
    "usage_reports",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("session_id", sa.Text, nullable=False, server_default=NO_SESSION),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON {"tokens": {...}, "cost": {...}}
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index(
        "ux_usage_reports_account_session_key", "account_id", "session_id", "key", unique=True
    ),
    # POST /v1/usage/query pages through a user's reports by creation time
    sa.Index("ix_usage_reports_account_created", "account_id", "created_at", "id"),
)
