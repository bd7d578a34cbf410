"""Read-only queries of sessions: one, the recent list, the active list, id-cursor pages.

Each takes the user id and returns sessions in the wire shape of :func:`.tables.session_json`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from happy_socket import Database

from .tables import session_json, sessions

Session = dict[str, Any]


async def one(db: Database, user_id: str, session_id: str) -> Session | None:
    """One session of the user, or None."""
    t = sessions
    row = await db.fetch_one(sa.select(t).where(t.c.id == session_id, t.c.account_id == user_id))
    return None if row is None else session_json(row)


async def recent(db: Database, user_id: str, limit: int) -> list[Session]:
    """The user's sessions, most recently updated first."""
    t = sessions
    rows = await db.fetch_all(
        sa.select(t)
        .where(t.c.account_id == user_id)
        .order_by(t.c.updated_at.desc(), t.c.id)
        .limit(max(0, limit))
    )
    return [session_json(r) for r in rows]


async def active(db: Database, user_id: str, since: int, limit: int) -> list[Session]:
    """The user's active sessions last seen after ``since``, most recently active first."""
    t = sessions
    rows = await db.fetch_all(
        sa.select(t)
        .where(t.c.account_id == user_id, t.c.active == sa.true(), t.c.last_active_at > since)
        .order_by(t.c.last_active_at.desc(), t.c.id)
        .limit(max(0, limit))
    )
    return [session_json(r) for r in rows]


async def by_id(
    db: Database, user_id: str, below: str | None, limit: int, changed_since: int | None
) -> tuple[list[Session], bool]:
    """The user's sessions by id descending: ids below ``below`` (when given), updated after
    ``changed_since`` (when given); at most ``limit``, and whether more follow."""
    t = sessions
    query = sa.select(t).where(t.c.account_id == user_id)
    if below:
        query = query.where(t.c.id < below)
    if changed_since is not None:
        query = query.where(t.c.updated_at > changed_since)
    rows = await db.fetch_all(query.order_by(t.c.id.desc()).limit(max(0, limit) + 1))
    return [session_json(r) for r in rows[:limit]], len(rows) > limit
