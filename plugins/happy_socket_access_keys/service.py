"""The ``access-keys`` service: the library API (docs/protocol.md) behind the socket, HTTP and CLI."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from happy_socket import App, Conflict, Database, NotFound, Row, Tx

from .tables import access_keys

SESSION_OR_MACHINE_NOT_FOUND = "Session or machine not found"
KEY_NOT_FOUND = "Access key not found"
KEY_EXISTS = "Access key already exists"
MAX_VERSION = 2**62


def serialize(row: Row) -> dict[str, Any]:
    """``{data, dataVersion, createdAt, updatedAt}``."""
    return {
        "data": row["data"],
        "dataVersion": int(row["data_version"]),
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }


class AccessKeysService:
    """Access keys of one user's (session, machine) pairs; every query is scoped by the user.

    Ownership of sessions and machines is asked of the ``sessions`` and ``machines``
    services (their public objects, never their tables).
    """

    def __init__(self, app: App) -> None:
        self._app = app
        self._listening = False
        app.accounts.add_delete_listener(self._account_deleted)

    @property
    def _db(self) -> Database:
        return self._app.db

    def listen_for_session_deletes(self) -> None:
        """Delete a session's (a machine's) keys inside its delete unit (called at startup)."""
        if not self._listening:
            self._app.service("sessions").add_delete_listener(self._session_deleted)
            self._app.service("machines").add_delete_listener(self._machine_deleted)
            self._listening = True

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(access_keys.delete().where(access_keys.c.account_id == user_id))

    async def _session_deleted(self, tx: Tx, user_id: str, session_id: str) -> None:
        t = access_keys
        await tx.execute(t.delete().where(t.c.account_id == user_id, t.c.session_id == session_id))

    async def _machine_deleted(self, tx: Tx, user_id: str, machine_id: str) -> None:
        t = access_keys
        await tx.execute(t.delete().where(t.c.account_id == user_id, t.c.machine_id == machine_id))

    async def owns_pair(self, user_id: str, session_id: str, machine_id: str) -> bool:
        """True when both the session and the machine are ``user_id``'s."""
        sessions, machines = self._app.service("sessions"), self._app.service("machines")
        return bool(
            await sessions.owns(user_id, session_id) and await machines.owns(user_id, machine_id)
        )

    async def _require_pair(self, user_id: str, session_id: str, machine_id: str) -> None:
        if not await self.owns_pair(user_id, session_id, machine_id):
            raise NotFound(SESSION_OR_MACHINE_NOT_FOUND)

    async def get(
        self, user_id: str, session_id: str, machine_id: str, *, check_owner: bool = True
    ) -> dict[str, Any] | None:
        """The key as ``{data, dataVersion, createdAt, updatedAt}``, or None.

        Raises NotFound("Session or machine not found") unless the user owns both.
        """
        if check_owner:
            await self._require_pair(user_id, session_id, machine_id)
        row = await self._db.fetch_one(_select(user_id, session_id, machine_id))
        return None if row is None else serialize(row)

    async def create(
        self, user_id: str, session_id: str, machine_id: str, data: str
    ) -> dict[str, Any]:
        """Create the key at version 1; NotFound for a foreign pair, Conflict if it exists."""
        await self._require_pair(user_id, session_id, machine_id)
        now = self._app.clock()
        stmt = (
            self._db.insert(access_keys)
            .values(
                account_id=user_id,
                machine_id=machine_id,
                session_id=session_id,
                data=data,
                data_version=1,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "machine_id", "session_id"])
            .returning(*access_keys.c)
        )

        async def unit(tx: Tx) -> Row | None:
            await self._app.accounts.require(user_id, tx)
            return await tx.fetch_one(stmt)

        row = await self._db.write(unit)
        if row is None:
            raise Conflict(KEY_EXISTS)
        return serialize(row)

    async def update(
        self,
        user_id: str,
        session_id: str,
        machine_id: str,
        data: str,
        expected_version: int,
    ) -> dict[str, Any]:
        """Compare-and-set: ``{success: true, version}`` or the version-mismatch shape.

        One conditional UPDATE; on a miss the current row is read in the same unit.
        Raises NotFound("Access key not found").
        """
        t = access_keys
        stmt = (
            t.update()
            .where(
                t.c.account_id == user_id,
                t.c.session_id == session_id,
                t.c.machine_id == machine_id,
                t.c.data_version == expected_version,
            )
            .values(data=data, data_version=t.c.data_version + 1, updated_at=self._app.clock())
            .returning(t.c.data_version)
        )
        possible = 0 <= expected_version < MAX_VERSION

        async def unit(tx: Tx) -> dict[str, Any] | None:
            version = await tx.fetch_val(stmt) if possible else None
            if version is not None:
                return {"success": True, "version": int(version)}
            current = await tx.fetch_one(_select(user_id, session_id, machine_id))
            if current is None:
                return None
            return {
                "success": False,
                "error": "version-mismatch",
                "currentVersion": int(current["data_version"]),
                "currentData": current["data"],
            }

        result = await self._db.write(unit)
        if result is None:
            raise NotFound(KEY_NOT_FOUND)
        return result


def _select(user_id: str, session_id: str, machine_id: str) -> sa.Select[Any]:
    t = access_keys
    return sa.select(t).where(
        t.c.account_id == user_id, t.c.session_id == session_id, t.c.machine_id == machine_id
    )
