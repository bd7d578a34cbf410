"""The machines service: storage, compare-and-set, presence, library API (docs/events.md, Machines).

Published as ``app.service("machines")``. Every query is scoped by the user id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from happy_socket import (
    App,
    Conflict,
    MachineScopedOnly,
    NotFound,
    Tx,
    UserScopedOnly,
    VersionMismatch,
)
from happy_socket.presence import LazyActivityWriter, SharedPresence, TimedCache

from .tables import machine_json, machines, new_machine_body

log = logging.getLogger("happy_socket.machines")

OWNED_TTL_MS = 30_000
NOT_OWNED_TTL_MS = 5_000
TIMEOUT_MS = 10 * 60 * 1000
MACHINE_ELSEWHERE = "Machine ID already exists for another account"
ONLINE_PREFIX = ":machine-online:"  # Redis keys: <redis-channel>:machine-online:<key>

Key = tuple[str, str]  # (user id, machine id)
DeleteListener = Callable[[Tx, str, str], Awaitable[None]]

FIELDS = {
    "metadata": (machines.c.metadata, machines.c.metadata_version),
    "daemonState": (machines.c.daemon_state, machines.c.daemon_state_version),
}

# The compare-and-set statements, built once with bind parameters (daemon state is updated
# often: building and compiling a statement per event cost more than running it).
_bp = sa.bindparam
_OWN = (machines.c.id == _bp("b_mid"), machines.c.account_id == _bp("b_uid"))
_NOW = _bp("b_now", type_=sa.BigInteger)


def _cas_update(field: str) -> Any:
    value_col, version_col = FIELDS[field]
    values: dict[str, Any] = {
        value_col.name: _bp("b_value"),
        version_col.name: version_col + 1,
        "updated_at": _NOW,
    }
    if field == "daemonState":  # a daemon that reports its state is active
        values.update(active=sa.true(), last_active_at=_NOW)
    return (
        machines.update()
        .where(*_OWN, version_col == _bp("b_expected", type_=sa.BigInteger))
        .values(values)
        .returning(version_col)
    )


_CAS = {
    field: (_cas_update(field), sa.select(value_col, version_col).where(*_OWN))
    for field, (value_col, version_col) in FIELDS.items()
}


class MachinesService:
    """Machines of users; one instance per App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._owned: TimedCache[Key] = TimedCache(clock=app.clock)
        self._not_owned: TimedCache[Key] = TimedCache(clock=app.clock)
        self._delete_listeners: list[DeleteListener] = []
        self.presence = SharedPresence(
            f"{app.settings.redis_channel}{ONLINE_PREFIX}", app.settings.redis
        )
        app.accounts.add_delete_listener(self._account_deleted)
        self.writer: LazyActivityWriter[Key] = LazyActivityWriter(
            self._write_activity, clock=app.clock, name="machine activity"
        )

    # -- library API ---------------------------------------------------------

    async def owns(self, user_id: str, machine_id: str) -> bool:
        """True when ``machine_id`` is ``user_id``'s (answers cached ~30 s)."""
        key = (user_id, machine_id)
        if key in self._owned:
            return True
        if key in self._not_owned:
            return False
        t = machines
        row = await self.app.db.fetch_one(
            sa.select(t.c.id).where(t.c.id == machine_id, t.c.account_id == user_id)
        )
        if row is None:
            self._not_owned.add(key, NOT_OWNED_TTL_MS)
            return False
        self._owned.add(key, OWNED_TTL_MS)
        return True

    async def create_or_load(
        self,
        user_id: str,
        machine_id: str,
        metadata: str,
        daemon_state: str | None = None,
        data_encryption_key: bytes | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The user's machine ``machine_id``, created and announced if missing.

        Returns the ``POST /v1/machines`` shape (no ``seq``); raises Conflict when the
        id belongs to another user.
        """
        t = machines
        now = self.app.clock()
        insert = (
            self.app.db.insert(t)
            .values(
                id=machine_id,
                account_id=user_id,
                seq=0,
                metadata=metadata,
                metadata_version=1,
                daemon_state=daemon_state or None,
                daemon_state_version=1 if daemon_state else 0,
                data_encryption_key=data_encryption_key,
                active=False,
                last_active_at=now,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(*t.c)
        )

        async def unit(tx: Tx) -> tuple[dict[str, Any], tuple[int, int] | None]:
            row = await tx.fetch_one(insert)
            if row is not None:
                first = await self.app.accounts.next_seq(user_id, tx)
                second = await self.app.accounts.next_seq(user_id, tx)
                return row, (first, second)
            existing = await tx.fetch_one(sa.select(t).where(t.c.id == machine_id))
            assert existing is not None
            return existing, None

        row, seqs = await self.app.db.write(unit)
        if row["account_id"] != user_id:
            raise Conflict(MACHINE_ELSEWHERE)
        key = (user_id, machine_id)
        self._not_owned.discard(key)
        self._owned.add(key, OWNED_TTL_MS)
        if seqs is not None:
            router = self.app.router
            await router.send_update(user_id, seqs[0], new_machine_body(row), UserScopedOnly())
            body = {
                "t": "update-machine",
                "machineId": machine_id,
                "metadata": {"value": metadata, "version": 1},
            }
            await router.send_update(user_id, seqs[1], body, MachineScopedOnly(machine_id))
        return machine_json(row, seq=False), seqs is not None

    async def get(self, user_id: str, machine_id: str) -> dict[str, Any] | None:
        """One machine of the user (``GET /v1/machines/:id`` shape), or None."""
        t = machines
        row = await self.app.db.fetch_one(
            sa.select(t).where(t.c.id == machine_id, t.c.account_id == user_id)
        )
        return None if row is None else machine_json(row)

    async def list(self, user_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The user's machines, most recently active first."""
        t = machines
        query = (
            sa.select(t)
            .where(t.c.account_id == user_id)
            .order_by(t.c.last_active_at.desc(), t.c.id)
        )
        if limit is not None:
            query = query.limit(max(0, limit))
        return [machine_json(r) for r in await self.app.db.fetch_all(query)]

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        await tx.execute(machines.delete().where(machines.c.account_id == user_id))

    def add_delete_listener(self, fn: DeleteListener) -> None:
        """Call ``await fn(tx, user_id, machine_id)`` inside every machine's delete unit."""
        self._delete_listeners.append(fn)

    async def delete(self, user_id: str, machine_id: str) -> bool:
        """Delete the machine and its dependants (listeners) in one unit; announce it.

        Emits ``update`` ``{"t": "delete-machine", "machineId"}`` to the user's apps after the
        commit. False when the machine is not the user's. Sessions started on it are kept; a
        daemon still running re-creates it at its next ``POST /v1/machines``.
        """
        t = machines

        async def unit(tx: Tx) -> int | None:
            deleted = await tx.fetch_val(
                t.delete().where(t.c.id == machine_id, t.c.account_id == user_id).returning(t.c.id)
            )
            if deleted is None:
                return None
            for listener in self._delete_listeners:
                await listener(tx, user_id, machine_id)
            return await self.app.accounts.next_seq(user_id, tx)

        key = (user_id, machine_id)
        self._owned.discard(key)
        seq = await self.app.db.write(unit)
        self._owned.discard(key)
        self.writer.drop(key)
        if seq is None:
            return False
        body = {"t": "delete-machine", "machineId": machine_id}
        await self.app.router.send_update(user_id, seq, body, UserScopedOnly())
        return True

    def is_online(self, user_id: str, machine_id: str) -> bool:
        """True when a machine-scoped socket of this machine is connected to this process."""
        return self.presence.local(_online_key(user_id, machine_id))

    async def online(self, user_id: str, machine_id: str) -> bool:
        """True when a machine-scoped socket of this machine is connected to any process.

        Without Redis this is :meth:`is_online`; with Redis, other processes' sockets
        count too (a crashed process's entry expires within 30 s).
        """
        return await self.presence.anywhere(_online_key(user_id, machine_id))

    # -- connections ---------------------------------------------------------

    async def connected(self, user_id: str, machine_id: str, sid: str) -> None:
        """A machine-scoped socket joined."""
        await self.presence.set(sid, _online_key(user_id, machine_id), True)

    async def disconnected(self, sid: str) -> None:
        """A machine-scoped socket left."""
        await self.presence.forget(sid)

    async def announce(self, user_id: str, machine_id: str, active: bool, at: int) -> None:
        """Emit ``machine-activity`` to the user's apps."""
        payload = {"type": "machine-activity", "id": machine_id, "active": active, "activeAt": at}
        await self.app.router.emit_ephemeral(user_id, payload, UserScopedOnly())

    # -- socket events -------------------------------------------------------

    async def compare_and_set(
        self, user_id: str, machine_id: str, field: str, value: str, expected: int
    ) -> int:
        """Set ``field`` if its version is ``expected``; announce; return the new version.

        Raises NotFound("Machine not found"), or VersionMismatch with fresh values.
        """
        value_col, version_col = FIELDS[field]
        update, current = _CAS[field]
        now = self.app.clock()
        values = {
            "b_mid": machine_id,
            "b_uid": user_id,
            "b_expected": expected,
            "b_value": value,
            "b_now": now,
        }
        outcome = await self.app.accounts.compare_and_set(user_id, update, current, values, now)
        if outcome.is_missing:
            raise NotFound("Machine not found")
        if outcome.is_mismatch:
            current_row = outcome.current
            raise VersionMismatch(
                version=int(current_row[version_col.name]), **{field: current_row[value_col.name]}
            )
        seq = outcome.seq
        assert seq is not None
        version = int(outcome.current[version_col.name])
        body = {
            "t": "update-machine",
            "machineId": machine_id,
            field: {"value": value, "version": version},
        }
        await self.app.router.send_update(user_id, seq, body, MachineScopedOnly(machine_id))
        return version

    async def heartbeat(self, user_id: str, machine_id: str, at: int) -> bool:
        """``machine-alive``: announce activity and queue a lazy write; False when ignored."""
        if not await self.owns(user_id, machine_id):
            return False
        self.writer.record((user_id, machine_id), at)
        await self.announce(user_id, machine_id, True, at)
        return True

    async def _write_activity(self, batch: dict[Key, int]) -> None:
        t = machines

        async def unit(tx: Tx) -> None:
            for (user_id, machine_id), at in batch.items():
                await tx.execute(
                    t.update()
                    .where(
                        t.c.id == machine_id,
                        t.c.account_id == user_id,
                        t.c.last_active_at < at,
                    )
                    .values(active=True, last_active_at=at)
                )

        await self.app.db.write(unit)

    async def sweep(self) -> int:
        """Mark machines silent for 10 minutes inactive; each row is flipped and announced once."""
        await self.writer.flush()
        self._owned.prune()
        self._not_owned.prune()
        t = machines
        stmt = (
            t.update()
            .where(t.c.active == sa.true(), t.c.last_active_at < self.app.clock() - TIMEOUT_MS)
            .values(active=False)
            .returning(t.c.id, t.c.account_id, t.c.last_active_at)
        )
        rows = await self.app.db.write(lambda tx: tx.fetch_all(stmt))
        for row in rows:
            await self.announce(row["account_id"], row["id"], False, int(row["last_active_at"]))
        if rows:
            log.info("presence sweep: %d machine(s) timed out", len(rows))
        return len(rows)


def _online_key(user_id: str, machine_id: str) -> str:
    return f"{len(user_id)}:{user_id}:{machine_id}"
