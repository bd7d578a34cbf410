"""Tables contributed by plugins, and versioned migrations per component.

Every component (the core and each plugin) declares its tables at their *latest*
shape through ``register_tables`` and, from version 2 on, the steps that bring an
older database up to date through ``register_migrations``. A fresh database gets
the latest tables directly; an existing one runs the missing steps in order.
The applied version of each component is kept in ``happy_socket_schema``.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from ..context import now_ms
from ..errors import ConfigError
from .database import Database, Tx

MigrationStep = Callable[[Tx], Awaitable[None]]

schema_versions = sa.Table(
    "happy_socket_schema",
    sa.MetaData(),
    sa.Column("component", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)


@attrs.frozen
class Migration:
    """Brings ``component`` from ``version - 1`` to ``version``."""

    component: str
    version: int
    step: MigrationStep


class Migrations:
    """Collects migration steps from ``register_migrations`` hooks."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[int, Migration]] = {}
        self.current_plugin = "?"

    def add(self, version: int, step: MigrationStep, *, component: str | None = None) -> None:
        """Register ``step`` that upgrades the calling plugin's tables to ``version`` (>= 2)."""
        name = component or self.current_plugin
        if version < 2:
            raise ValueError("version 1 is the initial schema; migrations start at 2")
        self._steps.setdefault(name, {})[version] = Migration(name, version, step)

    def latest(self, component: str) -> int:
        """The version a fresh database of ``component`` is created at."""
        return max(self._steps.get(component, {}), default=1)

    def steps(self, component: str, after: int) -> list[Migration]:
        """The steps that follow ``after``, in order."""
        versions = self._steps.get(component, {})
        missing = [v for v in range(after + 1, self.latest(component) + 1) if v not in versions]
        if missing:
            raise ValueError(f"component {component!r} lacks migrations for {missing}")
        return [versions[v] for v in range(after + 1, self.latest(component) + 1)]


@attrs.define
class SchemaStatus:
    """What ``upgrade`` found and did for one component."""

    component: str
    before: int | None
    after: int


async def upgrade(
    db: Database,
    tables: dict[str, list[sa.Table]],
    migrations: Migrations,
) -> list[SchemaStatus]:
    """Create or migrate every component's tables; safe to run from several processes at once."""

    async def unit(tx: Tx) -> list[SchemaStatus]:
        if tx.dialect == "postgresql":
            await tx.execute(f"SELECT pg_advisory_xact_lock({zlib.crc32(b'happy_socket_schema')})")
        await _create(tx, db, [schema_versions])
        rows = await tx.fetch_all(sa.select(schema_versions))
        applied = {r["component"]: r["version"] for r in rows}
        report = []
        for component, component_tables in tables.items():
            before = applied.get(component)
            latest = migrations.latest(component)
            if before is not None and before > latest:
                raise ConfigError(
                    f"The database's schema of {component!r} is at version {before}, newer than "
                    f"this code's {latest}: upgrade happy-socket (or its plugin) before "
                    "starting it on this database."
                )
            if before is not None:
                for migration in migrations.steps(component, before):
                    await migration.step(tx)
            await _create(tx, db, component_tables)
            if before != latest:
                await _set_version(tx, db, component, latest, insert=before is None)
            report.append(SchemaStatus(component, before, latest))
        return report

    return await db.write(unit)


async def current_versions(db: Database) -> dict[str, int]:
    """The applied version of each component (empty for a new database)."""

    async def unit(tx: Tx) -> dict[str, int]:
        await _create(tx, db, [schema_versions])
        rows = await tx.fetch_all(sa.select(schema_versions))
        return {r["component"]: r["version"] for r in rows}

    return await db.write(unit)


async def _create(tx: Tx, db: Database, tables: list[sa.Table]) -> None:
    dialect = db.sa_dialect
    for table in tables:
        await tx.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            ddl = CreateIndex(index, if_not_exists=True).compile(dialect=dialect)
            await tx.execute(str(ddl))


async def _set_version(tx: Tx, db: Database, component: str, version: int, *, insert: bool) -> None:
    values: dict[str, Any] = {"version": version, "updated_at": now_ms()}
    if insert:
        stmt = db.insert(schema_versions).values(component=component, **values)
        await tx.execute(stmt.on_conflict_do_update(index_elements=["component"], set_=values))
    else:
        await tx.execute(
            schema_versions.update()
            .where(schema_versions.c.component == component)
            .values(**values)
        )
