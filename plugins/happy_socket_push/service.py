"""The push-token service: which Expo push tokens each account registered.

Published as ``app.service(PushTokens)`` so that a delivery plugin can read them; this server
stores tokens and never sends a push itself. Every query is scoped by the user id.
"""

from __future__ import annotations

import attrs
import sqlalchemy as sa

from happy_socket import App, Row, Tx, new_id

from .tables import push_tokens

MAX_TOKENS_PER_ACCOUNT = 100  # past it, the least recently registered tokens are dropped


@attrs.frozen
class PushToken:
    """A registered token; ``updated_at`` is its last registration (ms)."""

    id: str
    token: str
    created_at: int
    updated_at: int

    def json(self) -> dict[str, object]:
        """``{id, token, createdAt, updatedAt}``."""
        return {
            "id": self.id,
            "token": self.token,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


def _token(row: Row) -> PushToken:
    return PushToken(
        str(row["id"]), str(row["token"]), int(row["created_at"]), int(row["updated_at"])
    )


class PushTokens:
    """Registers, lists and removes users' push tokens."""

    def __init__(self, app: App) -> None:
        self._app = app
        app.accounts.add_delete_listener(self._account_deleted)
        t = push_tokens
        insert = app.db.insert(t).values(
            id=_bp("b_id"),
            account_id=_bp("b_uid"),
            token=_bp("b_token"),
            created_at=_bp("b_now", type_=sa.BigInteger),
            updated_at=_bp("b_now", type_=sa.BigInteger),
        )
        self._upsert = insert.on_conflict_do_update(
            index_elements=["account_id", "token"], set_={"updated_at": insert.excluded.updated_at}
        )

    async def register(self, user_id: str, token: str) -> None:
        """Add ``token`` or bump its ``updatedAt``; keep at most ``MAX_TOKENS_PER_ACCOUNT``.

        Raises AccountMissing (nothing stored) when the user has no account.
        """
        values = {"b_id": new_id(), "b_uid": user_id, "b_token": token, "b_now": self._app.clock()}

        async def unit(tx: Tx) -> None:
            await self._app.accounts.require(user_id, tx)
            await tx.execute(self._upsert, values)
            await tx.execute(_TRIM, {"b_uid": user_id, "b_keep": MAX_TOKENS_PER_ACCOUNT})

        await self._app.db.write(unit)

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(push_tokens.delete().where(_MINE), {"b_uid": user_id})

    async def tokens(self, user_id: str) -> list[PushToken]:
        """The user's tokens, newest ``createdAt`` first."""
        return [_token(row) for row in await self._app.db.fetch_all(_LIST, {"b_uid": user_id})]

    async def remove(self, user_id: str, token: str) -> bool:
        """Forget the user's ``token``; False when it was not registered."""
        removed = await self._app.db.write(
            lambda tx: tx.fetch_val(_DELETE, {"b_uid": user_id, "b_token": token})
        )
        return removed is not None


# Statements built once, with bind parameters.
_bp = sa.bindparam
_t = push_tokens
_MINE = _t.c.account_id == _bp("b_uid")
_LIST = sa.select(_t).where(_MINE).order_by(_t.c.created_at.desc(), _t.c.id.desc())
_DELETE = _t.delete().where(_MINE, _t.c.token == _bp("b_token")).returning(_t.c.id)
# everything but the MAX_TOKENS_PER_ACCOUNT most recently registered tokens of the user
_KEEP = (
    sa.select(_t.c.id)
    .where(_MINE)
    .order_by(_t.c.updated_at.desc(), _t.c.id.desc())
    .limit(_bp("b_keep", type_=sa.Integer))
)
_TRIM = _t.delete().where(_MINE, _t.c.id.not_in(_KEEP.scalar_subquery()))
