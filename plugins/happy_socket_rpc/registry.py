"""Who serves which RPC method: the process-local registry and its Redis mirror.

The local registry is the truth about this process's sockets. With ``--redis`` every
process mirrors its registrations into Redis so that any process can find a holder:

- ``{p}:proc:{pid}``  liveness key of a process, refreshed every 0.5 s, TTL 2 s;
- ``{p}:procs``       set of process ids that published registrations;
- ``{p}:regs:{pid}``  set of the method keys a process holds members in;
- ``{p}:m:{n}:{user}:{method}`` sorted set of ``{pid}|{sid}`` scored by registration time.

Registrations carry no TTL: a member counts as live exactly while its process's liveness
key exists, so a live registration never expires and a dead one is ignored within 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import attrs

Key = tuple[str, str]  # (user id, method)


@attrs.frozen
class Holder:
    """A socket serving a method: ``pid`` is None for a socket of this process."""

    sid: str
    score: float
    pid: str | None = None


class LocalRegistry:
    """Registrations of this process's sockets, most recent first."""

    def __init__(self) -> None:
        self._holders: dict[Key, dict[str, float]] = {}
        self._by_sid: dict[str, set[Key]] = {}
        self._last = 0.0

    def stamp(self) -> float:
        """A strictly increasing registration time in microseconds (wall clock)."""
        now = float(time.time_ns() // 1000)
        self._last = now if now > self._last else self._last + 1
        return self._last

    def add(self, user: str, method: str, sid: str) -> float:
        """Register (or re-register, which makes it the latest) ``sid`` for ``method``."""
        score = self.stamp()
        self._holders.setdefault((user, method), {})[sid] = score
        self._by_sid.setdefault(sid, set()).add((user, method))
        return score

    def remove(self, user: str, method: str, sid: str) -> bool:
        """Drop ``sid``'s own registration of ``method``; True when it had one."""
        holders = self._holders.get((user, method))
        if holders is None or holders.pop(sid, None) is None:
            return False
        if not holders:
            del self._holders[(user, method)]
        keys = self._by_sid.get(sid)
        if keys is not None:
            keys.discard((user, method))
            if not keys:
                del self._by_sid[sid]
        return True

    def drop_sid(self, sid: str) -> list[Key]:
        """Forget every registration of ``sid``; returns the keys it held."""
        keys = sorted(self._by_sid.pop(sid, set()))
        for key in keys:
            holders = self._holders.get(key)
            if holders is not None:
                holders.pop(sid, None)
                if not holders:
                    del self._holders[key]
        return keys

    def holders(self, user: str, method: str) -> list[Holder]:
        """Live local holders of ``method``, most recent first."""
        found = self._holders.get((user, method), {})
        return sorted((Holder(s, sc) for s, sc in found.items()), key=lambda h: -h.score)

    def holds(self, user: str, method: str, sid: str) -> bool:
        """True when ``sid`` serves ``method``."""
        return sid in self._holders.get((user, method), {})

    def items(self) -> Iterator[tuple[str, str, str, float]]:
        """Every registration as ``(user, method, sid, score)``."""
        for (user, method), holders in self._holders.items():
            for sid, score in holders.items():
                yield user, method, sid, score

    def __len__(self) -> int:
        return sum(len(h) for h in self._holders.values())


_PURGE = """
local function purge(regs, pid)
  local mine = pid .. '|'
  for _, z in ipairs(redis.call('SMEMBERS', regs)) do
    for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do
      if string.sub(m, 1, #mine) == mine then redis.call('ZREM', z, m) end
    end
  end
  redis.call('DEL', regs)
end
"""

# KEYS: proc, regs, procs, zkey  ARGV: member, score, pid  -> 1 when the process key exists
ADD = """
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[2], KEYS[4])
redis.call('SADD', KEYS[3], ARGV[3])
return redis.call('EXISTS', KEYS[1])
"""

# KEYS: regs, zkey  ARGV: member, pid
REMOVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
local mine = ARGV[2] .. '|'
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(m, 1, #mine) == mine then return 0 end
end
redis.call('SREM', KEYS[1], KEYS[2])
return 1
"""

# KEYS: zkey  ARGV: proc key prefix  -> flat list member, score (live processes only)
LOOKUP = """
local all = redis.call('ZREVRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out, alive = {}, {}
for i = 1, #all, 2 do
  local m = all[i]
  local bar = string.find(m, '|', 1, true)
  if bar then
    local pid = string.sub(m, 1, bar - 1)
    local ok = alive[pid]
    if ok == nil then
      ok = redis.call('EXISTS', ARGV[1] .. pid) == 1
      alive[pid] = ok
    end
    if ok then
      out[#out + 1] = m
      out[#out + 1] = all[i + 1]
    end
  end
end
return out
"""

# KEYS: proc, regs, procs  ARGV: pid, ttl_ms, then (zkey, member, score)*
SYNC = (
    _PURGE
    + """
purge(KEYS[2], ARGV[1])
for i = 3, #ARGV, 3 do
  redis.call('ZADD', ARGV[i], ARGV[i + 2], ARGV[i + 1])
  redis.call('SADD', KEYS[2], ARGV[i])
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1
"""
)

# KEYS: procs  ARGV: proc key prefix, regs key prefix  -> number of dead processes purged
SWEEP = (
    _PURGE
    + """
local n = 0
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. pid) == 0 then
    purge(ARGV[2] .. pid, pid)
    redis.call('SREM', KEYS[1], pid)
    n = n + 1
  end
end
return n
"""
)

# KEYS: proc, regs, procs  ARGV: pid
WITHDRAW = (
    _PURGE
    + """
purge(KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""
)


class RedisRegistry:
    """This process's view of the shared registry in Redis (one Redis, no cluster mode)."""

    def __init__(self, redis: Any, prefix: str, pid: str, ttl_ms: int = 2000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.pid = pid
        self.ttl_ms = ttl_ms
        self._add = redis.register_script(ADD)
        self._remove = redis.register_script(REMOVE)
        self._lookup = redis.register_script(LOOKUP)
        self._sync = redis.register_script(SYNC)
        self._sweep = redis.register_script(SWEEP)
        self._withdraw = redis.register_script(WITHDRAW)

    # -- key names -------------------------------------------------------------

    def proc_key(self, pid: str | None = None) -> str:
        """The liveness key of ``pid`` (default: this process)."""
        return f"{self.prefix}:proc:{pid or self.pid}"

    def regs_key(self, pid: str | None = None) -> str:
        """The set of method keys ``pid`` holds members in."""
        return f"{self.prefix}:regs:{pid or self.pid}"

    @property
    def procs_key(self) -> str:
        """The set of processes that published registrations."""
        return f"{self.prefix}:procs"

    def method_key(self, user: str, method: str) -> str:
        """The sorted set of holders of ``method`` for ``user`` (length-prefixed: unambiguous)."""
        return f"{self.prefix}:m:{len(user)}:{user}:{method}"

    def member(self, sid: str) -> str:
        """This process's member name for ``sid``."""
        return f"{self.pid}|{sid}"

    # -- operations ------------------------------------------------------------

    async def add(self, user: str, method: str, sid: str, score: float) -> bool:
        """Publish a registration; False when this process's liveness key is missing."""
        keys = [self.proc_key(), self.regs_key(), self.procs_key, self.method_key(user, method)]
        found = await self._add(keys=keys, args=[self.member(sid), repr(score), self.pid])
        return bool(found)

    async def remove(self, user: str, method: str, sid: str) -> None:
        """Withdraw one registration."""
        keys = [self.regs_key(), self.method_key(user, method)]
        await self._remove(keys=keys, args=[self.member(sid), self.pid])

    async def lookup(self, user: str, method: str) -> list[Holder]:
        """Holders on live processes, most recent first (this process's included)."""
        flat = await self._lookup(
            keys=[self.method_key(user, method)], args=[f"{self.prefix}:proc:"]
        )
        holders = []
        for i in range(0, len(flat), 2):
            member = _text(flat[i])
            pid, _, sid = member.partition("|")
            holders.append(Holder(sid, float(flat[i + 1]), pid))
        return holders

    async def refresh(self) -> bool:
        """Extend this process's liveness; False when the key was gone (re-sync needed)."""
        return bool(await self.redis.set(self.proc_key(), "1", px=self.ttl_ms, xx=True))

    async def sync(self, local: LocalRegistry) -> int:
        """Replace this process's registrations in Redis with ``local`` and mark it live."""
        args: list[str] = [self.pid, str(self.ttl_ms)]
        for user, method, sid, score in local.items():
            args += [self.method_key(user, method), self.member(sid), repr(score)]
        await self._sync(keys=[self.proc_key(), self.regs_key(), self.procs_key], args=args)
        return len(local)

    async def sweep(self) -> int:
        """Purge the registrations of processes whose liveness key is gone."""
        purged = await self._sweep(
            keys=[self.procs_key], args=[f"{self.prefix}:proc:", f"{self.prefix}:regs:"]
        )
        return int(purged)

    async def withdraw(self) -> None:
        """Remove every registration of this process and its liveness key (clean shutdown)."""
        await self._withdraw(
            keys=[self.proc_key(), self.regs_key(), self.procs_key], args=[self.pid]
        )

    async def alive(self, pids: list[str], channel_of: Any) -> dict[str, bool]:
        """Which of ``pids`` are alive: liveness key present and someone listens on its channel."""
        pipe = self.redis.pipeline(transaction=False)
        for pid in pids:
            pipe.exists(self.proc_key(pid))
            pipe.pubsub_numsub(channel_of(pid))
        results = await pipe.execute()
        out = {}
        for i, pid in enumerate(pids):
            exists, numsub = results[2 * i], results[2 * i + 1]
            listeners = numsub[0][1] if numsub else 0
            out[pid] = bool(exists) and int(listeners) > 0
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
