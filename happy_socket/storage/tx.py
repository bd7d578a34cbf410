"""What an atomic unit of work receives: the :class:`Tx` protocol, and the storage types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy.sql import ClauseElement

T = TypeVar("T")
Query = ClauseElement | str
Row = dict[str, Any]
Values = Mapping[str, Any] | None
Unit = Callable[["Tx"], Awaitable[T]]


@runtime_checkable
class Tx(Protocol):
    """Statements inside one atomic unit of work.

    Every method takes an optional ``values`` mapping for ``sa.bindparam(name)``
    placeholders: build a hot statement once at import time and pass its values per call,
    which skips rebuilding (and recompiling) it. ``dialect`` is ``"sqlite"`` or
    ``"postgresql"``.
    """

    dialect: str

    async def fetch_one(self, query: Query, values: Values = None) -> Row | None:
        """The first row of ``query`` as a dict, or None."""

    async def fetch_all(self, query: Query, values: Values = None) -> list[Row]:
        """All rows of ``query`` as dicts."""

    async def fetch_val(self, query: Query, values: Values = None) -> Any:
        """The first column of the first row, or None."""

    async def execute(self, query: Query, values: Values = None) -> None:
        """Run ``query``; use ``.returning(...)`` with fetch_* to learn what it changed."""
