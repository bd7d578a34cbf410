"""The artifacts service: storage, the user's update seq, and the updates every write emits.

Published as ``app.service(ArtifactsService)``. The socket events and the HTTP routes are thin
adapters over it. Every query is scoped by the user id; every write is one atomic unit whose
user seq is allocated in the same commit, and the update is emitted after the commit to
``user-scoped-only``. The compare-and-set is one conditional UPDATE (with the user seq: one
PostgreSQL statement, ``Accounts.compare_and_set``).
"""

from __future__ import annotations

import builtins
from typing import Any

import attrs
import sqlalchemy as sa

from happy_socket import App, CasResult, Conflict, Row, Tx, UserScopedOnly
from happy_socket.validation import MAX_ID_LENGTH, is_text

from .tables import artifacts
from .wire import new_artifact_body, update_artifact_body

MAX_VERSION = 2**62  # larger expected versions can never match (and must not overflow BIGINT)
LIST_LIMIT = 200
NOT_FOUND = "Artifact not found"
OTHER_ACCOUNT = "Artifact with this ID already exists for another account"


@attrs.frozen
class Part:
    """A requested change of the header or the body."""

    data: bytes
    expected: int | None  # None: a version that cannot exist (never matches)


def _valid_id(artifact_id: str) -> bool:
    """An id that can exist: ids over 256 characters or holding NUL never do (and PostgreSQL
    refuses NUL in a query parameter)."""
    return is_text(artifact_id, max_length=MAX_ID_LENGTH, allow_empty=False)


class ArtifactsService:
    """Reads and writes users' artifacts and announces every change."""

    def __init__(self, app: App) -> None:
        self._app = app
        app.accounts.add_delete_listener(self._account_deleted)

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(artifacts.delete().where(artifacts.c.account_id == user_id))

    async def get(self, user_id: str, artifact_id: str) -> Row | None:
        """The user's artifact ``artifact_id``, or None (another user's counts as missing)."""
        if not _valid_id(artifact_id):
            return None
        return await self._app.db.fetch_one(_CURRENT, {"b_aid": artifact_id, "b_uid": user_id})

    async def list(self, user_id: str) -> builtins.list[Row]:
        """The user's most recently updated artifacts (at most ``LIST_LIMIT``), without bodies."""
        return await self._app.db.fetch_all(_LIST, {"b_uid": user_id})

    async def create(
        self, user_id: str, artifact_id: str, header: bytes, body: bytes, key: bytes
    ) -> Row:
        """The new artifact (versions 1/1, seq 0; emits ``new-artifact``), or the user's
        existing one unchanged (no update). Raises Conflict when another user owns the id."""
        now = self._app.clock()
        values = {
            "id": artifact_id,
            "account_id": user_id,
            "header": header,
            "header_version": 1,
            "body": body,
            "body_version": 1,
            "data_encryption_key": key,
            "seq": 0,
            "created_at": now,
            "updated_at": now,
        }
        insert = (
            self._app.db.insert(artifacts)
            .values(values)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(artifacts.c.id)
        )

        async def unit(tx: Tx) -> tuple[Row | None, int | None]:
            for _ in range(3):  # the conflicting row may be deleted before we read it
                if await tx.fetch_val(insert) is not None:
                    return values, await self._app.accounts.next_seq(user_id, tx)
                existing = await tx.fetch_one(_BY_ID, {"b_aid": artifact_id})
                if existing is not None:
                    return (existing if existing["account_id"] == user_id else None), None
            raise RuntimeError(f"artifact {artifact_id!r} keeps appearing and vanishing")

        row, seq = await self._app.db.write(unit)
        if row is None:
            raise Conflict(OTHER_ACCOUNT)
        if seq is not None:
            await self._send(user_id, seq, new_artifact_body(row))
        return row

    async def update(
        self,
        user_id: str,
        artifact_id: str,
        header: Part | None = None,
        body: Part | None = None,
    ) -> CasResult:
        """Compare-and-set of header and/or body in one conditional statement.

        Either every given part matches its expected version and all of them are written
        (version = expected + 1), or nothing is. A successful write also raises the artifact
        seq by one and sets ``updatedAt`` (with no part given, that is all it does) and emits
        ``update-artifact`` with the written parts. Returns CHANGED with the written row,
        MISMATCH with the row as it is now, or MISSING (unknown or another user's).
        """
        values: dict[str, Any] = {"b_aid": artifact_id, "b_uid": user_id}
        if not _valid_id(artifact_id):
            return CasResult.missing()
        for name, part in (("header", header), ("body", body)):
            if part is None:
                continue
            if part.expected is None:  # a version that cannot exist: a mismatch
                current = await self._app.db.fetch_one(_CURRENT, values)
                return CasResult.missing() if current is None else CasResult.mismatch(current)
            values.update({f"b_{name}": part.data, f"b_{name}_expected": part.expected})
        now = self._app.clock()
        values["b_now"] = now
        statement = _UPDATES[header is not None, body is not None]
        result = await self._app.accounts.compare_and_set(user_id, statement, _CURRENT, values, now)
        if result.is_changed:
            assert result.seq is not None
            parts = tuple(n for n, p in (("header", header), ("body", body)) if p is not None)
            await self._send(user_id, result.seq, update_artifact_body(result.current, parts))
        return result

    async def delete(self, user_id: str, artifact_id: str) -> bool:
        """Delete the user's artifact and emit ``delete-artifact``; False when it did not exist."""
        if not _valid_id(artifact_id):
            return False
        values = {"b_aid": artifact_id, "b_uid": user_id}

        async def unit(tx: Tx) -> int | None:
            if await tx.fetch_val(_DELETE, values) is None:
                return None
            return await self._app.accounts.next_seq(user_id, tx)

        seq = await self._app.db.write(unit)
        if seq is None:
            return False
        await self._send(user_id, seq, {"t": "delete-artifact", "artifactId": artifact_id})
        return True

    async def _send(self, user_id: str, seq: int, body: dict[str, Any]) -> None:
        await self._app.router.send_update(user_id, seq, body, UserScopedOnly())


# Statements built once, with bind parameters.
_bp = sa.bindparam
_OWN = (artifacts.c.id == _bp("b_aid"), artifacts.c.account_id == _bp("b_uid"))
_CURRENT = sa.select(artifacts).where(*_OWN)
_BY_ID = sa.select(artifacts).where(artifacts.c.id == _bp("b_aid"))
_DELETE = artifacts.delete().where(*_OWN).returning(artifacts.c.id)
_LIST = (
    sa.select(*(c for c in artifacts.c if c.name != "body"))
    .where(artifacts.c.account_id == _bp("b_uid"))
    .order_by(artifacts.c.updated_at.desc(), artifacts.c.id)
    .limit(LIST_LIMIT)
)


def _update(header: bool, body: bool) -> Any:
    values: dict[str, Any] = {
        "seq": artifacts.c.seq + 1,
        "updated_at": _bp("b_now", type_=sa.BigInteger),
    }
    where = list(_OWN)
    for name, present in (("header", header), ("body", body)):
        if present:
            version = artifacts.c[f"{name}_version"]
            values[name] = _bp(f"b_{name}", type_=sa.LargeBinary)
            values[f"{name}_version"] = version + 1
            where.append(version == _bp(f"b_{name}_expected", type_=sa.BigInteger))
    return artifacts.update().where(*where).values(values).returning(*artifacts.c)


# (header given, body given) -> statement; neither given only raises the seq (HTTP allows it)
_UPDATES = {(h, b): _update(h, b) for h in (True, False) for b in (True, False)}
