"""Usage report storage: one atomic upsert per report."""

from __future__ import annotations

import json
from typing import Any

import attrs

from happy_socket import App, Tx, new_id

from .tables import NO_SESSION, usage_reports

CONFLICT_TARGET = ["account_id", "session_id", "key"]


@attrs.frozen
class SavedReport:
    """What the ack reports."""

    id: str
    created_at: int
    updated_at: int


class UsageService:
    """Stores usage reports; a session's reports are deleted with the session."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._listening = False
        app.accounts.add_delete_listener(self._account_deleted)

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(usage_reports.delete().where(usage_reports.c.account_id == user_id))

    def listen_for_session_deletes(self) -> None:
        """Register with the ``sessions`` service (called at startup)."""
        if not self._listening:
            self._app.service("sessions").add_delete_listener(self._session_deleted)
            self._listening = True

    async def _session_deleted(self, tx: Tx, user_id: str, session_id: str) -> None:
        t = usage_reports
        await tx.execute(t.delete().where(t.c.account_id == user_id, t.c.session_id == session_id))

    async def save(
        self,
        user_id: str,
        session_id: str | None,
        key: str,
        tokens: dict[str, Any],
        cost: dict[str, Any],
    ) -> SavedReport:
        """Insert or replace the report keyed by (user, session-or-none, key).

        Raises AccountMissing (nothing stored) when the user has no account.
        """
        t = usage_reports
        now = self._app.clock()
        data = json.dumps({"tokens": tokens, "cost": cost}, separators=(",", ":"))
        insert = self._app.db.insert(t).values(
            id=new_id(),
            account_id=user_id,
            session_id=session_id or NO_SESSION,
            key=key,
            data=data,
            created_at=now,
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=CONFLICT_TARGET,
            set_={"data": insert.excluded.data, "updated_at": insert.excluded.updated_at},
        ).returning(t.c.id, t.c.created_at, t.c.updated_at)

        async def unit(tx: Tx) -> Any:
            await self._app.accounts.require(user_id, tx)  # never a report of no account
            return await tx.fetch_one(stmt)

        row = await self._app.db.write(unit)
        assert row is not None  # an upsert always returns its row
        return SavedReport(str(row["id"]), int(row["created_at"]), int(row["updated_at"]))
