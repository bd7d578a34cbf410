"""The machines service: storage, compare-and-set, presence, library API (docs/events.md, Machines).

Published as ``app.service("machines")``. Every query is scoped by the user id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from happy_socket import App, Conflict, MachineScopedOnly, Tx, UserScopedOnly
from happy_socket.owned import NOW, Activity, Ownership, VersionedFields
from happy_socket.presence import SharedPresence

from .tables import machine_json, machines, new_machine_body

MACHINE_ELSEWHERE = "Machine ID already exists for another account"
ONLINE_PREFIX = ":machine-online:"  # Redis keys: <redis-channel>:machine-online:<key>

Key = tuple[str, str]  # (user id, machine id)
DeleteListener = Callable[[Tx, str, str], Awaitable[None]]

# machine-update-metadata/-state, built once (daemon state is updated often: building and
# compiling a statement per event cost more than running it); a daemon that reports its
# state is active
FIELDS = VersionedFields(
    machines,
    {
        "metadata": (machines.c.metadata, machines.c.metadata_version),
        "daemonState": (machines.c.daemon_state, machines.c.daemon_state_version),
    },
    not_found="Machine not found",
    also={"daemonState": {"active": sa.true(), "last_active_at": NOW}},
)


class MachinesService:
    """Machines of users; one instance per App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.ownership = Ownership(app, machines)
        self._delete_listeners: list[DeleteListener] = []
        self.presence = SharedPresence(
            f"{app.settings.redis_channel}{ONLINE_PREFIX}", app.settings.redis
        )
        app.accounts.add_delete_listener(self._account_deleted)
        self.activity = Activity(app, machines, name="machine")
        self.writer = self.activity.writer  # the lazy last-active writes

    # -- library API ---------------------------------------------------------

    async def owns(self, user_id: str, machine_id: str) -> bool:
        """True when ``machine_id`` is ``user_id``'s (answers cached ~30 s)."""
        return await self.ownership.owns(user_id, machine_id)

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
        self.ownership.remember(user_id, machine_id)
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

        self.ownership.forget(user_id, machine_id)
        seq = await self.app.db.write(unit)
        self.ownership.forget(user_id, machine_id)
        self.activity.drop(user_id, machine_id)
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
        version, seq = await FIELDS.set(self.app, user_id, machine_id, field, value, expected)
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
        self.activity.record(user_id, machine_id, at)
        await self.announce(user_id, machine_id, True, at)
        return True

    async def sweep(self) -> int:
        """Mark machines silent for 10 minutes inactive; each row is flipped and announced once."""
        self.ownership.prune()
        rows = await self.activity.expire()
        for row in rows:
            await self.announce(row["account_id"], row["id"], False, int(row["last_active_at"]))
        return len(rows)


def _online_key(user_id: str, machine_id: str) -> str:
    return f"{len(user_id)}:{user_id}:{machine_id}"
