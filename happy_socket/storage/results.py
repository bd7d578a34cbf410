"""The one result type of a compare-and-set: changed, mismatch or missing."""

from __future__ import annotations

import enum
from typing import Any

import attrs


class Outcome(enum.Enum):
    """What a compare-and-set did."""

    CHANGED = "changed"  # the expected version(s) matched; the write committed
    MISMATCH = "mismatch"  # the row exists with other versions; nothing was written
    MISSING = "missing"  # the user has no such row


@attrs.frozen
class CasResult:
    """The outcome of a compare-and-set, with the row it concerns.

    ``row``: the written row (CHANGED) or the current row read after the failed attempt
    (MISMATCH); None when MISSING. ``seq``: the user's update seq allocated in the same
    commit (CHANGED only), for the update a service then emits.
    """

    outcome: Outcome
    row: dict[str, Any] | None = None
    seq: int | None = None

    @classmethod
    def changed(cls, row: dict[str, Any], seq: int | None = None) -> CasResult:
        """The write committed."""
        return cls(Outcome.CHANGED, row, seq)

    @classmethod
    def mismatch(cls, current: dict[str, Any]) -> CasResult:
        """The versions did not match; ``current`` is the row as it is now."""
        return cls(Outcome.MISMATCH, current)

    @classmethod
    def missing(cls) -> CasResult:
        """No such row for this user."""
        return cls(Outcome.MISSING)

    @property
    def is_changed(self) -> bool:
        """True when the write committed."""
        return self.outcome is Outcome.CHANGED

    @property
    def is_mismatch(self) -> bool:
        """True when the versions did not match."""
        return self.outcome is Outcome.MISMATCH

    @property
    def is_missing(self) -> bool:
        """True when the user has no such row."""
        return self.outcome is Outcome.MISSING

    @property
    def current(self) -> dict[str, Any]:
        """The row (CHANGED or MISMATCH); a KeyError-free accessor for the common case."""
        if self.row is None:
            raise LookupError("a missing row has no current value")
        return self.row
