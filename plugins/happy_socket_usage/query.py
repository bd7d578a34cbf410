"""Usage totals per hour or day (UTC), computed in Python over a bounded number of reports.

The stored reports keep the ``tokens`` and ``cost`` objects as the client sent them (any keys,
any values), so summing "every numeric value per key" is done here rather than in two SQL
dialects' JSON functions. Memory stays bounded: reports are read in pages of ``PAGE`` rows
(keyset on ``(created_at, id)``), a query may cover at most ``MAX_REPORTS`` reports and produce
at most ``MAX_SUMS`` (bucket, key) sums; past either limit it is refused with 400.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs
import sqlalchemy as sa

from happy_socket import Database, InvalidParams
from happy_socket.validation import is_number

from .tables import usage_reports

PAGE = 1000
MAX_REPORTS = 100_000
MAX_SUMS = 100_000
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's: larger sums are answered as floats
BUCKET_SECONDS = {"hour": 3600, "day": 86400}

GroupBy = Literal["hour", "day"]


@attrs.define
class Bucket:
    """The sums of one hour or day."""

    timestamp: int
    tokens: dict[str, int | float] = attrs.field(factory=dict)
    cost: dict[str, int | float] = attrs.field(factory=dict)
    count: int = 0

    def json(self) -> dict[str, Any]:
        """The wire form of the bucket."""
        return {
            "timestamp": self.timestamp,
            "tokens": {k: _js(v) for k, v in self.tokens.items()},
            "cost": {k: _js(v) for k, v in self.cost.items()},
            "reportCount": self.count,
        }


def _js(value: int | float) -> int | float:
    """An integer beyond JavaScript's safe range is answered as a float (as JavaScript sums)."""
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return float(value)
    return value


class _Sums:
    """Running sums per bucket, refusing to grow past ``MAX_SUMS`` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buckets: dict[int, Bucket] = {}
        self.entries = 0
        self.reports = 0

    def add(self, created_at_ms: int, data: Any) -> None:
        self.reports += 1
        if self.reports > MAX_REPORTS:
            raise InvalidParams(f"More than {MAX_REPORTS} usage reports match; narrow the range")
        timestamp = (created_at_ms // 1000) // self.size * self.size
        bucket = self.buckets.get(timestamp)
        if bucket is None:
            bucket = self.buckets[timestamp] = Bucket(timestamp)
        bucket.count += 1
        if not isinstance(data, dict):
            return
        for name, sums in (("tokens", bucket.tokens), ("cost", bucket.cost)):
            values = data.get(name)
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                if not is_number(value):
                    continue
                if key not in sums:
                    self.entries += 1
                    if self.entries > MAX_SUMS:
                        raise InvalidParams(
                            f"More than {MAX_SUMS} usage sums would be answered; narrow the range"
                        )
                sums[key] = sums.get(key, 0) + value


async def query_usage(
    db: Database,
    user_id: str,
    *,
    session_id: str | None,
    start_s: int | None,
    end_s: int | None,
    group_by: GroupBy,
) -> dict[str, Any]:
    """The ``POST /v1/usage/query`` answer for the user's reports (of ``session_id`` if given)
    whose ``createdAt`` lies within ``[start_s, end_s]`` seconds (each bound optional)."""
    t = usage_reports
    where: list[Any] = [t.c.account_id == user_id]
    if session_id is not None:
        where.append(t.c.session_id == session_id)
    if start_s is not None:
        where.append(t.c.created_at >= start_s * 1000)
    if end_s is not None:
        where.append(t.c.created_at <= end_s * 1000)
    sums = _Sums(BUCKET_SECONDS[group_by])
    after: tuple[int, str] | None = None
    while True:
        page = sa.select(t.c.id, t.c.created_at, t.c.data).where(*where)
        if after is not None:
            created, report_id = after
            page = page.where(
                sa.or_(
                    t.c.created_at > created,
                    sa.and_(t.c.created_at == created, t.c.id > report_id),
                )
            )
        rows = await db.fetch_all(page.order_by(t.c.created_at, t.c.id).limit(PAGE))
        for row in rows:
            try:
                data = json.loads(row["data"])
            except ValueError:
                data = None
            sums.add(int(row["created_at"]), data)
        if len(rows) < PAGE:
            break
        after = (int(rows[-1]["created_at"]), str(rows[-1]["id"]))
    usage = [sums.buckets[ts].json() for ts in sorted(sums.buckets)]
    return {"usage": usage, "groupBy": group_by, "totalReports": sums.reports}
