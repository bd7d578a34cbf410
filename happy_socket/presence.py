"""Presence helpers shared by plugins: heartbeat time rules, lazy activity writes, periodic sweeps.

Heartbeats arrive every few seconds from every live session and machine; writing each one
would melt the database. :class:`LazyActivityWriter` remembers the last time written per key,
queues a write only when the time moved more than ``threshold_ms``, and flushes the queue in
one atomic unit every few seconds (and on shutdown). Nothing here knows about sessions or
machines: the caller supplies the function that writes a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from .context import Clock, now_ms

log = logging.getLogger("happy_socket.presence")

K = TypeVar("K", bound=Hashable)

MAX_HEARTBEAT_AGE_MS = 10 * 60 * 1000
WRITE_THRESHOLD_MS = 30_000
FLUSH_INTERVAL_S = 5.0
MAX_BATCH = 500


def heartbeat_time(value: Any, now: int, *, max_age_ms: int = MAX_HEARTBEAT_AGE_MS) -> int | None:
    """A heartbeat's ``time`` clamped to ``now``; None when it is not a number or too old."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    t = min(int(value), now)
    if t < now - max_age_ms:
        return None
    return t


class LazyActivityWriter(Generic[K]):
    """Coalesces activity times per key and writes them in batches.

    ``write_batch(times)`` receives ``{key: latest time}`` and must write them in one unit.
    """

    def __init__(
        self,
        write_batch: Callable[[dict[K, int]], Awaitable[None]],
        *,
        clock: Clock = now_ms,
        threshold_ms: int = WRITE_THRESHOLD_MS,
        max_batch: int = MAX_BATCH,
        forget_after_ms: int = MAX_HEARTBEAT_AGE_MS,
        name: str = "activity",
    ) -> None:
        self._write_batch = write_batch
        self._clock = clock
        self.threshold_ms = threshold_ms
        self.max_batch = max_batch
        self.forget_after_ms = forget_after_ms
        self.name = name
        self._written: dict[K, int] = {}  # last time queued for writing, per key
        self._pending: dict[K, int] = {}
        self._lock = asyncio.Lock()
        self.writes = 0  # rows handed to write_batch, for tests and metrics

    @property
    def pending(self) -> dict[K, int]:
        """A copy of what the next flush writes."""
        return dict(self._pending)

    def record(self, key: K, at: int) -> bool:
        """Note activity of ``key`` at ``at``; True when a write was queued."""
        last = self._written.get(key)
        if last is not None and at - last <= self.threshold_ms:
            return False
        self._written[key] = at
        self._pending[key] = max(at, self._pending.get(key, at))
        return True

    def drop(self, key: K) -> None:
        """Forget ``key``: its pending write is dropped and its next activity is written."""
        self._pending.pop(key, None)
        self._written.pop(key, None)

    async def flush(self) -> int:
        """Write everything pending, in batches of ``max_batch``; returns the rows handed over."""
        async with self._lock:
            total = 0
            while self._pending:
                keys = list(self._pending)[: self.max_batch]
                batch = {k: self._pending.pop(k) for k in keys}
                try:
                    await self._write_batch(batch)
                    total += len(batch)
                    self.writes += len(batch)
                except Exception:
                    log.exception("%s: writing %d activity rows failed", self.name, len(batch))
                    for k in batch:  # the next heartbeat queues them again
                        self._written.pop(k, None)
                    break
            self._forget_old()
            return total

    def _forget_old(self) -> None:
        cutoff = self._clock() - self.forget_after_ms
        for key in [k for k, t in self._written.items() if t < cutoff]:
            del self._written[key]

    async def run(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Flush every ``interval_s`` seconds until cancelled."""
        await every(interval_s, self.flush, name=f"{self.name} flush")


async def every(interval_s: float, fn: Callable[[], Awaitable[Any]], *, name: str) -> None:
    """Call ``fn`` every ``interval_s`` seconds until cancelled; failures are logged, not fatal."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic task %s failed", name)


class TimedCache(Generic[K]):
    """Remembers keys until their expiry (in clock milliseconds); bounded in size."""

    def __init__(self, *, clock: Clock = now_ms, max_size: int = 100_000) -> None:
        self._clock = clock
        self._expiry: dict[K, int] = {}
        self.max_size = max_size

    def __contains__(self, key: object) -> bool:
        expiry = self._expiry.get(key)  # type: ignore[arg-type]
        if expiry is None:
            return False
        if expiry <= self._clock():
            self._expiry.pop(key, None)  # type: ignore[arg-type]
            return False
        return True

    def add(self, key: K, ttl_ms: int) -> None:
        """Remember ``key`` for ``ttl_ms``."""
        if len(self._expiry) >= self.max_size:
            self.prune()
            if len(self._expiry) >= self.max_size:
                self._expiry.clear()
        self._expiry[key] = self._clock() + ttl_ms

    def discard(self, key: K) -> None:
        """Forget ``key``."""
        self._expiry.pop(key, None)

    def prune(self) -> None:
        """Drop expired keys."""
        now = self._clock()
        for key in [k for k, t in self._expiry.items() if t <= now]:
            del self._expiry[key]

    def __len__(self) -> int:
        return len(self._expiry)


SHARED_TTL_MS = 30_000
SHARED_REFRESH_S = 10.0


class SharedPresence:
    """Which keys have at least one present socket, in this process and (with Redis) in any.

    Each process knows its own sockets. With Redis it also keeps, per key, a sorted set
    ``<prefix><key>`` whose members are process tokens scored with an expiry time, added
    when the key becomes present here, removed when it stops, and refreshed every
    ``SHARED_REFRESH_S`` while present; a crashed process's entry expires within
    ``ttl_ms``. Redis errors are logged and answered from local knowledge. Start ``prefix``
    with the deployment's ``settings.redis_channel`` (``f"{channel}:focus:"``): deployments
    sharing one Redis must not see each other's keys.
    """

    def __init__(
        self, prefix: str, redis_url: str | None = None, *, ttl_ms: int = SHARED_TTL_MS
    ) -> None:
        from .ids import random_id

        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self._by_sid: dict[str, tuple[str, bool]] = {}  # sid -> (key, present)
        self._present: dict[str, set[str]] = {}  # key -> sids present
        self._redis_url = redis_url
        self._redis: Any = None
        self.token = random_id(16)

    async def start(self) -> None:
        """Connect to Redis when configured."""
        if self._redis_url and self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self._redis_url)

    async def stop(self) -> None:
        """Withdraw this process's entries and close Redis."""
        client, self._redis = self._redis, None
        if client is None:
            return
        try:
            for key in list(self._present):
                await client.zrem(self.prefix + key, self.token)
        except Exception:
            log.warning("could not withdraw %s entries from Redis", self.prefix, exc_info=True)
        finally:
            await client.aclose()

    async def set(self, sid: str, key: str, present: bool) -> None:
        """Record whether socket ``sid`` makes ``key`` present."""
        self._by_sid[sid] = (key, present)
        sids = self._present.get(key)
        if present:
            if sids is None:
                self._present[key] = {sid}
                await self._publish(key, True)
            else:
                sids.add(sid)
        elif sids is not None and sid in sids:
            sids.discard(sid)
            if not sids:
                del self._present[key]
                await self._publish(key, False)

    async def forget(self, sid: str) -> None:
        """Socket ``sid`` is gone."""
        entry = self._by_sid.pop(sid, None)
        if entry is not None:
            await self.set(sid, entry[0], False)
            self._by_sid.pop(sid, None)

    def local(self, key: str) -> bool:
        """True when a socket of this process makes ``key`` present."""
        return key in self._present

    async def anywhere(self, key: str) -> bool:
        """True when a socket of any process makes ``key`` present."""
        if key in self._present:
            return True
        if self._redis is None:
            return False
        try:
            found = await self._redis.zrangebyscore(
                self.prefix + key, now_ms(), "+inf", start=0, num=1
            )
        except Exception:
            log.warning("%s lookup in Redis failed", self.prefix, exc_info=True)
            return False
        return bool(found)

    async def refresh(self) -> None:
        """Extend this process's entries and drop expired ones."""
        if self._redis is None or not self._present:
            return
        now = now_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in list(self._present):
                name = self.prefix + key
                pipe.zadd(name, {self.token: now + self.ttl_ms})
                pipe.zremrangebyscore(name, "-inf", now)
                pipe.pexpire(name, self.ttl_ms * 2)
            await pipe.execute()

    async def run(self, interval_s: float = SHARED_REFRESH_S) -> None:
        """Refresh every ``interval_s`` seconds until cancelled."""
        await every(interval_s, self.refresh, name=f"{self.prefix} refresh")

    async def _publish(self, key: str, present: bool) -> None:
        if self._redis is None:
            return
        name = self.prefix + key
        try:
            if present:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(name, {self.token: now_ms() + self.ttl_ms})
                    pipe.pexpire(name, self.ttl_ms * 2)
                    await pipe.execute()
            else:
                await self._redis.zrem(name, self.token)
        except Exception:
            log.warning("%s update in Redis failed", self.prefix, exc_info=True)
