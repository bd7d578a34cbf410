"""The accounts plugin's tables: login replays, link requests, account settings.

The account rows themselves (and their Ed25519 login key, ``accounts.public_key``) are the
core's ``accounts`` table; see :mod:`.service`.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# (public key, challenge, signature) triples accepted by POST /v1/auth, as SHA-256 hex digests
auth_replays = sa.Table(
    "auth_replays",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("seen_at", sa.BigInteger, nullable=False, index=True),
)


def _link_requests(name: str, *extra: sa.Column[bool]) -> sa.Table:
    """A link request table: one row per requester key (hex of its 32 bytes)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("public_key", sa.String(64), primary_key=True),
        *extra,
        sa.Column("response", sa.Text, nullable=True),  # null until approved
        sa.Column("response_account_id", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("answered_at", sa.BigInteger, nullable=True),
        # rows at or past this time are ignored by every read and deleted by the prune task
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )


terminal_requests = _link_requests(
    "auth_terminal_requests",
    sa.Column("supports_v2", sa.Boolean, nullable=False, server_default=sa.false()),
)
account_requests = _link_requests("auth_account_requests")

# the app's encrypted settings blob, one row per account (created by the first write)
account_settings = sa.Table(
    "account_settings",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("settings", sa.Text, nullable=True),
    sa.Column("settings_version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

TABLES = (auth_replays, terminal_requests, account_requests, account_settings)
