"""The ``accounts`` service: login keys, profile, settings and link requests of accounts.

Login keys live in the core's ``accounts`` table: its nullable, unique ``public_key`` column
(standard base64 of the Ed25519 key) is reserved for this plugin; the core never reads it.
Databases written before the plugin existed keep working unchanged.
"""

from __future__ import annotations

import base64
from typing import Any

import sqlalchemy as sa

from happy_socket import App, Tx, UserScopedOnly, VersionMismatch, new_id
from happy_socket.storage import accounts

from .links import LinkRequests
from .tables import account_requests, account_settings, terminal_requests

MAX_VERSION = 2**62  # larger expected versions never match (and must not overflow BIGINT)

# the settings compare-and-set, built once (``Accounts.compare_and_set`` compiles it once)
_s = account_settings
_bp = sa.bindparam
_SETTINGS_CURRENT = sa.select(_s.c.settings, _s.c.settings_version).where(
    _s.c.account_id == _bp("b_uid")
)
_SETTINGS_UPDATE = (
    _s.update()
    .where(
        _s.c.account_id == _bp("b_uid"),
        _s.c.settings_version == _bp("b_expected", type_=sa.BigInteger),
    )
    .values(
        settings=_bp("b_settings", type_=sa.Text),
        settings_version=_s.c.settings_version + 1,
        updated_at=_bp("b_now", type_=sa.BigInteger),
    )
    .returning(_s.c.settings_version, _s.c.settings)
)


class AccountsService:
    """Accounts as the happy clients see them; every query is scoped by the account id."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.terminal_links = LinkRequests(app, terminal_requests)
        self.account_links = LinkRequests(app, account_requests)
        app.accounts.add_delete_listener(self._account_deleted)

    async def delete_account(self, user_id: str) -> bool:
        """Delete the account and everything of it; revoke its tokens and sockets everywhere.

        The account row goes first (from then on every write of the user fails), then, in one
        unit, every plugin's rows of the user (its delete listener: sessions and messages,
        machines, artifacts, access keys, usage reports, KV entries, push tokens, settings,
        link requests it approved). Then this process forgets the account and closes its
        sockets, and with Redis every process does the same at once (without Redis, the
        others within ``Accounts.known_ttl_ms``). False when there was no such account (its
        leftovers, if any, are deleted all the same).
        """
        existed = await self._app.accounts.delete(user_id)
        await self._app.revocation.revoke(user_id)
        return existed

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(account_settings.delete().where(account_settings.c.account_id == user_id))
        await self.terminal_links.forget_account(tx, user_id)
        await self.account_links.forget_account(tx, user_id)

    async def for_public_key(self, public_key: bytes) -> str:
        """The account whose Ed25519 login key is ``public_key``, created on first use."""
        key = base64.b64encode(public_key).decode()
        db = self._app.db

        async def unit(tx: Tx) -> str:
            now = self._app.clock()
            stmt = db.insert(accounts).values(
                id=new_id(), seq=0, public_key=key, created_at=now, updated_at=now
            )
            await tx.execute(stmt.on_conflict_do_nothing(index_elements=["public_key"]))
            user_id = await tx.fetch_val(
                sa.select(accounts.c.id).where(accounts.c.public_key == key)
            )
            return str(user_id)

        return await db.write(unit)

    def profile(self, user_id: str) -> dict[str, Any]:
        """The profile of a self-hosted account: its id and nothing else known."""
        return {
            "id": user_id,
            "timestamp": self._app.clock(),
            "firstName": None,
            "lastName": None,
            "username": None,
            "avatar": None,
            "github": None,
            "connectedServices": [],
        }

    async def settings(self, user_id: str) -> dict[str, Any]:
        """``{settings, settingsVersion}``: null and 0 until the first write."""
        row = await self._app.db.fetch_one(_SETTINGS_CURRENT, {"b_uid": user_id})
        if row is None:
            return {"settings": None, "settingsVersion": 0}
        return {"settings": row["settings"], "settingsVersion": int(row["settings_version"])}

    async def set_settings(
        self, user_id: str, settings: str | None, expected_version: int
    ) -> dict[str, Any]:
        """Compare-and-set the settings; emits ``update-account`` to the user's app sockets.

        Returns ``{success: true, version}``; raises VersionMismatch carrying
        ``currentVersion`` and ``currentSettings`` when ``expected_version`` is not the
        stored one.
        """
        app = self._app
        now = app.clock()
        values = {
            "b_uid": user_id,
            "b_expected": expected_version if expected_version < MAX_VERSION else -1,
            "b_settings": settings,
            "b_now": now,
        }
        cas = app.accounts.compare_and_set
        result = await cas(user_id, _SETTINGS_UPDATE, _SETTINGS_CURRENT, values, now)
        if result.is_missing or (
            result.is_mismatch and result.current["settings_version"] == expected_version
        ):
            # the account's first write (or a racing first write created the row between the
            # update and the re-read): create the row at version 0 and try once more; with the
            # row in place a mismatch always reports another version (versions only grow)
            await self._create_settings_row(user_id, now)
            result = await cas(user_id, _SETTINGS_UPDATE, _SETTINGS_CURRENT, values, now)
        row = result.current
        version = int(row["settings_version"])
        if not result.is_changed:
            raise VersionMismatch(currentVersion=version, currentSettings=row["settings"])
        assert result.seq is not None
        body = {
            "t": "update-account",
            "id": user_id,
            "settings": {"value": row["settings"], "version": version},
        }
        await app.router.send_update(user_id, result.seq, body, UserScopedOnly())
        return {"success": True, "version": version}

    async def _create_settings_row(self, user_id: str, now: int) -> None:
        stmt = (
            self._app.db.insert(account_settings)
            .values(account_id=user_id, settings=None, settings_version=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["account_id"])
        )

        async def unit(tx: Tx) -> None:
            await self._app.accounts.require(user_id, tx)  # no settings row without an account
            await tx.execute(stmt)

        await self._app.db.write(unit)

    async def prune(self) -> None:
        """Delete expired link requests."""
        await self.terminal_links.prune()
        await self.account_links.prune()
