"""Who serves which RPC method: the process-local registry and its Redis mirror.

The local registry is the truth about this process's sockets. With ``--redis`` every
process mirrors its registrations into Redis so that any process can find a holder:

- ``{p}:proc:{pid}``  liveness key of a process, refreshed every 0.5 s, TTL 2 s;
- ``{p}:procs``       set of process ids that published registrations;
- ``{p}:regs:{pid}``  set of the method keys a process holds members in;
- ``{p}:count:{pid}`` hash user -> that process's number of registrations of the user;
- ``{p}:m:{n}:{user}:{method}`` sorted set of ``{pid}|{sid}`` scored by registration time.

Registrations carry no TTL: a member counts as live exactly while its process's liveness
key exists, so a live registration never expires and a dead one is ignored within 2 s.
Cleanups (a closing socket, a withdrawing or dead process, a re-publish) run in slices of at
most ``slice_size`` method keys per Redis call, so they never block Redis for long.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import attrs

from . import scripts

Key = tuple[str, str]  # (user id, method)
T = TypeVar("T")


@attrs.frozen
class Holder:
    """A socket serving a method: ``pid`` is None for a socket of this process."""

    sid: str
    score: float
    pid: str | None = None


class LocalRegistry:
    """Registrations of this process's sockets, most recent first, counted per socket and user."""

    def __init__(self) -> None:
        self._holders: dict[Key, dict[str, float]] = {}
        self._by_sid: dict[str, set[Key]] = {}
        self._per_user: dict[str, int] = {}
        self._last = 0.0

    def stamp(self) -> float:
        """A strictly increasing registration time in microseconds (wall clock)."""
        now = float(time.time_ns() // 1000)
        self._last = now if now > self._last else self._last + 1
        return self._last

    def add(self, user: str, method: str, sid: str) -> float:
        """Register (or re-register, which makes it the latest) ``sid`` for ``method``."""
        score = self.stamp()
        holders = self._holders.setdefault((user, method), {})
        if sid not in holders:
            self._per_user[user] = self._per_user.get(user, 0) + 1
        holders[sid] = score
        self._by_sid.setdefault(sid, set()).add((user, method))
        return score

    def remove(self, user: str, method: str, sid: str) -> bool:
        """Drop ``sid``'s own registration of ``method``; True when it had one."""
        holders = self._holders.get((user, method))
        if holders is None or holders.pop(sid, None) is None:
            return False
        if not holders:
            del self._holders[(user, method)]
        self._uncount(user)
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
            if holders is not None and holders.pop(sid, None) is not None:
                self._uncount(key[0])
                if not holders:
                    del self._holders[key]
        return keys

    def _uncount(self, user: str) -> None:
        left = self._per_user.get(user, 0) - 1
        if left > 0:
            self._per_user[user] = left
        else:
            self._per_user.pop(user, None)

    def holders(self, user: str, method: str) -> list[Holder]:
        """Live local holders of ``method``, most recent first."""
        found = self._holders.get((user, method), {})
        return sorted((Holder(s, sc) for s, sc in found.items()), key=lambda h: -h.score)

    def holds(self, user: str, method: str, sid: str) -> bool:
        """True when ``sid`` serves ``method``."""
        return sid in self._holders.get((user, method), {})

    def sids(self, user: str, method: str) -> list[str]:
        """The sockets of this process serving ``method`` of ``user``."""
        return list(self._holders.get((user, method), {}))

    def of_socket(self, sid: str) -> int:
        """How many methods ``sid`` serves."""
        return len(self._by_sid.get(sid, ()))

    def of_user(self, user: str) -> int:
        """How many registrations the sockets of ``user`` hold on this process."""
        return self._per_user.get(user, 0)

    def user_counts(self) -> dict[str, int]:
        """Registrations per user (a copy)."""
        return dict(self._per_user)

    def items(self) -> Iterator[tuple[str, str, str, float]]:
        """Every registration as ``(user, method, sid, score)``."""
        for (user, method), holders in self._holders.items():
            for sid, score in holders.items():
                yield user, method, sid, score

    def __len__(self) -> int:
        return sum(len(h) for h in self._holders.values())


class LimitReached(Exception):
    """Redis refused a registration: the user holds the most registrations allowed."""


class RedisRegistry:
    """This process's view of the shared registry in Redis (one Redis, no cluster mode)."""

    def __init__(
        self, redis: Any, prefix: str, pid: str, ttl_ms: int = 2000, slice_size: int = 500
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.pid = pid
        self.ttl_ms = ttl_ms
        self.slice_size = max(1, slice_size)
        self._add = redis.register_script(scripts.ADD)
        self._remove = redis.register_script(scripts.REMOVE)
        self._lookup = redis.register_script(scripts.LOOKUP)
        self._publish = redis.register_script(scripts.PUBLISH)
        self._prune = redis.register_script(scripts.PRUNE)
        self._purge = redis.register_script(scripts.PURGE_SLICE)

    # -- key names -------------------------------------------------------------

    def proc_key(self, pid: str | None = None) -> str:
        """The liveness key of ``pid`` (default: this process)."""
        return f"{self.prefix}:proc:{pid or self.pid}"

    def regs_key(self, pid: str | None = None) -> str:
        """The set of method keys ``pid`` holds members in."""
        return f"{self.prefix}:regs:{pid or self.pid}"

    def count_key(self, pid: str | None = None) -> str:
        """The hash user -> number of registrations of ``pid``."""
        return f"{self.prefix}:count:{pid or self.pid}"

    @property
    def procs_key(self) -> str:
        """The set of processes that published registrations."""
        return f"{self.prefix}:procs"

    def method_key(self, user: str, method: str) -> str:
        """The sorted set of holders of ``method`` for ``user`` (length-prefixed: unambiguous)."""
        return f"{self.prefix}:m:{len(user)}:{user}:{method}"

    def key_of(self, method_key: str) -> Key | None:
        """``(user, method)`` of a method key (None when it is not one)."""
        head = f"{self.prefix}:m:"
        if not method_key.startswith(head):
            return None
        length, colon, rest = method_key[len(head) :].partition(":")
        if not colon or not length.isdigit() or rest[int(length) : int(length) + 1] != ":":
            return None
        return rest[: int(length)], rest[int(length) + 1 :]

    def member(self, sid: str) -> str:
        """This process's member name for ``sid``."""
        return f"{self.pid}|{sid}"

    # -- one registration ------------------------------------------------------

    async def add(
        self, user: str, method: str, sid: str, score: float, *, count: int = 1, limit: int = 0
    ) -> bool:
        """Publish a registration; False when this process's liveness key is missing.

        ``count`` is this process's number of registrations of ``user`` including this one;
        with ``limit`` > 0 a new registration that would give ``user`` more than ``limit``
        over all live processes raises LimitReached and stores nothing.
        """
        keys = [
            self.proc_key(),
            self.regs_key(),
            self.procs_key,
            self.method_key(user, method),
            self.count_key(),
        ]
        args = [
            self.member(sid),
            repr(score),
            self.pid,
            user,
            str(count),
            str(limit),
            f"{self.prefix}:proc:",
            f"{self.prefix}:count:",
        ]
        found = int(await self._add(keys=keys, args=args))
        if found < 0:
            raise LimitReached(user)
        return bool(found)

    async def remove(self, user: str, method: str, sid: str, *, count: int = 0) -> None:
        """Withdraw one registration (``count``: the user's registrations left here)."""
        await self.remove_many(user, [method], sid, count=count)

    async def remove_many(
        self, user: str, methods: Iterable[str], sid: str, *, count: int = 0
    ) -> int:
        """Withdraw registrations of one socket, one slice per call; returns the calls made."""
        zkeys = [self.method_key(user, method) for method in methods]
        calls = 0
        for chunk in _slices(zkeys, self.slice_size):
            args = [self.pid, self.member(sid), user, str(count), *chunk]
            await self._remove(keys=[self.regs_key(), self.count_key()], args=args)
            calls += 1
        return calls

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

    # -- this process as a whole ------------------------------------------------

    async def refresh(self) -> bool:
        """Extend this process's liveness; False when the key was gone (re-sync needed)."""
        return bool(await self.redis.set(self.proc_key(), "1", px=self.ttl_ms, xx=True))

    async def sync(self, local: LocalRegistry) -> int:
        """Make Redis hold exactly ``local`` for this process and mark it live, in slices.

        First the liveness key and every current registration (a dead-process sweep that
        finds the key stops touching this process), then this process's members it no
        longer holds and the counts of users it no longer serves. Returns the registrations.
        """
        registrations = list(local.items())
        counts = local.user_counts()
        head = [self.proc_key(), self.regs_key(), self.procs_key, self.count_key()]
        chunks = list(_slices(registrations, self.slice_size)) or [[]]
        for chunk in chunks:
            users = {user for user, _, _, _ in chunk}
            args: list[str] = [self.pid, str(self.ttl_ms), str(len(chunk))]
            for user, method, sid, score in chunk:
                args += [self.method_key(user, method), self.member(sid), repr(score)]
            for user in sorted(users):
                args += [user, str(counts.get(user, 0))]
            await self._publish(keys=head, args=args)
        await self._prune_members(local)
        await self._prune_counts(local)
        return len(registrations)

    async def _prune_members(self, local: LocalRegistry) -> None:
        async for batch in self._scan(self.redis.sscan, self.regs_key()):
            args = [self.pid, str(self.ttl_ms)]
            for raw in batch:
                zkey = _text(raw)
                key = self.key_of(zkey)
                kept = [self.member(s) for s in local.sids(*key)] if key is not None else []
                args += [zkey, str(len(kept)), *kept]
            await self._prune(keys=[self.regs_key(), self.proc_key()], args=args)

    async def _prune_counts(self, local: LocalRegistry) -> None:
        async for batch in self._scan(self.redis.hscan, self.count_key()):
            stale = [raw for raw in batch if local.of_user(_text(raw)) == 0]
            if stale:
                await self.redis.hdel(self.count_key(), *stale)

    async def _scan(self, command: Any, key: str) -> AsyncIterator[list[Any]]:
        """Batches of at most ``slice_size`` members (SSCAN) or fields (HSCAN) of ``key``."""
        cursor = 0
        while True:
            cursor, found = await command(key, cursor, count=self.slice_size)
            items = list(found)  # a set's members, or a hash's fields
            for chunk in _slices(items, self.slice_size):
                yield chunk
            if int(cursor) == 0:
                return

    async def purge(self, pid: str) -> tuple[int, bool]:
        """Remove the registrations of gone process ``pid`` slice by slice.

        Returns ``(slices, finished)``; not finished when ``pid`` turned out to be live (it
        is left alone). Safe to run from several processes at once (slices are disjoint).
        """
        slices = 0
        args = [self.proc_key(pid), self.regs_key(pid), self.count_key(pid), pid]
        while True:
            _, state = await self._purge(keys=[self.procs_key], args=[*args, str(self.slice_size)])
            if int(state) == 2:
                return slices, False
            slices += 1
            if int(state) == 1:
                return slices, True

    async def sweep(self) -> int:
        """Purge the registrations of processes whose liveness key is gone; returns how many."""
        pids = sorted(_text(p) for p in await self.redis.smembers(self.procs_key))
        pids = [p for p in pids if p != self.pid]
        if not pids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for pid in pids:
            pipe.exists(self.proc_key(pid))
        alive = await pipe.execute()
        purged = 0
        for pid, exists in zip(pids, alive, strict=True):
            if not exists:
                _, finished = await self.purge(pid)
                purged += finished
        return purged

    async def withdraw(self) -> None:
        """Remove every registration of this process and its liveness key (clean shutdown).

        The liveness key goes first, so lookups ignore this process at once; if the slices
        are interrupted, the other processes' sweeps finish the work.
        """
        await self.redis.delete(self.proc_key())
        await self.purge(self.pid)

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


def _slices(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
