"""The sessions service: storage, compare-and-set, lifecycle, presence, the library API.

Published as ``app.service("sessions")``. Every query is scoped by the user id. Messages are
stored by :mod:`.messages` (one message) and :mod:`.batch` (a batch); this service fronts both.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa

from happy_socket import App, InterestedInSession, Tx, UserScopedOnly, new_id
from happy_socket.owned import Activity, Ownership, VersionedFields
from happy_socket.presence import SharedPresence

from . import listing
from .batch import BatchWriter
from .messages import MessageResult, MessageStore, WriteFn
from .tables import session_json, session_messages, sessions

END_SUPPRESS_MS = 60_000
LIST_LIMIT = 150
ACTIVE_WINDOW_MS = 15 * 60 * 1000  # GET /v2/sessions/active: seen within 15 minutes
FOCUS_PREFIX = ":focus:"

DeleteListener = Callable[[Tx, str, str], Awaitable[None]]
Key = tuple[str, str]  # (user id, session id)

# update-metadata/update-state: wire name -> (value column, version column), built once
FIELDS = VersionedFields(
    sessions,
    {
        "metadata": (sessions.c.metadata, sessions.c.metadata_version),
        "agentState": (sessions.c.agent_state, sessions.c.agent_state_version),
    },
)


class SessionsService:
    """Sessions of users; one instance per App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.store = MessageStore(app)
        self.batches = BatchWriter(app)
        self.ownership = Ownership(app, sessions)
        self.activity = Activity(app, sessions, name="session")
        self.writer = self.activity.writer  # the lazy last-active writes
        self._ended: dict[Key, int] = {}  # session-end: heartbeats ignored for a minute
        self._delete_listeners: list[DeleteListener] = []
        # key: user id; Redis keys <redis-channel>:focus:<user>
        self.focus = SharedPresence(
            f"{app.settings.redis_channel}{FOCUS_PREFIX}", app.settings.redis
        )
        app.accounts.add_delete_listener(self._account_deleted)

    # -- ownership -----------------------------------------------------------

    async def owns(self, user_id: str, session_id: str) -> bool:
        """True when ``session_id`` is ``user_id``'s (answers cached ~30 s)."""
        return await self.ownership.owns(user_id, session_id)

    async def _account_deleted(self, tx: Tx, user_id: str) -> None:
        """The account is being deleted: its sessions and their messages go too."""
        t, m = sessions, session_messages
        owned = sa.select(t.c.id).where(t.c.account_id == user_id)
        await tx.execute(m.delete().where(m.c.session_id.in_(owned)))
        await tx.execute(t.delete().where(t.c.account_id == user_id))

    def add_delete_listener(self, fn: DeleteListener) -> None:
        """Call ``await fn(tx, user_id, session_id)`` inside every session's delete unit."""
        self._delete_listeners.append(fn)

    # -- library API ---------------------------------------------------------

    async def create_or_load(
        self,
        user_id: str,
        tag: str,
        metadata: str,
        agent_state: str | None = None,
        data_encryption_key: bytes | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The user's session with ``tag``, created (and announced) if missing."""
        t = sessions
        now = self.app.clock()
        insert = (
            self.app.db.insert(t)
            .values(
                id=new_id(),
                account_id=user_id,
                tag=tag,
                seq=0,
                metadata=metadata,
                metadata_version=0,
                agent_state=agent_state,
                agent_state_version=0,
                data_encryption_key=data_encryption_key,
                active=True,
                last_active_at=now,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "tag"])
            .returning(*t.c)
        )

        async def unit(tx: Tx) -> tuple[dict[str, Any], int | None]:
            row = await tx.fetch_one(insert)
            if row is not None:
                return row, await self.app.accounts.next_seq(user_id, tx)
            existing = await tx.fetch_one(
                sa.select(t).where(t.c.account_id == user_id, t.c.tag == tag)
            )
            assert existing is not None
            return existing, None

        row, seq = await self.app.db.write(unit)
        self._ended.pop((user_id, row["id"]), None)
        self.ownership.remember(user_id, row["id"])
        session = session_json(row)
        if seq is not None:
            body = {"t": "new-session", **session}
            await self.app.router.send_update(user_id, seq, body, UserScopedOnly())
        return session, seq is not None

    async def get(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        """One session of the user, or None."""
        return await listing.one(self.app.db, user_id, session_id)

    async def list(self, user_id: str, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """The user's sessions, most recently updated first."""
        return await listing.recent(self.app.db, user_id, limit)

    async def list_active(
        self, user_id: str, limit: int = LIST_LIMIT
    ) -> builtins.list[dict[str, Any]]:
        """The user's active sessions seen in the last 15 minutes, most recently active first."""
        since = self.app.clock() - ACTIVE_WINDOW_MS
        return await listing.active(self.app.db, user_id, since, limit)

    async def list_page(
        self,
        user_id: str,
        *,
        below: str | None = None,
        limit: int = 50,
        changed_since: int | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], bool]:
        """Sessions by id descending below ``below``; whether more follow (``GET /v2/sessions``)."""
        return await listing.by_id(self.app.db, user_id, below, limit, changed_since)

    async def messages(
        self, user_id: str, session_id: str, limit: int = LIST_LIMIT
    ) -> builtins.list[dict[str, Any]] | None:
        """The session's latest messages, newest first; None when it is not the user's."""
        return await self.store.latest(user_id, session_id, limit)

    async def page_messages(
        self,
        user_id: str,
        session_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> tuple[builtins.list[dict[str, Any]], bool] | None:
        """A page of messages and ``hasMore`` (see :meth:`MessageStore.page`); None if not owned."""
        return await self.store.page(user_id, session_id, after=after, before=before, limit=limit)

    async def add_message(
        self,
        user_id: str,
        session_id: str,
        content: str,
        local_id: str | None,
        *,
        write: WriteFn | None = None,
    ) -> MessageResult | None:
        """Store one message (see :meth:`MessageStore.add`); None when it is not the user's."""
        return await self.store.add(user_id, session_id, content, local_id, write=write)

    async def post_messages(
        self, user_id: str, session_id: str, items: Sequence[tuple[str, str]]
    ) -> builtins.list[dict[str, Any]] | None:
        """Store a batch of ``(localId, content)`` and announce the new messages (:mod:`.batch`).

        Returns ``[{id, seq, localId, createdAt, updatedAt}]`` sorted by seq, one per unique
        localId; None when the session is not the user's. Raises TooBusy when the user's
        batches stay queued too long.
        """
        return await self.batches.post(user_id, session_id, items)

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Delete the session, its messages and dependants (listeners); announce it.

        The session's heartbeats are then ignored for a minute in this process.
        """
        t, m = sessions, session_messages

        async def unit(tx: Tx) -> int | None:
            deleted = await tx.fetch_val(
                t.delete().where(t.c.id == session_id, t.c.account_id == user_id).returning(t.c.id)
            )
            if deleted is None:
                return None
            await tx.execute(m.delete().where(m.c.session_id == session_id))
            for listener in self._delete_listeners:
                await listener(tx, user_id, session_id)
            return await self.app.accounts.next_seq(user_id, tx)

        self.ownership.forget(user_id, session_id)
        seq = await self.app.db.write(unit)
        self.ownership.forget(user_id, session_id)
        self.activity.drop(user_id, session_id)
        if seq is None:
            return False
        self._ended[(user_id, session_id)] = self.app.clock()
        body = {"t": "delete-session", "sid": session_id}
        await self.app.router.send_update(user_id, seq, body, UserScopedOnly())
        return True

    async def archive(self, user_id: str, session_id: str) -> bool:
        """Mark the session inactive now, ignore its heartbeats for a minute, announce it.

        The same as a ``session-end`` at the current time; False when it is not the user's.
        """
        return await self.end(user_id, session_id, self.app.clock())

    async def session_event(
        self, user_id: str, session_id: str, kind: str, title: str, body: str
    ) -> bool:
        """Emit ``ephemeral`` ``session-event`` to the session and the user's apps.

        False (nothing emitted) when the session is not the user's.
        """
        if not await self.ownership.read(user_id, session_id):
            return False
        payload = {
            "type": "session-event",
            "sessionId": session_id,
            "kind": kind,
            "title": title,
            "body": body,
            "timestamp": self.app.clock(),
        }
        await self.app.router.emit_ephemeral(user_id, payload, InterestedInSession(session_id))
        return True

    async def app_active(self, user_id: str) -> bool:
        """True when the user has an app in the foreground (docs/protocol.md, "Presence")."""
        return await self.focus.anywhere(user_id)

    # -- socket events -------------------------------------------------------

    async def compare_and_set(
        self, user_id: str, session_id: str, field: str, value: str | None, expected: int
    ) -> int:
        """Set ``field`` if its version is ``expected``; announce; return the new version.

        Raises NotFound, or VersionMismatch carrying the current (fresh) version and value.
        """
        version, seq = await FIELDS.set(self.app, user_id, session_id, field, value, expected)
        body = {
            "t": "update-session",
            "id": session_id,
            field: {"value": value, "version": version},
        }
        await self.app.router.send_update(user_id, seq, body, InterestedInSession(session_id))
        return version

    async def heartbeat(self, user_id: str, session_id: str, at: int, thinking: bool) -> bool:
        """``session-alive``: announce activity and queue a lazy write; False when ignored."""
        key = (user_id, session_id)
        ended = self._ended.get(key)
        if ended is not None:
            if self.app.clock() - ended < END_SUPPRESS_MS:
                return False
            del self._ended[key]
        if not await self.owns(user_id, session_id):
            return False
        self.activity.record(user_id, session_id, at)
        payload = {
            "type": "activity",
            "id": session_id,
            "active": True,
            "activeAt": at,
            "thinking": thinking,
        }
        await self.app.router.emit_ephemeral(user_id, payload, UserScopedOnly())
        return True

    async def end(self, user_id: str, session_id: str, at: int) -> bool:
        """``session-end``: mark inactive now, suppress heartbeats for a minute, announce."""
        t = sessions
        stmt = (
            t.update()
            .where(t.c.id == session_id, t.c.account_id == user_id)
            .values(active=False, last_active_at=at)
            .returning(t.c.id)
        )
        if await self.app.db.write(lambda tx: tx.fetch_val(stmt)) is None:
            return False
        self._ended[(user_id, session_id)] = self.app.clock()
        self.activity.drop(user_id, session_id)
        payload = {
            "type": "activity",
            "id": session_id,
            "active": False,
            "activeAt": at,
            "thinking": False,
        }
        await self.app.router.emit_ephemeral(user_id, payload, UserScopedOnly())
        return True

    async def sweep(self) -> int:
        """Mark sessions silent for 10 minutes inactive; each row is flipped and announced once."""
        now = self.app.clock()
        for key in [k for k, at in self._ended.items() if now - at >= END_SUPPRESS_MS]:
            del self._ended[key]
        self.ownership.prune()
        rows = await self.activity.expire()
        for row in rows:
            payload = {
                "type": "activity",
                "id": row["id"],
                "active": False,
                "activeAt": int(row["last_active_at"]),
                "thinking": False,
            }
            await self.app.router.emit_ephemeral(row["account_id"], payload, UserScopedOnly())
        return len(rows)
