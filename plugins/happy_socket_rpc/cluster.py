"""RPC across processes over Redis: liveness, registry sync, request forwarding, death detection.

Each process listens on its own channel ``{p}:ch:{pid}`` (requests for its sockets, answers
to its callers) and on ``{p}:reg`` (after a Redis outage a process re-published its
registrations: wake every waiting call). "A method was registered" goes only to the
processes where a call of that user waits (:mod:`.notices`).

A caller publishes a request to the holder's process and waits for the answer, checking
every 0.2 s that the target still listens on its channel (a killed process's Redis
connection closes at once) and that its liveness key exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from .notices import RegistrationNotices
from .registry import Key, LimitReached, LocalRegistry, RedisRegistry

if TYPE_CHECKING:
    from happy_socket import App

log = logging.getLogger("happy_socket.rpc")

HEARTBEAT_S = 0.5
LIVENESS_TTL_MS = 2000
SWEEP_S = 1.0
MONITOR_S = 0.2
RESUBSCRIBE_S = 0.2
REDIS_FAILURE_GRACE_S = 1.0
WITHDRAW_S = 5.0  # a clean shutdown waits this long for its cleanup; the sweeps finish the rest

Outcome = dict[str, Any]
ABSENT: Outcome = {"absent": True}  # the target does not (or no longer) serve the method
DISCONNECTED: Outcome = {"ok": False, "error": "RPC target disconnected"}
INTERNAL: Outcome = {"ok": False, "error": "Internal error"}

RequestHandler = Callable[[str, str, str, Any, float], Awaitable[Outcome]]
NotifyHandler = Callable[[tuple[str, str] | None], None]  # None: wake every waiting call


class _Pending:
    __slots__ = ("future", "pid")

    def __init__(self, future: asyncio.Future[Outcome], pid: str) -> None:
        self.future = future
        self.pid = pid


class Cluster:
    """This process's membership in the RPC cluster (only with ``settings.redis``)."""

    def __init__(
        self,
        app: App,
        local: LocalRegistry,
        *,
        url: str,
        prefix: str,
        on_request: RequestHandler,
        on_registered: NotifyHandler,
        slice_size: int = 500,
        pubsub_mode: str = "auto",
        notices_counter: Any = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.app = app
        self.local = local
        self.pid = uuid.uuid4().hex[:16]
        self.prefix = prefix
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=5
        )
        self.registry = RedisRegistry(self.redis, prefix, self.pid, LIVENESS_TTL_MS, slice_size)
        self._on_request = on_request
        self._on_registered = on_registered
        self.notices = RegistrationNotices(url, prefix, pubsub_mode, on_registered, notices_counter)
        self._pending: dict[str, _Pending] = {}
        self._lock = asyncio.Lock()
        self._dirty = True  # registrations in Redis may differ from the local ones
        self._subscribed = asyncio.Event()
        self._failing_since: float | None = None
        self._loops: list[asyncio.Task[Any]] = []
        self._stopped = False
        self._lookup_failing = False

    @property
    def channel(self) -> str:
        """This process's channel."""
        return self.channel_of(self.pid)

    def channel_of(self, pid: str) -> str:
        """The channel of process ``pid``."""
        return f"{self.prefix}:ch:{pid}"

    @property
    def notify_channel(self) -> str:
        """Where a process that re-published its registrations wakes every waiting call."""
        return f"{self.prefix}:reg"

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, publish this process as live, start the background loops."""
        self._loops.append(self.app.spawn(self._listen(), name="rpc-listen"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5)
        await self.notices.start()
        await self._resync()
        self._loops.append(self.app.spawn(self._heartbeat(), name="rpc-heartbeat"))
        self._loops.append(self.app.spawn(self._monitor(), name="rpc-monitor"))
        self._loops.append(self.app.spawn(self._sweeper(), name="rpc-sweep"))
        log.info("rpc cluster member %s (prefix %s)", self.pid, self.prefix)

    async def stop(self) -> None:
        """Stop the loops, then withdraw this process's registrations and liveness key."""
        self._stopped = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        for pending in list(self._pending.values()):
            _settle(pending.future, DISCONNECTED)
        await self.notices.stop()
        try:
            await asyncio.wait_for(self.registry.withdraw(), WITHDRAW_S)
        except Exception as exc:
            log.warning("rpc: could not withdraw registrations from Redis: %r", exc)
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # -- registry mirror -------------------------------------------------------

    async def added(self, user: str, method: str, sid: str, score: float, limit: int) -> bool:
        """Mirror a new local registration and announce it.

        False when Redis refuses it: ``user`` would hold more than ``limit`` registrations
        over all live processes (nothing was stored in Redis). When Redis does not answer the
        registration is kept (published with the next re-publish, without that check).
        """
        async with self._lock:
            if self._dirty or self._stopped:
                return True  # the next heartbeat re-publishes everything
            try:
                count = self.local.of_user(user)
                if not await self.registry.add(user, method, sid, score, count=count, limit=limit):
                    self._dirty = True
                self.notices.announce(user, method)
            except LimitReached:
                return False
            except Exception as exc:
                self._failed("register", exc)
            return True

    async def removed(self, user: str, method: str, sid: str) -> None:
        """Mirror a removed local registration."""
        await self.removed_many([(user, method)], sid)

    async def removed_many(self, keys: list[Key], sid: str) -> None:
        """Mirror the removal of a socket's registrations, one slice per Redis call.

        The lock is taken per slice, so registrations of other sockets interleave.
        """
        size = self.registry.slice_size
        by_user: dict[str, list[str]] = {}
        for user, method in keys:
            by_user.setdefault(user, []).append(method)
        for user, methods in by_user.items():
            for start in range(0, len(methods), size):
                async with self._lock:
                    if self._dirty or self._stopped:
                        return  # the re-publish prunes them
                    try:
                        count = self.local.of_user(user)
                        chunk = methods[start : start + size]
                        await self.registry.remove_many(user, chunk, sid, count=count)
                    except Exception as exc:
                        self._failed("unregister", exc)
                        return

    async def _resync(self) -> None:
        async with self._lock:
            try:
                count = await self.registry.sync(self.local)
            except Exception as exc:
                self._failed("sync", exc)
                return
            if self._dirty:
                log.info("rpc: published %d registrations of process %s", count, self.pid)
            self._dirty = False
            # a registration may have been announced while we could not hear it
            await self._announce_all()

    async def _announce_all(self) -> None:
        with contextlib.suppress(Exception):  # "[]" wakes every waiting call everywhere
            await self.redis.publish(self.notify_channel, b"[]")

    async def watch(self, user: str) -> bool:
        """Hear ``user``'s registrations on other processes while a call waits (see notices)."""
        return await self.notices.watch(user)

    def unwatch(self, user: str) -> None:
        """A call of ``user`` stopped waiting."""
        self.notices.unwatch(user)

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._dirty:
            log.warning("rpc: Redis %s failed (%r); will re-publish when it answers", what, exc)
        self._dirty = True

    async def lookup(self, user: str, method: str) -> list[Any] | None:
        """Live holders from Redis, or None when Redis does not answer."""
        try:
            holders = await self.registry.lookup(user, method)
        except Exception as exc:
            if not self._lookup_failing:
                log.warning("rpc: lookups in Redis fail (%r); using local holders only", exc)
            self._lookup_failing = True
            return None
        if self._lookup_failing:
            log.info("rpc: lookups in Redis work again")
        self._lookup_failing = False
        return holders

    # -- background loops ------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                if self._dirty or not await self.registry.refresh():
                    await self._resync()
            except Exception as exc:
                self._failed("heartbeat", exc)

    async def _sweeper(self) -> None:
        """Purge dead processes' registrations (its own loop: a long purge never delays the
        heartbeat, which would let this process's own liveness key expire)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                purged = await self.registry.sweep()
            except Exception as exc:
                log.debug("rpc: sweep failed: %r", exc)
                continue
            if purged:
                log.info("rpc: purged registrations of %d dead process(es)", purged)

    async def _listen(self) -> None:
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, self.notify_channel)
                if not first:
                    log.info("rpc: listening again on %s", self.channel)
                    self._dirty = True  # Redis may have restarted: re-publish at once
                    self._fail_all("resubscribed")
                    self._on_registered(None)  # wake every waiting call
                first = False
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._subscribed.is_set():
                    log.warning("rpc: lost the Redis subscription (%r); retrying", exc)
                self._subscribed.clear()
                self._fail_all("subscription lost")
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_S)
            pids = sorted({p.pid for p in self._pending.values()})
            if not pids:
                self._failing_since = None
                continue
            try:
                alive = await self.registry.alive(pids, self.channel_of)
            except Exception as exc:
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                if now - self._failing_since >= REDIS_FAILURE_GRACE_S:
                    log.warning("rpc: Redis unreachable (%r): failing calls in flight", exc)
                    self._fail_all("redis unreachable")
                continue
            self._failing_since = None
            for pending in list(self._pending.values()):
                if not alive.get(pending.pid, True):
                    _settle(pending.future, DISCONNECTED)

    def _fail_all(self, why: str) -> None:
        for pending in list(self._pending.values()):
            if _settle(pending.future, DISCONNECTED):
                log.info("rpc: call to process %s failed: %s", pending.pid, why)

    # -- messages --------------------------------------------------------------

    def _dispatch(self, channel: Any, data: Any) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if (channel.decode() if isinstance(channel, bytes) else channel) == self.notify_channel:
            if isinstance(msg, list) and len(msg) == 2:  # from a process of an older release
                self._on_registered((str(msg[0]), str(msg[1])))
            elif msg == []:
                self._on_registered(None)
            return
        if not isinstance(msg, dict):
            return
        if msg.get("t") == "res":
            pending = self._pending.get(str(msg.get("id")))
            if pending is not None and isinstance(msg.get("r"), dict):
                _settle(pending.future, msg["r"])
        elif msg.get("t") == "req":
            self.app.spawn(self._serve(msg), name="rpc-serve")

    async def _serve(self, msg: dict[str, Any]) -> None:
        try:
            outcome = await self._on_request(
                str(msg["user"]),
                str(msg["method"]),
                str(msg["sid"]),
                msg.get("params"),
                float(msg["timeout"]),
            )
        except Exception:
            log.exception("rpc: serving a forwarded request failed")
            outcome = INTERNAL
        try:
            data = _dumps({"t": "res", "id": msg.get("id"), "r": outcome})
        except (TypeError, orjson.JSONEncodeError):  # e.g. binary in the holder's answer
            log.warning("rpc: the answer to a forwarded call is not JSON")
            data = _dumps({"t": "res", "id": msg.get("id"), "r": INTERNAL})
        try:
            await self.redis.publish(self.channel_of(str(msg.get("from"))), data)
        except Exception as exc:
            log.warning("rpc: could not return an answer to process %s: %r", msg.get("from"), exc)

    async def request(
        self, pid: str, sid: str, user: str, method: str, params: Any, timeout: float
    ) -> Outcome:
        """Forward a call to socket ``sid`` of process ``pid``; ABSENT when it never got there."""
        if not self._subscribed.is_set():
            return ABSENT  # the answer could not reach us: wait for the subscription instead
        call_id = uuid.uuid4().hex
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = _Pending(future, pid)
        message = {
            "t": "req",
            "id": call_id,
            "from": self.pid,
            "sid": sid,
            "user": user,
            "method": method,
            "params": params,
            "timeout": timeout,
        }
        try:
            try:
                listeners = await self.redis.publish(self.channel_of(pid), _dumps(message))
            except (TypeError, orjson.JSONEncodeError):
                return {"ok": False, "error": "Invalid parameters"}
            except Exception as exc:
                log.warning("rpc: cannot forward to process %s: %r", pid, exc)
                return ABSENT
            if not listeners:
                return ABSENT
            try:
                return await asyncio.wait_for(future, timeout + 2.0)
            except TimeoutError:
                return {"ok": False, "error": "operation has timed out"}
        finally:
            self._pending.pop(call_id, None)


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> bool:
    if future.done():
        return False
    future.set_result(outcome)
    return True


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)
