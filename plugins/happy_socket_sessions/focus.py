"""App focus (PROTOCOL.md §7): which users have an app in the foreground.

Each process knows its own user-scoped sockets. With Redis, a process also keeps a
sorted set per user, ``happy_socket:focus:<user>``, whose members are process tokens
scored with an expiry time (refreshed every few seconds while this process has a
foreground app of that user). Any process answers "does U have a foreground app?" from
its own sockets or that set; a crashed process's entry expires within ``TTL_MS``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from happy_socket import now_ms, random_id

log = logging.getLogger("happy_socket.sessions.focus")

TTL_MS = 30_000
REFRESH_S = 10.0


def focus_key(user_id: str) -> str:
    """The Redis key of ``user_id``'s foreground processes."""
    return f"happy_socket:focus:{user_id}"


class AppFocus:
    """Foreground state of user-scoped sockets, per user, optionally shared through Redis."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._state: dict[str, tuple[str, bool]] = {}  # sid -> (user, in foreground)
        self._active: dict[str, set[str]] = {}  # user -> sids in foreground
        self._redis_url = redis_url
        self._redis: Any = None
        self.token = random_id(16)

    async def start(self) -> None:
        """Connect to Redis when configured."""
        if self._redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self._redis_url)

    async def stop(self) -> None:
        """Withdraw this process's entries and close Redis."""
        if self._redis is None:
            return
        try:
            for user_id in list(self._active):
                await self._redis.zrem(focus_key(user_id), self.token)
        except Exception:
            log.warning("could not withdraw app focus entries from Redis", exc_info=True)
        finally:
            await self._redis.aclose()
            self._redis = None

    async def set(self, sid: str, user_id: str, active: bool) -> None:
        """Record the foreground state of socket ``sid`` of ``user_id``."""
        self._state[sid] = (user_id, active)
        sids = self._active.get(user_id)
        if active:
            if sids is None:
                self._active[user_id] = {sid}
                await self._publish(user_id, True)
            else:
                sids.add(sid)
        elif sids is not None:
            sids.discard(sid)
            if not sids:
                del self._active[user_id]
                await self._publish(user_id, False)

    async def forget(self, sid: str) -> None:
        """Socket ``sid`` is gone."""
        entry = self._state.pop(sid, None)
        if entry is not None:
            await self.set(sid, entry[0], False)
            self._state.pop(sid, None)

    def local_active(self, user_id: str) -> bool:
        """True when a socket of this process has ``user_id``'s app in the foreground."""
        return user_id in self._active

    async def active(self, user_id: str) -> bool:
        """True when any process has an app of ``user_id`` in the foreground."""
        if user_id in self._active:
            return True
        if self._redis is None:
            return False
        try:
            found = await self._redis.zrangebyscore(
                focus_key(user_id), now_ms(), "+inf", start=0, num=1
            )
        except Exception:
            log.warning("app focus lookup in Redis failed", exc_info=True)
            return False
        return bool(found)

    async def refresh(self) -> None:
        """Extend this process's entries (call every ``REFRESH_S``)."""
        if self._redis is None or not self._active:
            return
        expiry = now_ms() + TTL_MS
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in list(self._active):
                key = focus_key(user_id)
                pipe.zadd(key, {self.token: expiry})
                pipe.zremrangebyscore(key, "-inf", now_ms())
                pipe.pexpire(key, TTL_MS * 2)
            await pipe.execute()

    async def _publish(self, user_id: str, active: bool) -> None:
        if self._redis is None:
            return
        key = focus_key(user_id)
        try:
            if active:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(key, {self.token: now_ms() + TTL_MS})
                    pipe.pexpire(key, TTL_MS * 2)
                    await pipe.execute()
            else:
                await self._redis.zrem(key, self.token)
        except Exception:
            log.warning("app focus update in Redis failed", exc_info=True)

    async def run(self) -> None:
        """Refresh forever (until cancelled)."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except Exception:
                log.warning("app focus refresh failed", exc_info=True)
