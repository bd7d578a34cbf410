"""Revoking a deleted account: its tokens are refused and its sockets closed, on every process.

The default ``authenticate`` hook trusts a positive "the account exists" answer for
``Accounts.known_ttl_ms`` (15 s), so a handshake or request of a known user costs no query.
Revocation then reaches each process in one of three ways, fastest first:

1. the process that deleted the account forgets it and closes its sockets at once;
2. with ``--redis`` it also publishes ``{"deleted": user}`` on ``<redis-channel>:account-deleted``;
   every process of the deployment does the same on receipt (after a lost subscription a
   process forgets every cached answer and sweeps at once, since it may have missed a notice);
3. whatever was missed is caught by the sweep: every ``known_ttl_ms`` each process re-reads the
   accounts of the users it has sockets of (one query per 500 users), closes the sockets of
   users without an account and refreshes the cached answer of the others; and a cached answer
   expires after ``known_ttl_ms`` anyway.

So a deleted account's tokens and sockets are gone from every process within 15 s, and at once
where the notice arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import orjson

from .ids import random_id

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.revocation")

RESUBSCRIBE_S = 1.0


class Revocation:
    """Forgets deleted accounts and closes their sockets here, and tells the other processes."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.token = random_id(16)  # this process, to skip its own notices
        self.subscribed = asyncio.Event()
        self._redis: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def channel(self) -> str:
        """The Redis channel of "account deleted" notices of this deployment."""
        return f"{self.app.settings.redis_channel}:account-deleted"

    async def start(self) -> None:
        """Start the sweep and, with Redis, the subscription (waits up to 5 s for it)."""
        if self._tasks:
            return
        self._tasks.append(self.app.spawn(self._sweep_forever(), name="account-sweep"))
        if self.app.settings.redis:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                self.app.settings.redis, socket_connect_timeout=1.0, health_check_interval=5
            )
            self._tasks.append(self.app.spawn(self._listen(), name="account-revocations"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.subscribed.wait(), 5)

    async def stop(self) -> None:
        """Stop the background work and close Redis."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._redis = self._redis, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def revoke(self, user_id: str) -> int:
        """Revoke ``user_id`` here and publish the notice; the sockets closed here."""
        closed = await self.revoke_here(user_id)
        if self._redis is not None:
            notice = orjson.dumps({"deleted": user_id, "from": self.token})
            try:
                await self._redis.publish(self.channel, notice)
            except Exception as exc:
                log.warning(
                    "could not publish the deletion of %s (%r): other processes close its "
                    "sockets within %d s",
                    user_id,
                    exc,
                    self.app.accounts.known_ttl_ms // 1000,
                )
        return closed

    async def revoke_here(self, user_id: str) -> int:
        """Forget the cached account of ``user_id`` and close its sockets on this process."""
        self.app.accounts.forget(user_id)
        connections = self.app.dispatcher.connections
        sids = [sid for sid, conn in list(connections.items()) if conn.user_id == user_id]
        for sid in sids:
            try:
                await self.app.sio.disconnect(sid, ignore_queue=True)
            except Exception:
                log.exception("closing socket %s of deleted account %s failed", sid, user_id)
        if sids:
            log.info("account %s deleted: closed %d socket(s)", user_id, len(sids))
        return len(sids)

    async def sweep(self) -> int:
        """Close the sockets of connected users whose account is gone; how many users."""
        users = {conn.user_id for conn in list(self.app.dispatcher.connections.values())}
        if not users:
            return 0
        gone = users - await self.app.accounts.existing(users)
        for user_id in gone:
            await self.revoke_here(user_id)
        return len(gone)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.app.accounts.known_ttl_ms / 1000)
            try:
                await self.sweep()
            except Exception as exc:  # the database is away: the cached answers stand
                log.warning("account sweep failed: %r", exc)

    async def _listen(self) -> None:
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not first:  # notices may have been missed meanwhile
                    log.info("listening again for account deletions on %s", self.channel)
                    self.app.accounts.forget()
                    try:
                        await self.sweep()
                    except Exception as exc:
                        log.warning("account sweep failed: %r", exc)
                first = False
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._received(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed.is_set():
                    log.warning("lost the account-deletion subscription (%r); retrying", exc)
                self.subscribed.clear()
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _received(self, data: Any) -> None:
        try:
            notice = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(notice, dict) or notice.get("from") == self.token:
            return
        user_id = notice.get("deleted")
        if isinstance(user_id, str) and user_id:
            await self.revoke_here(user_id)
