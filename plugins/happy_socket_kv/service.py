"""The KV service: per-user versioned byte values, all-or-nothing batch mutations.

Published as ``app.service(KvService)``. Every query is scoped by the user id.

A batch is one atomic unit of conditional writes, applied in key order (so two batches on
PostgreSQL lock rows in the same order and cannot deadlock): ``INSERT ... ON CONFLICT DO
NOTHING`` for version -1, ``UPDATE ... WHERE version = expected`` otherwise. Any write that
changes no row is a mismatch; after the last one, a mismatch rolls the whole unit back and the
current values of every mismatched key are read and reported. Of concurrent batches expecting
the same version of a key exactly one wins.
"""

from __future__ import annotations

import base64
import builtins
from collections.abc import Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from happy_socket import App, HandlerError, InvalidParams, Row, Tx, UserScopedOnly

from .tables import kv_entries

MAX_KEYS_PER_ACCOUNT = 10_000  # rows, tombstones included
ABSENT = -1


@attrs.frozen
class Entry:
    """A live key: its value and version."""

    key: str
    value: bytes
    version: int

    def json(self) -> dict[str, Any]:
        """``{key, value: b64, version}``."""
        return {"key": self.key, "value": _b64(self.value), "version": self.version}


@attrs.frozen
class Mutation:
    """Set ``key`` to ``value`` (None: delete, leaving a tombstone) if it is at ``version``."""

    key: str
    value: bytes | None
    version: int  # ABSENT (-1) for a key that does not exist


class KvConflict(HandlerError):
    """Some expected versions did not match: 409 ``{"success": false, "errors": [...]}``."""

    status = 409

    def __init__(self, errors: builtins.list[dict[str, Any]]) -> None:
        super().__init__("version-mismatch", errors=errors)
        self.errors = errors

    def http_body(self) -> dict[str, Any]:
        """Every mismatch: ``{key, error: "version-mismatch", version, value}``."""
        return {"success": False, "errors": self.errors}


class _Mismatch(Exception):
    """Raised inside the unit to roll it back; carries the keys that did not match."""

    def __init__(self, keys: builtins.list[str]) -> None:
        super().__init__(keys)
        self.keys = keys


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


def _entry(row: Row) -> Entry:
    return Entry(str(row["key"]), bytes(row["value"]), int(row["version"]))


class KvService:
    """Reads and writes users' KV entries and announces every committed batch."""

    def __init__(self, app: App) -> None:
        self._app = app
        app.accounts.add_delete_listener(self._account_deleted)
        t = kv_entries
        self._insert = (
            app.db.insert(t)
            .values(
                account_id=_bp("b_uid"),
                key=_bp("b_key"),
                value=_bp("b_value", type_=sa.LargeBinary),
                version=0,
                created_at=_bp("b_now", type_=sa.BigInteger),
                updated_at=_bp("b_now", type_=sa.BigInteger),
            )
            .on_conflict_do_nothing(index_elements=["account_id", "key"])
            .returning(t.c.version)
        )
        # byte (code point) order on both databases, whatever PostgreSQL's default collation
        order = t.c.key if app.db.is_sqlite else t.c.key.collate("C")
        self._list = (
            sa.select(t.c.key, t.c.value, t.c.version)
            .where(t.c.account_id == _bp("b_uid"), t.c.value.is_not(None))
            .order_by(order)
            .limit(_bp("b_limit", type_=sa.Integer))
        )
        self._list_prefix = self._list.where(
            sa.func.substr(t.c.key, 1, _bp("b_len", type_=sa.Integer)) == _bp("b_prefix")
        )

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(kv_entries.delete().where(kv_entries.c.account_id == user_id))

    async def get(self, user_id: str, key: str) -> Entry | None:
        """The live entry ``key``, or None (absent or deleted)."""
        row = await self._app.db.fetch_one(_GET, {"b_uid": user_id, "b_key": key})
        return None if row is None or row["value"] is None else _entry(row)

    async def list(self, user_id: str, prefix: str, limit: int) -> builtins.list[Entry]:
        """Live entries whose key starts with ``prefix``, key ascending, at most ``limit``."""
        values: dict[str, Any] = {"b_uid": user_id, "b_limit": limit}
        statement = self._list
        if prefix:
            statement = self._list_prefix
            values.update(b_prefix=prefix, b_len=len(prefix))
        return [_entry(row) for row in await self._app.db.fetch_all(statement, values)]

    async def bulk(self, user_id: str, keys: Sequence[str]) -> builtins.list[Entry]:
        """The live entries among ``keys``, in the order of ``keys`` (each once)."""
        t = kv_entries
        wanted = list(dict.fromkeys(keys))
        rows = await self._app.db.fetch_all(
            sa.select(t.c.key, t.c.value, t.c.version).where(
                t.c.account_id == user_id, t.c.key.in_(wanted), t.c.value.is_not(None)
            )
        )
        found = {row["key"]: _entry(row) for row in rows}
        return [found[key] for key in wanted if key in found]

    async def mutate(
        self, user_id: str, mutations: Sequence[Mutation]
    ) -> builtins.list[dict[str, Any]]:
        """Apply every mutation or none; ``[{key, version}]`` in the given order.

        After the commit, one ``kv-batch-update`` goes to ``user-scoped-only``. Raises
        KvConflict listing every mismatched key with its current version (-1 when absent)
        and value (None when absent or deleted); InvalidParams for duplicate keys or when
        new keys would take the account past ``MAX_KEYS_PER_ACCOUNT``.
        """
        if len({m.key for m in mutations}) != len(mutations):
            raise InvalidParams("Duplicate keys in mutations")
        now = self._app.clock()
        creates = sum(1 for m in mutations if m.version == ABSENT)

        async def unit(tx: Tx) -> tuple[dict[str, int], int]:
            if creates:
                count = await tx.fetch_val(_COUNT, {"b_uid": user_id})
                if int(count) + creates > MAX_KEYS_PER_ACCOUNT:
                    raise InvalidParams(f"At most {MAX_KEYS_PER_ACCOUNT} keys per account")
            versions: dict[str, int] = {}
            failed: builtins.list[str] = []
            for m in sorted(mutations, key=lambda m: m.key):
                values = {"b_uid": user_id, "b_key": m.key, "b_value": m.value, "b_now": now}
                if m.version == ABSENT:
                    version = await tx.fetch_val(self._insert, values)
                else:
                    version = await tx.fetch_val(_UPDATE, {**values, "b_expected": m.version})
                if version is None:
                    failed.append(m.key)
                else:
                    versions[m.key] = int(version)
            if failed:
                raise _Mismatch(failed)
            return versions, await self._app.accounts.next_seq(user_id, tx)

        try:
            versions, seq = await self._app.db.write(unit)
        except _Mismatch as exc:
            raise KvConflict(await self._mismatches(user_id, exc.keys, mutations)) from None
        changes = [
            {"key": m.key, "value": _b64(m.value), "version": versions[m.key]} for m in mutations
        ]
        await self._app.router.send_update(
            user_id, seq, {"t": "kv-batch-update", "changes": changes}, UserScopedOnly()
        )
        return [{"key": m.key, "version": versions[m.key]} for m in mutations]

    async def _mismatches(
        self, user_id: str, keys: builtins.list[str], mutations: Sequence[Mutation]
    ) -> builtins.list[dict[str, Any]]:
        """The current version and value of each mismatched key, in the given order."""
        t = kv_entries
        rows = await self._app.db.fetch_all(
            sa.select(t.c.key, t.c.value, t.c.version).where(
                t.c.account_id == user_id, t.c.key.in_(keys)
            )
        )
        current = {row["key"]: row for row in rows}
        errors = []
        for m in mutations:
            if m.key not in keys:
                continue
            row = current.get(m.key)
            errors.append(
                {
                    "key": m.key,
                    "error": "version-mismatch",
                    "version": ABSENT if row is None else int(row["version"]),
                    "value": None if row is None else _b64(row["value"]),
                }
            )
        return errors


# Statements built once, with bind parameters.
_bp = sa.bindparam
_OWN = (kv_entries.c.account_id == _bp("b_uid"), kv_entries.c.key == _bp("b_key"))
_GET = sa.select(kv_entries.c.key, kv_entries.c.value, kv_entries.c.version).where(*_OWN)
_COUNT = (
    sa.select(sa.func.count())
    .select_from(kv_entries)
    .where(kv_entries.c.account_id == _bp("b_uid"))
)
_UPDATE = (
    kv_entries.update()
    .where(*_OWN, kv_entries.c.version == _bp("b_expected", type_=sa.BigInteger))
    .values(
        value=_bp("b_value", type_=sa.LargeBinary),
        version=kv_entries.c.version + 1,
        updated_at=_bp("b_now", type_=sa.BigInteger),
    )
    .returning(kv_entries.c.version)
)
