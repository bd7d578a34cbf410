"""Accounts and the per-user update seq (docs/protocol.md): the core's own storage.

An account is created only on purpose (:meth:`Accounts.ensure`, or the accounts plugin's
login); a write never creates one. Every seq allocation is an ``UPDATE ... RETURNING`` of the
account row, so a unit of work whose user has no account row raises :class:`AccountMissing`
(an ``Unauthorized``) and rolls back whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import sqlalchemy as sa

from ..context import now_ms
from ..errors import Unauthorized
from .database import Database, Tx
from .results import CasResult

log = logging.getLogger("happy_socket.storage")

metadata = sa.MetaData()

_USER_SEQ = "happy_socket_user_seq"  # the seq's label in one-statement compare-and-sets
_GUARD = "happy_socket_account_guard"
#: SQLSTATE of the guard that aborts a one-statement write whose user has no account row
#: (``sqrt`` of a negative number; the duplicate-localId guard of messages divides by zero)
ACCOUNT_MISSING_SQLSTATE = "2201F"
#: how long a positive :meth:`Accounts.exists` answer is trusted without asking the database
KNOWN_TTL_MS = 15_000
KNOWN_MAX = 100_000
LOOKUP_CHUNK = 500

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    # the Ed25519 login key (standard base64), set and read only by the accounts plugin
    sa.Column("public_key", sa.String(200), nullable=True, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

AccountDeleteListener = Callable[[Tx, str], Awaitable[None]]

_bp = sa.bindparam
_ID = accounts.c.id == _bp("user_id", type_=sa.String)
# built once: the hottest statements of the server (every update allocates a seq)
_NEXT_SEQ = accounts.update().where(_ID).values(seq=accounts.c.seq + 1).returning(accounts.c.seq)
_NEXT_SEQS = (
    accounts.update()
    .where(_ID)
    .values(seq=accounts.c.seq + _bp("count", type_=sa.BigInteger))
    .returning(accounts.c.seq)
)
_EXISTS = sa.select(accounts.c.id).where(_ID)
_DELETE = accounts.delete().where(_ID).returning(accounts.c.id)


class AccountMissing(Unauthorized):
    """The user has no account row (deleted, or never created): the write is refused whole.

    Answered like a refused token: HTTP 401 ``{"error": "Invalid token"}``, a socket event's
    envelope error ``Invalid token``.
    """

    default_message = "Invalid token"


def is_account_missing(exc: BaseException) -> bool:
    """True when ``exc`` is the guard of a one-statement write whose account row is missing."""
    return getattr(exc, "sqlstate", None) == ACCOUNT_MISSING_SQLSTATE


class Accounts:
    """Creates and deletes accounts, answers whether one exists, allocates update seqs."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.known_ttl_ms = KNOWN_TTL_MS
        self._known: dict[str, int] = {}  # user -> until when a positive answer holds (ms)
        self._forgets = 0  # bumped by forget(): a lookup in flight then caches nothing
        self._pending: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._delete_listeners: list[AccountDeleteListener] = []
        self._one_statement_cas: dict[Any, Any] = {}  # update statement -> PostgreSQL statement
        # writes that allocate no seq take a share lock on the account row (PostgreSQL), so a
        # delete waits for them and then sees their rows
        self._hold = _EXISTS if db.is_sqlite else _EXISTS.with_for_update(read=True, key_share=True)

    # -- the positive cache ----------------------------------------------------

    def _remember(self, user_id: str) -> None:
        if user_id not in self._known and len(self._known) >= KNOWN_MAX:
            now = now_ms()
            self._known = {u: t for u, t in self._known.items() if t > now}
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
        self._known[user_id] = now_ms() + self.known_ttl_ms

    def is_known(self, user_id: str) -> bool:
        """True while a positive answer for ``user_id`` is fresh (no database needed)."""
        until = self._known.get(user_id)
        return until is not None and until > now_ms()

    def forget(self, user_id: str | None = None) -> None:
        """Drop the cached answer of ``user_id`` (of every user when None).

        The next handshake or request of the user asks the database again.
        """
        self._forgets += 1
        if user_id is None:
            self._known.clear()
            self._pending.clear()
            return
        self._known.pop(user_id, None)
        for kind in ("exists", "ensure"):
            self._pending.pop((kind, user_id), None)

    async def _shared(self, kind: str, user_id: str, query: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``query`` once for all concurrent callers of (``kind``, ``user_id``).

        A reconnect storm of many sockets of one user would otherwise read the same row once
        per socket. A True answer is cached unless :meth:`forget` ran meanwhile.
        """
        key = (kind, user_id)
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        forgets = self._forgets
        try:
            found = await query()
            if found and forgets == self._forgets:
                self._remember(user_id)
            future.set_result(found)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) get it too
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
        return found

    # -- accounts --------------------------------------------------------------

    async def ensure(self, user_id: str) -> None:
        """Create the account ``user_id`` unless it exists (cached like :meth:`exists`)."""
        if self.is_known(user_id):
            return

        async def create() -> bool:
            now = now_ms()
            stmt = self._db.insert(accounts).values(
                id=user_id, seq=0, created_at=now, updated_at=now
            )
            await self._db.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
            return True

        try:
            await self._shared("ensure", user_id, create)
        except Exception:
            if user_id not in self._known:  # not seen recently: the error stands
                raise
            log.info("creating account %s failed; it was seen recently, accepted", user_id)

    async def exists(self, user_id: str) -> bool:
        """True when the account exists.

        A True answer is trusted for ``known_ttl_ms`` (15 s) without a query; concurrent
        lookups of one user share one query. When the database cannot answer, a user whose
        answer merely expired (not :meth:`forget`-ten) is still taken as existing.
        """
        if self.is_known(user_id):
            return True

        async def lookup() -> bool:
            return await self._db.fetch_one(_EXISTS, {"user_id": user_id}) is not None

        try:
            return await self._shared("exists", user_id, lookup)
        except Exception:
            if user_id in self._known:
                log.info("account check failed; %s was seen recently, accepted", user_id)
                return True
            raise

    async def existing(self, user_ids: Collection[str]) -> set[str]:
        """Which of ``user_ids`` have an account row (one query per 500 ids).

        The positive answers are cached afresh (unless :meth:`forget` ran meanwhile).
        """
        ids = list(user_ids)
        found: set[str] = set()
        forgets = self._forgets
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start : start + LOOKUP_CHUNK]
            rows = await self._db.fetch_all(
                sa.select(accounts.c.id).where(accounts.c.id.in_(chunk))
            )
            found.update(str(row["id"]) for row in rows)
        if forgets == self._forgets:
            for user_id in found:
                self._remember(user_id)
        return found

    async def require(self, user_id: str, tx: Tx) -> None:
        """Inside a unit: raise :class:`AccountMissing` unless the account row exists.

        For writes that allocate no seq: on PostgreSQL the row is share-locked until the
        unit commits, so a concurrent :meth:`delete` waits for the unit and then sees its rows.
        """
        if await tx.fetch_one(self._hold, {"user_id": user_id}) is None:
            raise AccountMissing()

    def add_delete_listener(self, fn: AccountDeleteListener) -> None:
        """Call ``await fn(tx, user_id)`` in the unit that deletes an account's data.

        Each plugin deletes its own rows of the user there (it never reads another's tables).
        """
        self._delete_listeners.append(fn)

    async def delete(self, user_id: str) -> bool:
        """Delete the account row, then (one more unit) every listener's rows of the user.

        The row goes first, alone: from that commit on every write of the user fails (no seq,
        no lock), so the second unit sees everything that ever committed and nothing can be
        added behind it. The second unit also runs when the row was already gone (a delete
        that was interrupted is finished by running it again). False when there was no row.
        Tokens are refused by this process at once; see ``happy_socket.revocation`` for the
        others.
        """
        deleted = await self._db.write(lambda tx: tx.fetch_val(_DELETE, {"user_id": user_id}))
        self.forget(user_id)

        async def dependants(tx: Tx) -> None:
            for listener in self._delete_listeners:
                await listener(tx, user_id)

        await self._db.write(dependants)
        self.forget(user_id)
        return deleted is not None

    # -- update seqs -------------------------------------------------------------

    @staticmethod
    def seq_values(user_id: str, now: int | None = None) -> dict[str, Any]:
        """The bind values of the seq statements (``next_seq``, ``next_seq_after``)."""
        return {"user_id": user_id}

    async def next_seq(self, user_id: str, tx: Tx | None = None) -> int:
        """Allocate the user's next update seq (one ``UPDATE ... RETURNING``).

        Raises :class:`AccountMissing` (the unit rolls back) when the user has no account.
        """
        values = self.seq_values(user_id)
        if tx is not None:
            seq = await tx.fetch_val(_NEXT_SEQ, values)
        else:
            seq = await self._db.write(lambda t: t.fetch_val(_NEXT_SEQ, values))
        if seq is None:
            raise AccountMissing()
        return int(seq)

    async def next_seqs(self, user_id: str, count: int, tx: Tx) -> list[int]:
        """Allocate ``count`` consecutive update seqs of the user in one statement.

        Raises :class:`AccountMissing` (the unit rolls back) when the user has no account.
        """
        if count < 1:
            return []
        last = await tx.fetch_val(_NEXT_SEQS, {**self.seq_values(user_id), "count": count})
        if last is None:
            raise AccountMissing()
        return list(range(int(last) - count + 1, int(last) + 1))

    def next_seq_after(self, change: sa.CTE) -> sa.CTE:
        """A CTE that allocates the user's next update seq only if ``change`` returned a row.

        For one-statement writes on PostgreSQL (SQLite has no data-modifying CTEs): put
        ``change`` (an INSERT/UPDATE ... RETURNING as a CTE) and this CTE in one statement and
        run it with :meth:`Database.write_one`; the change and the seq then commit together.
        Bind :meth:`seq_values`; the CTE's column is ``seq``. It never creates the account:
        add :meth:`account_guard` to the statement so that a change without a seq (no account
        row) aborts the whole statement.
        """
        return (
            accounts.update()
            .where(_ID, sa.exists(change.select()))
            .values(seq=accounts.c.seq + 1)
            .returning(accounts.c.seq)
            .cte("user_seq")
        )

    @staticmethod
    def account_guard(change: sa.CTE, user_seq: sa.CTE) -> sa.ColumnElement[Any]:
        """A column that aborts the statement when ``change`` ran but ``user_seq`` did not.

        That happens only when the account row is missing; the error's SQLSTATE is
        ``ACCOUNT_MISSING_SQLSTATE`` (test it with :func:`is_account_missing`).
        """
        missing = sa.and_(sa.exists(change.select()), ~sa.exists(user_seq.select()))
        return sa.func.sqrt(sa.case((missing, -1.0), else_=1.0)).label(_GUARD)

    async def compare_and_set(
        self, user_id: str, update: Any, current: Any, values: dict[str, Any], now: int
    ) -> CasResult:
        """Run a compare-and-set and allocate the user's update seq in the same commit.

        ``update`` is an ``UPDATE ... WHERE <owned by the user and versions match> RETURNING
        <columns>`` (its first returned column never NULL), ``current`` a ``SELECT ... WHERE
        <owned>``; both take their bind parameters from ``values``. Build them once (module
        constants): on PostgreSQL the matching case is one statement (the update and the seq as
        data-modifying CTEs, compiled once per ``update``), on SQLite one unit on the writer.

        Returns CHANGED with the returned row and the user seq when the update matched,
        MISMATCH with the ``current`` row read after the failed attempt when it did not,
        MISSING when the user has no such row. Raises :class:`AccountMissing` (nothing
        written) when the user has no account.
        """
        if self._db.is_sqlite:

            async def unit(tx: Tx) -> CasResult:
                changed = await tx.fetch_one(update, values)
                if changed is not None:
                    return CasResult.changed(changed, await self.next_seq(user_id, tx))
                row = await tx.fetch_one(current, values)
                return CasResult.missing() if row is None else CasResult.mismatch(row)

            return await self._db.write(unit)
        statement = self._one_statement_cas.get(update)
        if statement is None:
            change = update.cte("change")
            user_seq = self.next_seq_after(change)
            statement = self._one_statement_cas[update] = sa.select(
                *(sa.select(c).scalar_subquery().label(c.name) for c in change.c),
                sa.select(user_seq.c.seq).scalar_subquery().label(_USER_SEQ),
                self.account_guard(change, user_seq),
            )
        try:
            row = await self._db.write_one(statement, {**values, **self.seq_values(user_id)})
        except Exception as exc:
            if is_account_missing(exc):
                raise AccountMissing() from None
            raise
        if row is not None and next(iter(row.values())) is not None:
            seq = int(row.pop(_USER_SEQ))
            row.pop(_GUARD, None)
            return CasResult.changed(row, seq)
        now_row = await self._db.fetch_one(current, values)
        return CasResult.missing() if now_row is None else CasResult.mismatch(now_row)
