"""Per-user fan-out over Redis: a process receives only the traffic of users it holds a socket of.

:class:`UserFanoutManager` is a python-socketio client manager (``AsyncPubSubManager``'s
interface) with one channel per user, ``<redis-channel>:u:<user>``, instead of one for the
whole cluster. Every room name starts with its user (``user:U…``, :func:`routing.room_owner`),
so an emit's channel follows from its rooms. docs/scaling.md, "Per-user fan-out", has the
protocol and the reasoning about the edges; in short:

- A process subscribes to U's channel when it gets U's first socket, and unsubscribes after
  the last one left. Having subscribed, it announces itself (``join``) on the channel and
  waits (≤ ``JOIN_WAIT_S``) for a ``here`` from each other holder, which adds it to the
  holders it publishes for *before* answering; only then is the socket's join complete.
- An emit to U is delivered to the local sockets at once and published once, on U's channel,
  unless this process holds U and knows no other holder. A process holding no socket of U
  always publishes (it cannot know who holds U; nobody may).
- A holder whose last socket leaves says ``bye`` and unsubscribes. A holder that died without
  it is forgotten when a publish on the channel reaches no one but the sender.
- Acks across processes go to the asking process's own channel ``<redis-channel>:h:<host>``;
  what addresses no user (a sid of another process, a broadcast) goes to
  ``<redis-channel>:all``, which every process hears.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from socketio.async_pubsub_manager import AsyncPubSubManager

from .compat import socketio as sio_compat
from .fanout_link import RedisLink
from .rooms import RoomIndex
from .routing import room_owner

log = logging.getLogger("happy_socket.fanout")

JOIN_WAIT_S = 1.0  # a socket's join waits this long at most for the other holders' answers


class _User:
    """This process's state for one user it holds sockets of."""

    __slots__ = ("gen", "lock", "missing", "remote", "sids", "subscribed", "waiting")

    def __init__(self) -> None:
        self.sids: dict[str, int] = {}  # local sid -> how many of the user's rooms it is in
        self.remote: dict[str, int] = {}  # other holders' host ids -> generation when learnt
        self.gen = 0
        self.subscribed = False  # the channel's subscription is confirmed and announced
        self.lock = asyncio.Lock()
        self.waiting: asyncio.Future[None] | None = None  # the join waits for answers
        self.missing = 0  # answers the join still waits for


class UserFanoutManager(RoomIndex, AsyncPubSubManager):  # type: ignore[misc]
    """Client manager publishing each user's emits on that user's Redis channel only."""

    name = "happy-socket-fanout"

    def __init__(
        self, url: str, *, channel: str = "happy-socket", mode: str = "auto", metrics: Any = None
    ) -> None:
        super().__init__(channel=channel)
        self.prefix = channel
        self.link = RedisLink(url, mode, on_connected=self._connected, on_published=self._published)
        self._own = self.host_id.encode()
        self._users: dict[str, _User] = {}
        self.received: dict[str, int] = {}  # kind -> messages received from other processes
        self.published: dict[str, int] = {}  # kind -> messages published
        self._metrics = _Counters(metrics)
        self.started = False

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Choose the pub/sub mode, connect, and start listening (before the first socket)."""
        if self.started:
            return
        self.started = True
        log.info("fan-out: per-user channels %s:u:<user>, %s", self.prefix, await self.link.start())
        self._spawn(self.link.run_publisher(), "fanout-publish")
        self._spawn(self._thread(), "fanout-listen")
        try:
            await asyncio.wait_for(self.link.connected.wait(), 5)
        except TimeoutError:
            log.warning("fan-out: no Redis subscription yet; retrying in the background")

    async def stop(self) -> None:
        """Stop listening and publishing; close the connections."""
        await self.link.close()
        self.started = False

    def initialize(self) -> None:
        """python-socketio calls this at its first connection: start if the app did not."""
        if not self.started:
            self._spawn(self.start(), "fanout-start")

    def _spawn(self, coro: Any, name: str) -> None:
        self.link.spawn(coro, name)

    # -- channels -----------------------------------------------------------------------

    def user_channel(self, user: str) -> str:
        """The channel of (escaped) user id ``user``."""
        return f"{self.prefix}:u:{user}"

    @property
    def host_channel(self) -> str:
        """This process's own channel (acks and ``here`` answers for it)."""
        return f"{self.prefix}:h:{self.host_id}"

    @property
    def all_channel(self) -> str:
        """What addresses no user: every process hears it."""
        return f"{self.prefix}:all"

    @property
    def users_held(self) -> int:
        """Users this process holds sockets of (and so user channels it is subscribed to)."""
        return len(self._users)

    def _channel_of(self, rooms: Any) -> tuple[str, str | None]:
        """The channel an emit to ``rooms`` goes to, and its user (None: ``all``)."""
        if isinstance(rooms, str):
            rooms = [rooms]
        owners = {room_owner(r) for r in rooms} if rooms else {None}
        if len(owners) == 1:
            user = owners.pop()
            if user is not None:
                return self.user_channel(user), user
        return self.all_channel, None

    # -- which users this process holds ------------------------------------------------

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        user = room_owner(room)
        if user is not None:
            state = self._users.get(user)
            if state is None:
                state = self._users[user] = _User()
            state.sids[sid] = state.sids.get(sid, 0) + 1

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        before = self.rooms.get(namespace, {}).get(room)
        was_in = before is not None and sid in before
        super().basic_leave_room(sid, namespace, room)
        user = room_owner(room)
        state = self._users.get(user) if user is not None and was_in else None
        if state is not None and sid in state.sids:
            left = state.sids[sid] - 1
            if left > 0:
                state.sids[sid] = left
            else:
                del state.sids[sid]
                if not state.sids:
                    self._spawn(self._release(user, state), "fanout-release")  # type: ignore[arg-type]

    async def enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        """Enter ``room``; the first room of a user here also subscribes to its channel and
        returns once the other holders publish for this process (docs/scaling.md)."""
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        user = room_owner(room)
        state = self._users.get(user) if user is not None else None
        if state is not None and not state.subscribed and sid in state.sids:
            await self._hold(user, state)  # type: ignore[arg-type]

    async def _hold(self, user: str, state: _User) -> None:
        async with state.lock:
            if state.subscribed or self._users.get(user) is not state or not state.sids:
                return
            channel = self.user_channel(user)
            try:
                await self.link.subscribe([channel])
                loop = asyncio.get_running_loop()
                count: asyncio.Future[int] = loop.create_future()
                self._publish_control(channel, "join", user, count)
                others = await count - 1  # every subscriber but this process
                state.subscribed = True
                if others > 0:
                    state.missing = others
                    state.waiting = loop.create_future()
                    try:
                        await asyncio.wait_for(asyncio.shield(state.waiting), JOIN_WAIT_S)
                    except TimeoutError:
                        log.info(
                            "fan-out: %d holder(s) of a user did not answer in time", state.missing
                        )
                    state.waiting = None
            except Exception as exc:  # Redis is down: the reconnection subscribes it
                log.warning("fan-out: subscribing to a user's channel failed (%r)", exc)

    async def _release(self, user: str, state: _User) -> None:
        async with state.lock:  # after a join in progress; a later join waits for this
            if state.sids or self._users.get(user) is not state:
                return  # a socket came back meanwhile
            if state.subscribed:
                state.subscribed = False  # emits publish again from here on
                channel = self.user_channel(user)
                self._publish_control(channel, "bye", user)
                try:
                    await self.link.unsubscribe([channel])
                except Exception as exc:
                    log.debug("fan-out: unsubscribing failed (%r)", exc)
            if not state.sids and self._users.get(user) is state:
                # forgotten only now: a new state's subscribe is sent after this unsubscribe
                del self._users[user]

    async def _connected(self, first: bool) -> None:
        """The listener (re)connected: subscribe everything again, announce every user."""
        users = list(self._users)
        base = [self.host_channel, self.all_channel]
        await self.link.subscribe(base + [self.user_channel(u) for u in users], wait=False)
        if not first:
            for user in users:
                state = self._users[user]
                state.subscribed = True
                self._publish_control(self.user_channel(user), "join", user)

    # -- emitting ------------------------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Deliver to the local sockets, then publish once on the user's channel if needed."""
        room = to or room
        plain = callback is None and not kwargs.get("ignore_queue") and (namespace or "/") == "/"
        frames = None
        if plain and room is not None and not isinstance(skip_sid, list):
            frames = sio_compat.event_frames(self.server, event, data)
        if frames is None:  # acks, binary, other namespaces: python-socketio's own path
            await super().emit(
                event,
                data,
                namespace=namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                **kwargs,
            )
            return
        await sio_compat.deliver(self.server, room, sio_compat.eio_messages(frames), skip_sid)
        channel, user = self._channel_of(room)
        state = self._users.get(user) if user is not None else None
        if state is not None and state.subscribed and not state.remote:
            return  # every socket of the user is here
        rooms = [room] if isinstance(room, str) else list(room)
        message = {
            "method": "emit",
            "host_id": self.host_id,
            "room": rooms,
            "skip_sid": skip_sid,
            "f": frames,
        }
        note = (user, state, state.gen) if state is not None and state.subscribed else None
        self._count(self.published, "emit")
        self.link.publish(channel, self._own + orjson.dumps(message), note=note)

    async def _publish(self, data: dict[str, Any]) -> None:
        """python-socketio's messages (acks, remote disconnects, room changes): to the host,
        user or ``all`` channel they concern."""
        method = data.get("method")
        if method == "callback":
            channel = f"{self.prefix}:h:{data.get('host_id')}"
        elif method == "emit":
            channel = self._channel_of(data.get("room"))[0]
        else:
            channel = self.all_channel
        self._count(self.published, str(method))
        encoded = self.json.dumps(data)
        self.link.publish(
            channel, self._own + (encoded.encode() if isinstance(encoded, str) else encoded)
        )

    def _publish_control(
        self, channel: str, kind: str, user: str, result: asyncio.Future[int] | None = None
    ) -> None:
        message = {"method": "fanout", "t": kind, "u": user, "h": self.host_id}
        self._count(self.published, kind)
        self.link.publish(channel, self._own + orjson.dumps(message), result)

    def _published(self, note: Any, count: int) -> None:
        """A publish of a holder reached ``count`` subscribers: 1 (this process) means every
        other holder it knew is gone (died without ``bye``), unless one joined since."""
        user, state, gen = note
        assert isinstance(state, _User)
        if count == 1 and self._users.get(user) is state and state.gen == gen and state.remote:
            log.info(
                "fan-out: forgetting %d holder(s) that left without saying so", len(state.remote)
            )
            state.remote.clear()

    # -- receiving -----------------------------------------------------------------------

    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        """python-socketio's interface: the messages of other processes for ``_thread``."""
        async for _channel, data in self.link.messages():
            if data[:32] == self._own:  # our own publish on a channel we hear too
                continue
            try:
                message = orjson.loads(data[32:])
            except orjson.JSONDecodeError:
                continue
            if not isinstance(message, dict):
                continue
            method = message.get("method")
            self._count(self.received, "control" if method == "fanout" else str(method))
            if method == "fanout":
                self._control(message)
            else:
                yield message

    def _control(self, message: dict[str, Any]) -> None:
        kind, user, host = message.get("t"), message.get("u"), message.get("h")
        if not isinstance(user, str) or not isinstance(host, str) or host == self.host_id:
            return
        state = self._users.get(user)
        if state is None:
            return
        if kind in ("join", "here"):
            if host not in state.remote:
                state.gen += 1
                state.remote[host] = state.gen
            if kind == "join":  # it publishes for us from now on; we do for it from now on
                self._publish_control(f"{self.prefix}:h:{host}", "here", user)
        elif kind == "bye":
            state.remote.pop(host, None)
        if kind in ("here", "bye") and state.waiting is not None:
            state.missing -= 1
            if state.missing <= 0 and not state.waiting.done():
                state.waiting.set_result(None)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        frames = message.get("f")
        if frames is None:
            await super()._handle_emit(message)
            return
        room, skip = message.get("room"), message.get("skip_sid")
        if isinstance(frames, list) and all(isinstance(f, str) for f in frames) and room:
            await sio_compat.deliver(self.server, room, sio_compat.eio_messages(frames), skip)

    def _count(self, table: dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1
        self._metrics.inc(table is self.received, kind)


class _Counters:
    """``happy_socket_cluster_messages_{received,published}_total{kind}`` on the app's registry."""

    def __init__(self, registry: Any) -> None:
        self._children: dict[tuple[bool, str], Any] = {}
        self._received = self._published = None
        if registry is not None:
            from prometheus_client import Counter

            self._received = Counter(
                "happy_socket_cluster_messages_received",
                "Messages this process received from other processes over Redis, by kind.",
                ["kind"],
                registry=registry,
            )
            self._published = Counter(
                "happy_socket_cluster_messages_published",
                "Messages this process published to Redis, by kind.",
                ["kind"],
                registry=registry,
            )

    def inc(self, received: bool, kind: str) -> None:
        child = self._children.get((received, kind))
        if child is None:
            family = self._received if received else self._published
            if family is None:
                return
            child = self._children[(received, kind)] = family.labels(kind)
        child.inc()
