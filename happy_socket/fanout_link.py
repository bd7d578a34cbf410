"""The Redis side of the per-user fan-out: pub/sub mode, an ordered publish queue, one listener.

- **Mode**, chosen at start: sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``) when the server is
  Redis ≥ 7 (or a fork reporting such a version), plain ``PUBLISH``/``SUBSCRIBE`` otherwise or
  when ``--redis-pubsub plain`` asks for it.
- **Publishing**: every publish goes through one queue drained by one task that sends what
  queued meanwhile as one pipeline (one round trip, order kept: a process's messages reach
  Redis in the order they were queued). Each publish may carry a future for its receiver
  count (``PUBLISH``'s answer).
- **Listening**: one pub/sub connection. A subscribe returns once Redis confirmed it (the
  listener reads the confirmation), so a message published after it is received. When the
  connection breaks the listener reconnects (1, 2, 4 … ≤ 10 s) and calls ``on_connected`` so
  the owner subscribes its channels again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .errors import ConfigError, reason_of

log = logging.getLogger("happy_socket.fanout")

MODES = ("auto", "sharded", "plain")
SUBSCRIBE_TIMEOUT_S = 3.0
SUBSCRIBE_CHUNK = 500  # channels per (S)SUBSCRIBE command when subscribing many at once
PIPELINE_MAX = 1000  # publishes per round trip
OUTBOX_MAX = 200_000  # queued publishes kept while Redis does not answer; older ones are dropped
RECONNECT_MAX_S = 10.0

Published = tuple[str, bytes, "asyncio.Future[int] | None", Any]


async def check_redis(url: str) -> None:
    """Refuse, in one sentence, a Redis that does not answer or runs in cluster mode."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        try:
            await client.ping()
            info = await client.info("cluster")
        except Exception as exc:
            raise ConfigError(f"Cannot connect to Redis at {url}: {reason_of(exc)}.") from exc
        if str(info.get("cluster_enabled", 0)) == "1":
            raise ConfigError(
                f"Redis at {url} runs in cluster mode, which happy-socket does not support; "
                "use a single Redis node (or a Sentinel-managed primary's address)."
            )
    finally:
        await client.aclose()


class RedisLink:
    """One process's publisher and subscriber connections to Redis."""

    def __init__(
        self,
        url: str,
        mode: str = "auto",
        *,
        on_connected: Callable[[bool], Awaitable[None]],
        on_published: Callable[[Any, int], None] = lambda note, count: None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"Redis pub/sub mode {mode!r} is not one of {', '.join(MODES)}.")
        self.url = url
        self.mode = mode
        self.sharded = False
        self.version = "?"
        self._on_connected = on_connected
        self._on_published = on_published
        self._client: Any = None
        self._pubsub: Any = None
        self._outbox: list[Published] = []
        self._wake = asyncio.Event()
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self.connected = asyncio.Event()  # the listener's connection is up
        self.dropped = 0  # publishes dropped because Redis did not answer
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        """Connect the publisher and choose the mode; a line saying which."""
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            self.url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=10
        )
        info = await self._client.info("server")
        self.version = str(info.get("redis_version", "0"))
        try:
            major = int(self.version.split(".")[0])
        except ValueError:
            major = 0
        if self.mode == "sharded" and major < 7:
            raise ConfigError(
                f"--redis-pubsub sharded needs Redis 7 or later (SSUBSCRIBE); {self.url} "
                f"runs {self.version}. Use --redis-pubsub plain or auto."
            )
        self.sharded = self.mode == "sharded" or (self.mode == "auto" and major >= 7)
        kind = "sharded (SPUBLISH/SSUBSCRIBE)" if self.sharded else "plain (PUBLISH/SUBSCRIBE)"
        return f"{kind} pub/sub, Redis {self.version}, mode {self.mode}"

    def spawn(self, coro: Any, name: str) -> None:
        """Run ``coro`` until :meth:`close` (the listener, the publisher, their helpers)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the spawned tasks, then close both connections (queued publishes are dropped)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in (self._pubsub, self._client):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.aclose()
        self._pubsub = self._client = None

    # -- publishing -------------------------------------------------------------

    def publish(
        self,
        channel: str,
        payload: bytes,
        result: asyncio.Future[int] | None = None,
        note: Any = None,
    ) -> None:
        """Queue a publish (sent in queue order); ``result`` gets its receiver count, or -1."""
        if len(self._outbox) >= OUTBOX_MAX:
            _, _, lost, _ = self._outbox.pop(0)
            self.dropped += 1
            if lost is not None and not lost.done():
                lost.set_result(-1)
        self._outbox.append((channel, payload, result, note))
        self._wake.set()

    async def run_publisher(self) -> None:
        """Send queued publishes, one pipeline per batch, until cancelled."""
        failing = False
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = self._outbox[:PIPELINE_MAX]
                del self._outbox[:PIPELINE_MAX]
                try:
                    counts = await self._send(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.dropped += len(batch)
                    if not failing:
                        log.warning("fan-out: publishing to Redis failed (%r); dropping", exc)
                    failing = True
                    counts = [-1] * len(batch)
                else:
                    if failing:
                        log.info("fan-out: publishing to Redis works again")
                    failing = False
                for (_, _, result, note), count in zip(batch, counts, strict=True):
                    if result is not None and not result.done():
                        result.set_result(int(count))
                    if note is not None:
                        self._on_published(note, int(count))

    async def _send(self, batch: list[Published]) -> list[int]:
        if len(batch) == 1:
            channel, payload, _, _ = batch[0]
            command = "SPUBLISH" if self.sharded else "PUBLISH"
            return [await self._client.execute_command(command, channel, payload)]
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, payload, _, _ in batch:
                if self.sharded:
                    pipe.spublish(channel, payload)
                else:
                    pipe.publish(channel, payload)
            return list(await pipe.execute())

    # -- subscribing --------------------------------------------------------------

    async def subscribe(self, channels: list[str], *, wait: bool = True) -> None:
        """Subscribe to ``channels``; with ``wait``, return once Redis confirmed each."""
        if self._pubsub is None or not self.connected.is_set():
            raise ConnectionError("the fan-out listener is not connected to Redis")
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            chunk = channels[start : start + SUBSCRIBE_CHUNK]
            if wait:
                for channel in chunk:
                    fut = self._confirm.get(channel.encode())
                    if fut is None or fut.done():
                        fut = self._confirm[channel.encode()] = loop.create_future()
                    futures.append(fut)
            if self.sharded:
                await self._pubsub.ssubscribe(*chunk)
            else:
                await self._pubsub.subscribe(*chunk)
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), SUBSCRIBE_TIMEOUT_S)

    async def unsubscribe(self, channels: list[str]) -> None:
        """Unsubscribe (nothing to do when the connection is down: it has none)."""
        if self._pubsub is None or not self.connected.is_set():
            return
        if self.sharded:
            await self._pubsub.sunsubscribe(*channels)
        else:
            await self._pubsub.unsubscribe(*channels)

    async def messages(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """``(channel, data)`` of every message received, across reconnections, forever."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=2.0,
            socket_keepalive=True,
            health_check_interval=15,
            retry=Retry(NoBackoff(), 0),  # a broken connection surfaces here: we resubscribe
        )
        first, pause = True, 1.0
        try:
            while True:
                self._pubsub = client.pubsub()
                try:
                    await self._pubsub.connect()
                    self.connected.set()
                    await self._on_connected(first)
                    if not first:
                        log.info("fan-out: listening to Redis again")
                    first, pause = False, 1.0
                    while True:
                        msg = await self._pubsub.get_message(timeout=10.0)
                        if msg is None:
                            continue
                        kind = msg["type"]
                        if kind in ("message", "smessage"):
                            yield msg["channel"], msg["data"]
                        elif kind in ("subscribe", "ssubscribe"):
                            fut = self._confirm.pop(msg["channel"], None)
                            if fut is not None and not fut.done():
                                fut.set_result(None)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.connected.is_set():
                        log.warning("fan-out: lost the Redis subscription (%r); retrying", exc)
                    self.connected.clear()
                    for fut in self._confirm.values():
                        if not fut.done():
                            fut.set_exception(ConnectionError("Redis subscription lost"))
                    self._confirm.clear()
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RECONNECT_MAX_S)
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await client.aclose()
