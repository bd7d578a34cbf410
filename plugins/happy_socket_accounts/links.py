"""Link requests: a new device (terminal or app) asks an approved device for the account.

One row per requester key. A poll creates the row (``requested``); the first approval stores
the opaque ``response`` and the approver's account (``authorized``); every later poll then
answers a fresh token for that account. Rows expire: ``REQUEST_TTL_MS`` after creation while
unanswered, ``ANSWERED_TTL_MS`` after the approval. Every read ignores expired rows, a poll
after expiry creates the row anew, and :meth:`LinkRequests.prune` deletes them.
"""

from __future__ import annotations

from typing import Any

import attrs
import sqlalchemy as sa

from happy_socket import App, NotFound, Row, Tx
from happy_socket.validation import decode_b64

REQUEST_TTL_MS = 10 * 60_000  # unanswered: the user has 10 minutes to scan and approve
ANSWERED_TTL_MS = 2 * 60_000  # answered: requesters poll every second, so 2 minutes is ample
KEY_BYTES = 32  # an X25519 box public key
MAX_KEY_CHARS = 256
REQUEST_NOT_FOUND = "Request not found"


def key_of(value: Any) -> str | None:
    """The hex of a 32-byte public key written in base64 or base64url (padded or not)."""
    decoded = decode_b64(value, max_length=MAX_KEY_CHARS, urlsafe=True)
    return decoded.hex() if decoded is not None and len(decoded) == KEY_BYTES else None


@attrs.frozen
class Link:
    """A live request: approved when ``account_id`` is set."""

    account_id: str | None
    response: str | None
    supports_v2: bool

    @property
    def authorized(self) -> bool:
        """True once an approval was stored."""
        return self.account_id is not None and self.response is not None

    @classmethod
    def of(cls, row: Row) -> Link:
        """The request of a table row."""
        return cls(row["response_account_id"], row["response"], bool(row.get("supports_v2")))


class LinkRequests:
    """The requests of one table (terminal or account links), keyed by the key's hex."""

    def __init__(self, app: App, table: sa.Table) -> None:
        self._app = app
        self._t = table
        self._terminal = "supports_v2" in table.c

    def _live(self, key: str, now: int) -> sa.Select[Any]:
        t = self._t
        return sa.select(t).where(t.c.public_key == key, t.c.expires_at > now)

    async def find(self, key: str) -> Link | None:
        """The live request of ``key``, or None."""
        row = await self._app.db.fetch_one(self._live(key, self._app.clock()))
        return None if row is None else Link.of(row)

    async def poll(self, key: str, *, supports_v2: bool = False) -> Link:
        """The live request of ``key``, created (``supports_v2`` kept) when there is none."""
        found = await self.find(key)
        if found is not None:
            return found
        now = self._app.clock()
        t = self._t
        fresh: dict[str, Any] = {
            "response": None,
            "response_account_id": None,
            "created_at": now,
            "answered_at": None,
            "expires_at": now + REQUEST_TTL_MS,
        }
        if self._terminal:
            fresh["supports_v2"] = supports_v2
        upsert = (
            self._app.db.insert(t)
            .values(public_key=key, **fresh)
            .on_conflict_do_update(
                index_elements=["public_key"], set_=fresh, where=t.c.expires_at <= now
            )
            .returning(*t.c)
        )

        async def unit(tx: Tx) -> Row:
            for _ in range(3):  # a live row may be pruned (expired) between the two statements
                row = await tx.fetch_one(upsert) or await tx.fetch_one(self._live(key, now))
                if row is not None:
                    return row
            raise RuntimeError("link request keeps vanishing")

        return Link.of(await self._app.db.write(unit))

    async def approve(self, key: str, user_id: str, response: str) -> bool:
        """Store the answer unless one is stored (first approval wins).

        True when this call stored it, False when the request was already answered;
        NotFound when there is no live request for ``key``.
        """
        now = self._app.clock()
        t = self._t
        answer = (
            t.update()
            .where(t.c.public_key == key, t.c.response.is_(None), t.c.expires_at > now)
            .values(
                response=response,
                response_account_id=user_id,
                answered_at=now,
                expires_at=now + ANSWERED_TTL_MS,
            )
            .returning(t.c.public_key)
        )

        async def unit(tx: Tx) -> bool | None:
            await self._app.accounts.require(user_id, tx)  # a deleted account approves nothing
            if await tx.fetch_val(answer) is not None:
                return True
            return False if await tx.fetch_one(self._live(key, now)) is not None else None

        stored = await self._app.db.write(unit)
        if stored is None:
            raise NotFound(REQUEST_NOT_FOUND)
        return stored

    async def forget_account(self, tx: Tx, user_id: str) -> None:
        """Inside an account's delete unit: drop the requests it approved."""
        t = self._t
        await tx.execute(t.delete().where(t.c.response_account_id == user_id))

    async def prune(self) -> None:
        """Delete the expired requests."""
        t = self._t
        await self._app.db.execute(t.delete().where(t.c.expires_at <= self._app.clock()))
