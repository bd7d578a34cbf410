"""The RPC engine: registrations, the reconnect grace, and calls to local or remote holders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from happy_socket import ConfigError
from happy_socket.validation import refused_input

from .cluster import ABSENT, DISCONNECTED, INTERNAL, Cluster, Outcome
from .registry import Holder, LocalRegistry

if TYPE_CHECKING:
    from happy_socket import App

log = logging.getLogger("happy_socket.rpc")

DEFAULT_GRACE_S = 10.0
DEFAULT_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 5
DEFAULT_RECHECK_S = 1.0  # with Redis, a waiting call also re-reads the registry this often
DEFAULT_MAX_METHOD_LENGTH = 256  # real names: a 24-36 character id, ":", a short method name
DEFAULT_MAX_METHODS_PER_SOCKET = 100  # a daemon or a session registers about 10
DEFAULT_MAX_METHODS_PER_USER = 1000  # a daemon and ~100 sessions; all processes with Redis
DEFAULT_CLEANUP_SLICE = 500  # method keys per Redis call when registrations are cleaned up

TOO_MANY_ON_SOCKET = "Too many RPC methods on this socket"
TOO_MANY_FOR_USER = "Too many RPC methods for this user"

NOT_AVAILABLE: Outcome = {"ok": False, "error": "RPC method not available"}
SAME_SOCKET: Outcome = {"ok": False, "error": "Cannot call RPC on the same socket"}
TIMED_OUT: Outcome = {"ok": False, "error": "operation has timed out"}
INVALID_RESPONSE: Outcome = {"ok": False, "error": "Invalid RPC response"}

OUTCOME_LABELS = {
    NOT_AVAILABLE["error"]: "not_available",
    SAME_SOCKET["error"]: "same_socket",
    TIMED_OUT["error"]: "timeout",
    DISCONNECTED["error"]: "disconnected",
    INTERNAL["error"]: "internal_error",
    INVALID_RESPONSE["error"]: "invalid_response",
}
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0)


def outcome_label(outcome: Outcome) -> str:
    """The metrics label of a call's ack: ``ok`` or the kind of failure."""
    if outcome.get("ok"):
        return "ok"
    return OUTCOME_LABELS.get(str(outcome.get("error")), "error")


def option(app: App, name: str, default: Any) -> Any:
    """Plugin option ``rpc.<name>``: settings first, then ``HAPPY_SOCKET_RPC_<NAME>``."""
    value = app.settings.option("rpc", name, None)
    if value is None:
        value = os.environ.get(f"HAPPY_SOCKET_RPC_{name.upper()}")
    if value is None:
        return default
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"Option rpc.{name} = {value!r} is not a valid {type(default).__name__}."
        ) from None


def limit_option(app: App, name: str, default: int) -> int:
    """A plugin option that is a positive integer (a limit)."""
    value = int(option(app, name, default))
    if value < 1:
        raise ConfigError(f"Option rpc.{name} = {value!r} must be a positive integer.")
    return value


class RpcService:
    """Published as service ``rpc``: one per App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.grace = max(0.0, float(option(app, "grace", DEFAULT_GRACE_S)))
        self.timeout = max(0.001, float(option(app, "timeout", DEFAULT_TIMEOUT_S)))
        self.prefix = str(option(app, "redis_prefix", f"{app.settings.redis_channel}:rpc"))
        self.recheck = max(0.05, float(option(app, "recheck", DEFAULT_RECHECK_S)))
        self.max_method_length = limit_option(app, "max_method_length", DEFAULT_MAX_METHOD_LENGTH)
        self.max_per_socket = limit_option(
            app, "max_methods_per_socket", DEFAULT_MAX_METHODS_PER_SOCKET
        )
        self.max_per_user = limit_option(app, "max_methods_per_user", DEFAULT_MAX_METHODS_PER_USER)
        self.cleanup_slice = limit_option(app, "cleanup_slice", DEFAULT_CLEANUP_SLICE)
        self.local = LocalRegistry()
        self.cluster: Cluster | None = None
        self._users: dict[str, str] = {}  # connected sid -> user id
        self._gone: dict[str, asyncio.Future[None]] = {}
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        self.calls = Counter(
            "happy_socket_rpc_calls",
            "rpc-call acks by outcome (ok, not_available, same_socket, timeout, "
            "disconnected, invalid_response, internal_error).",
            ["outcome"],
            registry=app.metrics.registry,
        )
        self._children: dict[str, tuple[Any, Any]] = {}  # outcome -> (calls, call_seconds)
        self.notices_received = Counter(
            "happy_socket_rpc_notices_received",
            "'A method was registered' notices heard from other processes (a process hears a "
            "user's notices only while a call of that user waits for a holder).",
            registry=app.metrics.registry,
        )
        self.call_seconds = Histogram(
            "happy_socket_rpc_call_seconds",
            "Time from rpc-call to its ack, by outcome.",
            ["outcome"],
            buckets=CALL_BUCKETS,
            registry=app.metrics.registry,
        )

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster when Redis is configured."""
        if self.app.settings.redis and self.cluster is None:
            self.cluster = Cluster(
                self.app,
                self.local,
                url=self.app.settings.redis,
                prefix=self.prefix,
                on_request=self.serve_forwarded,
                on_registered=self._wake,
                slice_size=self.cleanup_slice,
                pubsub_mode=self.app.settings.redis_pubsub,
                notices_counter=self.notices_received,
            )
            await self.cluster.start()

    async def stop(self) -> None:
        """Leave the cluster (withdraws this process's registrations)."""
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None

    def connected(self, sid: str, user: str) -> None:
        """A socket of ``user`` joined this process."""
        self._users[sid] = user

    async def disconnected(self, sid: str) -> None:
        """A socket left: its registrations vanish and its calls in flight fail at once."""
        user = self._users.pop(sid, None)
        gone = self._gone.pop(sid, None)
        if gone is not None and not gone.done():
            gone.set_result(None)
        keys = self.local.drop_sid(sid)
        if self.cluster is not None and user is not None and keys:
            await self.cluster.removed_many(keys, sid)

    # -- registrations ---------------------------------------------------------

    async def register(self, user: str, method: str, sid: str) -> str | None:
        """``sid`` now serves ``method`` (and is its most recent holder).

        Returns the refusal (nothing stored) when the socket or the user already holds the
        most methods allowed (the user's count spans every live process with Redis).
        """
        if self._users.get(sid) != user:
            return None  # the socket already left: a registration must not outlive it
        fresh = not self.local.holds(user, method, sid)
        if fresh and self.local.of_socket(sid) >= self.max_per_socket:
            return TOO_MANY_ON_SOCKET
        if fresh and self.local.of_user(user) >= self.max_per_user:
            return TOO_MANY_FOR_USER
        score = self.local.add(user, method, sid)
        limit = self.max_per_user if fresh else 0  # a re-registration is never refused
        if self.cluster is not None and not await self.cluster.added(
            user, method, sid, score, limit
        ):
            self.local.remove(user, method, sid)
            return TOO_MANY_FOR_USER
        self._wake((user, method))
        return None

    async def unregister(self, user: str, method: str, sid: str) -> None:
        """Remove ``sid``'s own registration of ``method`` (if any)."""
        if self.local.remove(user, method, sid) and self.cluster is not None:
            await self.cluster.removed(user, method, sid)

    def _wake(self, key: tuple[str, str] | None) -> None:
        groups = self._waiters.values() if key is None else [self._waiters.get(key, set())]
        for events in groups:
            for event in events:
                event.set()

    # -- calls -----------------------------------------------------------------

    async def call(self, user: str, caller: str, method: str, params: Any) -> Outcome:
        """Route a call from socket ``caller``; the result is the ack (counted in metrics)."""
        started = time.perf_counter()
        outcome = await self._route(user, caller, method, params)
        label = outcome_label(outcome)
        children = self._children.get(label)
        if children is None:  # labelled children cached: ``labels()`` is slow on a hot path
            children = self._children[label] = (
                self.calls.labels(label),
                self.call_seconds.labels(label),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
        return outcome

    async def _route(self, user: str, caller: str, method: str, params: Any) -> Outcome:
        watch = _Watch(self.cluster, user)
        try:
            return await self._attempts(user, caller, method, params, watch)
        finally:
            watch.release()

    async def _attempts(
        self, user: str, caller: str, method: str, params: Any, watch: _Watch
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        tried: set[tuple[str | None, str]] = set()
        attempts = 0
        key = (user, method)
        while True:
            event = asyncio.Event()
            self._waiters.setdefault(key, set()).add(event)
            try:
                holders = [
                    h
                    for h in await self.holders(user, method)
                    if h.sid != caller and (h.pid, h.sid) not in tried
                ]
                if holders and attempts < MAX_ATTEMPTS:
                    target = holders[0]
                    attempts += 1
                    outcome = await self._forward(target, user, method, params)
                    if not outcome.get("absent"):
                        return outcome
                    tried.add((target.pid, target.sid))
                    continue
                if self.local.holds(user, method, caller):
                    return SAME_SOCKET
                remaining = deadline - loop.time()
                if remaining <= 0 or attempts >= MAX_ATTEMPTS:
                    return NOT_AVAILABLE
                if await watch.start():
                    continue  # look again: what was announced before the subscription is stored
                wait = remaining if self.cluster is None else min(remaining, self.recheck)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
            finally:
                events = self._waiters.get(key)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiters[key]

    async def holders(self, user: str, method: str) -> list[Holder]:
        """Live holders of ``method``, most recent first (local ones have ``pid`` None)."""
        local = self.local.holders(user, method)
        if self.cluster is None:
            return local
        remote = await self.cluster.lookup(user, method)
        if remote is None:
            return local
        mine = self.cluster.pid
        merged = local + [h for h in remote if h.pid != mine]
        return sorted(merged, key=lambda h: -h.score)

    async def _forward(self, target: Holder, user: str, method: str, params: Any) -> Outcome:
        if target.pid is None:
            return await self.call_local(user, method, target.sid, params, self.timeout)
        assert self.cluster is not None
        return await self.cluster.request(
            target.pid, target.sid, user, method, params, self.timeout
        )

    async def serve_forwarded(
        self, user: str, method: str, sid: str, params: Any, timeout: float
    ) -> Outcome:
        """A call forwarded by another process to one of this process's sockets."""
        return await self.call_local(user, method, sid, params, min(timeout, self.timeout))

    async def call_local(
        self, user: str, method: str, sid: str, params: Any, timeout: float
    ) -> Outcome:
        """Send ``rpc-request`` to a socket of this process; fail fast if it leaves."""
        if self._users.get(sid) != user or not self.local.holds(user, method, sid):
            return ABSENT
        loop = asyncio.get_running_loop()
        gone = self._gone.get(sid)
        if gone is None:
            gone = self._gone[sid] = loop.create_future()
        try:
            answer = await self.app.router.request(
                sid, "rpc-request", {"method": method, "params": params}
            )
        except LookupError:  # left between the check above and the send
            return DISCONNECTED
        except Exception as exc:
            log.warning("rpc: rpc-request to %s failed: %r", sid, exc)
            return INTERNAL
        # one future settled by whichever comes first: the answer, the socket leaving, the timer
        outcome: asyncio.Future[Outcome] = loop.create_future()

        def settle(value: Outcome) -> None:
            if not outcome.done():
                outcome.set_result(value)

        def on_answer(fut: asyncio.Future[tuple[Any, ...]]) -> None:
            if not fut.cancelled():
                args = fut.result()  # several ack arguments: the first is the answer
                result = args[0] if args else None
                # checked like any input: too deep to encode again, or NUL in a string
                settle(
                    INVALID_RESPONSE if refused_input(result) else {"ok": True, "result": result}
                )

        def on_gone(_: asyncio.Future[None]) -> None:
            settle(DISCONNECTED)

        answer.add_done_callback(on_answer)
        gone.add_done_callback(on_gone)
        timer = loop.call_later(timeout, settle, TIMED_OUT)
        try:
            return await outcome
        finally:
            timer.cancel()
            gone.remove_done_callback(on_gone)
            if not answer.done():
                answer.cancel()


class _Watch:
    """A waiting call's subscription to its user's registration notices (with Redis only)."""

    __slots__ = ("cluster", "state", "user")

    def __init__(self, cluster: Cluster | None, user: str) -> None:
        self.cluster = cluster
        self.user = user
        self.state = "idle" if cluster is not None else "none"

    async def start(self) -> bool:
        """Subscribe, once; True when the subscription was just confirmed."""
        if self.state != "idle" or self.cluster is None:
            return False
        self.state = "tried"
        if await self.cluster.watch(self.user):
            self.state = "watching"
            return True
        return False

    def release(self) -> None:
        """Unsubscribe if this call subscribed."""
        if self.state == "watching" and self.cluster is not None:
            self.cluster.unwatch(self.user)
        self.state = "done"
