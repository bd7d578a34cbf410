"""Rows a user owns, kept the way sessions and machines keep them: the machinery they share.

- :class:`Ownership`: "is this row the user's?", read once and cached (yes for 30 s, no for 5 s).
- :class:`VersionedFields`: compare-and-set of ``(value, version)`` column pairs, allocating the
  user's update seq in the same commit (:meth:`~happy_socket.storage.Accounts.compare_and_set`).
- :class:`Activity`: last-active times written lazily from heartbeats, the sweep that marks
  silent rows inactive, and the background tasks that run both.

The table needs the columns ``id`` and ``account_id`` (and ``updated_at`` for
:class:`VersionedFields`, ``active`` and ``last_active_at`` for :class:`Activity`). Every
statement is built once, with bind parameters, and scoped by the user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import NotFound, VersionMismatch
from .presence import FLUSH_INTERVAL_S, LazyActivityWriter, TimedCache, every
from .storage import Row, Tx

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.presence")

OWNED_TTL_MS = 30_000
NOT_OWNED_TTL_MS = 5_000
TIMEOUT_MS = 10 * 60 * 1000  # a row without a heartbeat for 10 minutes becomes inactive
SWEEP_INTERVAL_S = 60.0

Key = tuple[str, str]  # (user id, row id)

_bp = sa.bindparam
#: the time of the write (ms), in the statements of this module; usable in ``also`` values
NOW = _bp("b_now", type_=sa.BigInteger)


def _own(table: sa.Table) -> tuple[Any, Any]:
    return (table.c.id == _bp("b_id"), table.c.account_id == _bp("b_uid"))


class Ownership:
    """Which rows of ``table`` are whose, cached: answers for ``(user id, row id)``."""

    def __init__(self, app: App, table: sa.Table) -> None:
        self.app = app
        self._owned: TimedCache[Key] = TimedCache(clock=app.clock)
        self._not_owned: TimedCache[Key] = TimedCache(clock=app.clock)
        self._query = sa.select(table.c.id).where(*_own(table))

    async def owns(self, user_id: str, row_id: str) -> bool:
        """True when the row is the user's (yes cached ~30 s, no ~5 s)."""
        key = (user_id, row_id)
        if key in self._owned:
            return True
        if key in self._not_owned:
            return False
        if not await self.read(user_id, row_id):
            self._not_owned.add(key, NOT_OWNED_TTL_MS)
            return False
        self._owned.add(key, OWNED_TTL_MS)
        return True

    async def read(self, user_id: str, row_id: str) -> bool:
        """True when the row is the user's, read now (no cache)."""
        values = {"b_id": row_id, "b_uid": user_id}
        return await self.app.db.fetch_one(self._query, values) is not None

    def remember(self, user_id: str, row_id: str) -> None:
        """The row is the user's (it was just created or loaded)."""
        key = (user_id, row_id)
        self._not_owned.discard(key)
        self._owned.add(key, OWNED_TTL_MS)

    def forget(self, user_id: str, row_id: str) -> None:
        """Ask the database next time (the row is being deleted)."""
        self._owned.discard((user_id, row_id))

    def prune(self) -> None:
        """Drop expired answers."""
        self._owned.prune()
        self._not_owned.prune()


class VersionedFields:
    """Compare-and-set of the ``(value, version)`` columns of ``table``, by wire name.

    ``also`` adds columns a field's write sets too (``{"daemonState": {"active": sa.true()}}``;
    :data:`NOW` is the time). Every write sets ``updated_at``.
    """

    def __init__(
        self,
        table: sa.Table,
        fields: Mapping[str, tuple[sa.Column[Any], sa.Column[Any]]],
        *,
        not_found: str | None = None,
        also: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.fields = dict(fields)
        self.not_found = not_found
        self._statements: dict[str, tuple[Any, Any]] = {}
        for field, (value_col, version_col) in self.fields.items():
            values = {
                value_col.name: _bp("b_value"),
                version_col.name: version_col + 1,
                "updated_at": NOW,
                **(also or {}).get(field, {}),
            }
            update = (
                table.update()
                .where(*_own(table), version_col == _bp("b_expected", type_=sa.BigInteger))
                .values(values)
                .returning(version_col)
            )
            self._statements[field] = (
                update,
                sa.select(value_col, version_col).where(*_own(table)),
            )

    async def set(
        self, app: App, user_id: str, row_id: str, field: str, value: Any, expected: int
    ) -> tuple[int, int]:
        """Set ``field`` if its version is ``expected``: ``(new version, user update seq)``.

        Raises ``NotFound(not_found)`` when the row is not the user's, or ``VersionMismatch``
        carrying the current version and value (``{"version": 3, field: value}``).
        """
        value_col, version_col = self.fields[field]
        update, current = self._statements[field]
        now = app.clock()
        values = {
            "b_id": row_id,
            "b_uid": user_id,
            "b_expected": expected,
            "b_value": value,
            "b_now": now,
        }
        outcome = await app.accounts.compare_and_set(user_id, update, current, values, now)
        if outcome.is_missing:
            raise NotFound(self.not_found)
        row = outcome.current
        if outcome.is_mismatch:
            raise VersionMismatch(
                version=int(row[version_col.name]), **{field: row[value_col.name]}
            )
        assert outcome.seq is not None
        return int(row[version_col.name]), outcome.seq


class Activity:
    """Last-active times of ``table``'s rows from heartbeats, and the inactivity sweep.

    :meth:`record` queues a write (written in one unit every few seconds by ``writer``);
    :meth:`expire` marks rows silent for ``timeout_ms`` inactive, each once, and returns them.
    """

    def __init__(self, app: App, table: sa.Table, *, name: str, timeout_ms: int = TIMEOUT_MS):
        self.app = app
        self.name = name
        self.timeout_ms = timeout_ms
        self.writer: LazyActivityWriter[Key] = LazyActivityWriter(
            self._write, clock=app.clock, name=f"{name} activity"
        )
        t = table
        at = _bp("b_at", type_=sa.BigInteger)
        self._touch = (
            t.update()
            .where(*_own(t), t.c.last_active_at < at)
            .values(active=True, last_active_at=at)
        )
        self._expire = (
            t.update()
            .where(
                t.c.active == sa.true(), t.c.last_active_at < _bp("b_before", type_=sa.BigInteger)
            )
            .values(active=False)
            .returning(t.c.id, t.c.account_id, t.c.last_active_at)
        )

    def record(self, user_id: str, row_id: str, at: int) -> None:
        """A heartbeat at ``at`` (ms): the row is active; written lazily."""
        self.writer.record((user_id, row_id), at)

    def drop(self, user_id: str, row_id: str) -> None:
        """Forget a pending write (the row ended or was deleted)."""
        self.writer.drop((user_id, row_id))

    async def flush(self) -> None:
        """Write the pending times now."""
        await self.writer.flush()

    async def _write(self, batch: dict[Key, int]) -> None:
        async def unit(tx: Tx) -> None:
            for (user_id, row_id), at in batch.items():
                await tx.execute(self._touch, {"b_id": row_id, "b_uid": user_id, "b_at": at})

        await self.app.db.write(unit)

    async def expire(self) -> list[Row]:
        """Flush, then mark rows silent for ``timeout_ms`` inactive: ``[{id, account_id,
        last_active_at}]`` of those flipped now (each row once, across processes too)."""
        await self.writer.flush()
        values = {"b_before": self.app.clock() - self.timeout_ms}
        rows = await self.app.db.write(lambda tx: tx.fetch_all(self._expire, values))
        if rows:
            log.info("presence sweep: %d %s(s) timed out", len(rows), self.name)
        return rows

    def start(self, sweep: Callable[[], Awaitable[Any]], *, plugin: str) -> None:
        """Start the periodic flush and ``sweep`` as background tasks of the app.

        Their periods are the plugin's options ``flush_interval`` (seconds, default 5) and
        ``sweep_interval`` (default 60).
        """
        app = self.app
        interval = float(app.settings.option(plugin, "sweep_interval", SWEEP_INTERVAL_S))
        flush = float(app.settings.option(plugin, "flush_interval", FLUSH_INTERVAL_S))
        app.spawn(self.writer.run(flush), name=f"{plugin}-activity-flush")
        app.spawn(every(interval, sweep, name=f"{plugin} presence sweep"), name=f"{plugin}-sweep")
