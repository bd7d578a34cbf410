"""Artifact storage: every write is one atomic unit; compare-and-set is one conditional UPDATE
(with the user seq: one PostgreSQL statement, ``Accounts.compare_and_set``)."""

from __future__ import annotations

import base64
from typing import Any, Literal

import attrs
import sqlalchemy as sa

from happy_socket import App, Database, Row, Tx

from .tables import artifacts

MAX_VERSION = 2**62  # larger expected versions can never match (and must not overflow BIGINT)


def b64(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(bytes(data)).decode("ascii")


@attrs.frozen
class Part:
    """A requested change of the header or the body."""

    data: bytes
    expected: int | None  # None: a version that cannot exist (never matches)


@attrs.frozen
class Created:
    """The artifact after ``create``; ``update_seq`` is None when it already existed."""

    row: Row | None  # None: the id belongs to another account
    update_seq: int | None


@attrs.frozen
class Updated:
    """The outcome of ``update``: the row as written (success) or as it is now (mismatch)."""

    status: Literal["success", "version-mismatch", "not-found"]
    row: Row | None = None
    update_seq: int | None = None


class ArtifactStore:
    """Reads and writes one user's artifacts; every query is scoped by the user id."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def _db(self) -> Database:
        return self._app.db

    async def read(self, user_id: str, artifact_id: str) -> Row | None:
        """The user's artifact ``artifact_id``, or None."""
        return await self._db.fetch_one(_CURRENT, {"b_aid": artifact_id, "b_uid": user_id})

    async def create(
        self, user_id: str, artifact_id: str, header: bytes, body: bytes, key: bytes
    ) -> Created:
        """Insert a new artifact (versions 1/1, seq 0) unless the id exists; allocate the update seq."""
        now = self._app.clock()
        insert = (
            self._db.insert(artifacts)
            .values(
                id=artifact_id,
                account_id=user_id,
                header=header,
                header_version=1,
                body=body,
                body_version=1,
                data_encryption_key=key,
                seq=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(artifacts.c.id)
        )

        async def unit(tx: Tx) -> Created:
            for _ in range(3):  # the conflicting row may be deleted before we read it
                if await tx.fetch_val(insert) is not None:
                    seq = await self._app.accounts.next_seq(user_id, tx)
                    row = await tx.fetch_one(_CURRENT, {"b_aid": artifact_id, "b_uid": user_id})
                    return Created(row, seq)
                existing = await tx.fetch_one(
                    sa.select(artifacts).where(artifacts.c.id == artifact_id)
                )
                if existing is not None:
                    mine = existing["account_id"] == user_id
                    return Created(existing if mine else None, None)
            raise RuntimeError(f"artifact {artifact_id!r} keeps appearing and vanishing")

        return await self._db.write(unit)

    async def update(
        self, user_id: str, artifact_id: str, header: Part | None, body: Part | None
    ) -> Updated:
        """Compare-and-set header and/or body in one statement (artifact seq + 1)."""
        if header is None and body is None:
            raise ValueError("update needs a header, a body or both")
        values: dict[str, Any] = {"b_aid": artifact_id, "b_uid": user_id}
        for name, part in (("header", header), ("body", body)):
            if part is not None:
                if part.expected is None:  # a version that cannot exist: a mismatch
                    current = await self._db.fetch_one(_CURRENT, values)
                    return Updated("version-mismatch" if current else "not-found", current)
                values.update({f"b_{name}": part.data, f"b_{name}_expected": part.expected})
        now = self._app.clock()
        values["b_now"] = now
        update = _UPDATES[header is not None, body is not None]
        outcome = await self._app.accounts.compare_and_set(user_id, update, _CURRENT, values, now)
        if outcome.is_missing:
            return Updated("not-found")
        if outcome.is_mismatch:
            return Updated("version-mismatch", outcome.row)
        return Updated("success", outcome.row, outcome.seq)

    async def delete(self, user_id: str, artifact_id: str) -> int | None:
        """Delete the user's artifact; the allocated update seq, or None when it did not exist."""
        stmt = (
            artifacts.delete()
            .where(artifacts.c.id == artifact_id, artifacts.c.account_id == user_id)
            .returning(artifacts.c.id)
        )

        async def unit(tx: Tx) -> int | None:
            if await tx.fetch_val(stmt) is None:
                return None
            return await self._app.accounts.next_seq(user_id, tx)

        return await self._db.write(unit)


# The compare-and-set statements, built once per (header?, body?) with bind parameters.
_bp = sa.bindparam
_OWN = (artifacts.c.id == _bp("b_aid"), artifacts.c.account_id == _bp("b_uid"))
_CURRENT = sa.select(artifacts).where(*_OWN)


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


_UPDATES = {(h, b): _update(h, b) for h in (True, False) for b in (True, False) if h or b}


def serialize(row: Row) -> dict[str, Any]:
    """The wire form of an artifact (PROTOCOL.md §4.3)."""
    return {
        "id": row["id"],
        "header": b64(row["header"]),
        "headerVersion": int(row["header_version"]),
        "body": b64(row["body"]),
        "bodyVersion": int(row["body_version"]),
        "seq": int(row["seq"]),
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }


def new_artifact_body(row: Row) -> dict[str, Any]:
    """The ``new-artifact`` update body."""
    return {
        "t": "new-artifact",
        "artifactId": row["id"],
        "seq": int(row["seq"]),
        "header": b64(row["header"]),
        "headerVersion": int(row["header_version"]),
        "body": b64(row["body"]),
        "bodyVersion": int(row["body_version"]),
        "dataEncryptionKey": b64(row["data_encryption_key"]),
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }
