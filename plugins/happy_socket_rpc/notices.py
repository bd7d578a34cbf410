""" "A method was registered" notices across processes, heard only where a call waits for one.

A call whose method has no holder yet waits out its grace window. When the method is
registered on another process, that process announces it on the user's notice channel
``{prefix}:reg:{user}``; only processes with a call of that user waiting are subscribed to
it, so a registration costs one publish that usually reaches nobody (the CLI registers its
methods at start, long before anyone calls them).

No notice is missed: a call subscribes (and waits for Redis to confirm it) *before* it looks
up the holders again, and a registration is written to Redis *before* it is announced. So
either the look-up finds the registration, or the announcement comes after the subscription
and is heard. Should one still be missed (Redis restarted), the call looks again every
``recheck`` seconds anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from happy_socket.fanout_link import RedisLink

log = logging.getLogger("happy_socket.rpc")

NotifyHandler = Callable[[tuple[str, str] | None], None]  # None: wake every waiting call


class RegistrationNotices:
    """Per-user registration notices over Redis pub/sub (sharded where Redis offers it)."""

    def __init__(
        self, url: str, prefix: str, mode: str, on_notice: NotifyHandler, counter: Any = None
    ) -> None:
        self.prefix = prefix
        self.link = RedisLink(url, mode, on_connected=self._connected)
        self.counter = counter  # counts the notices heard (``inc()``), e.g. a prometheus Counter
        self._on_notice = on_notice
        self._watchers: dict[str, int] = {}  # user -> calls waiting on this process
        self._subscribed: set[str] = set()
        self._lock = asyncio.Lock()  # subscribes and unsubscribes reach Redis in order

    def channel(self, user: str) -> str:
        """The notice channel of ``user``."""
        return f"{self.prefix}:reg:{user}"

    async def start(self) -> None:
        """Connect, choose the pub/sub mode and start listening."""
        mode = await self.link.start()
        log.info("rpc: registration notices on %s:reg:<user>, %s", self.prefix, mode)
        self.link.spawn(self.link.run_publisher(), "rpc-notices-publish")
        self.link.spawn(self._listen(), "rpc-notices-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.link.connected.wait(), 5)

    async def stop(self) -> None:
        """Stop listening and publishing."""
        await self.link.close()

    def announce(self, user: str, method: str) -> None:
        """Tell the processes where a call of ``user`` waits that ``method`` is registered."""
        self.link.publish(self.channel(user), orjson.dumps([user, method]))

    @property
    def watched(self) -> int:
        """Users whose notice channel this process is subscribed to."""
        return len(self._subscribed)

    async def watch(self, user: str) -> bool:
        """Hear ``user``'s notices from now on (False: Redis did not confirm; poll instead).

        Every successful ``watch`` must be paired with one :meth:`unwatch`.
        """
        self._watchers[user] = self._watchers.get(user, 0) + 1
        try:
            async with self._lock:
                if user not in self._subscribed:
                    await self.link.subscribe([self.channel(user)])
                    self._subscribed.add(user)
        except Exception as exc:
            log.debug("rpc: no notice subscription for a waiting call: %r", exc)
            self.unwatch(user)
            return False
        return True

    def unwatch(self, user: str) -> None:
        """One call of ``user`` stopped waiting; the last one unsubscribes."""
        left = self._watchers.get(user, 0) - 1
        if left > 0:
            self._watchers[user] = left
            return
        self._watchers.pop(user, None)
        if user in self._subscribed:
            self.link.spawn(self._drop(user), "rpc-notices-unsubscribe")

    async def _drop(self, user: str) -> None:
        async with self._lock:
            if user in self._watchers or user not in self._subscribed:
                return  # another call started waiting meanwhile: keep the subscription
            self._subscribed.discard(user)
            with contextlib.suppress(Exception):
                await self.link.unsubscribe([self.channel(user)])

    async def _connected(self, first: bool) -> None:
        if first:
            return
        # Redis came back (maybe restarted): subscribe again, and let every waiting call look
        # again, since a notice may have been published while nobody could hear it
        # (no lock: a watch holding it waits for a confirmation only this listener can read)
        users = [u for u in self._subscribed if u in self._watchers]
        self._subscribed = set(users)
        if users:
            with contextlib.suppress(Exception):
                await self.link.subscribe([self.channel(u) for u in users], wait=False)
        self._on_notice(None)

    async def _listen(self) -> None:
        async for _channel, data in self.link.messages():
            try:
                notice = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(notice, list) and len(notice) == 2:
                if self.counter is not None:
                    self.counter.inc()
                self._on_notice((str(notice[0]), str(notice[1])))
