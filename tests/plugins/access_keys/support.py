"""Test support shared by the access-keys and usage tests.

The servers load the real ``sessions`` and ``machines`` plugins from their entry points.
Only when one of them is not installed, a small stand-in publishing the same service
contract (``owns``, ``create_or_load``, ``add_delete_listener``, ``delete``) takes its place.
Likewise ``access-keys`` and ``usage`` are added explicitly only while they are not
installed as entry points.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import happy_socket_access_keys
import happy_socket_usage

from happy_socket import App, Conflict, Services, Tx, hookimpl, new_id
from happy_socket.plugins import entry_points

Listener = Callable[[Tx, str, str], Awaitable[None]]


class FakeSessions:
    """In-memory sessions with the ``sessions`` service contract."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._by_tag: dict[tuple[str, str], str] = {}
        self._owner: dict[str, str] = {}
        self._listeners: list[Listener] = []

    async def owns(self, user_id: str, session_id: str) -> bool:
        return self._owner.get(session_id) == user_id

    def add_delete_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    async def create_or_load(
        self, user_id: str, tag: str, metadata: str, *args: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], bool]:
        sid = self._by_tag.get((user_id, tag))
        if sid is not None:
            return {"id": sid, "metadata": metadata}, False
        sid = new_id()
        self._by_tag[(user_id, tag)] = sid
        self._owner[sid] = user_id
        return {"id": sid, "metadata": metadata}, True

    async def delete(self, user_id: str, session_id: str) -> bool:
        if self._owner.get(session_id) != user_id:
            return False
        del self._owner[session_id]

        async def unit(tx: Tx) -> None:
            for listener in self._listeners:
                await listener(tx, user_id, session_id)

        await self._app.db.write(unit)
        return True


class FakeMachines:
    """In-memory machines with the ``machines`` service contract."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    async def owns(self, user_id: str, machine_id: str) -> bool:
        return self._owner.get(machine_id) == user_id

    async def create_or_load(
        self, user_id: str, machine_id: str, metadata: str, *args: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], bool]:
        owner = self._owner.setdefault(machine_id, user_id)
        if owner != user_id:
            raise Conflict("Machine id belongs to another user")
        return {"id": machine_id, "metadata": metadata}, True


class FakeSessionsPlugin:
    @hookimpl
    def register_services(self, services: Services, app: App) -> None:
        services.add("sessions", FakeSessions(app))


class FakeMachinesPlugin:
    @hookimpl
    def register_services(self, services: Services, app: App) -> None:
        services.add("machines", FakeMachines())


def domain_plugins() -> list[tuple[str, object]]:
    """Plugins to add to ``make_server`` beyond the installed entry points."""
    installed = entry_points()
    extra: list[tuple[str, object]] = []
    if "sessions" not in installed:
        extra.append(("sessions", FakeSessionsPlugin()))
    if "machines" not in installed:
        extra.append(("machines", FakeMachinesPlugin()))
    if "access-keys" not in installed:
        extra.append(("access-keys", happy_socket_access_keys))
    if "usage" not in installed:
        extra.append(("usage", happy_socket_usage))
    return extra


async def new_session(app: App, user_id: str, tag: str = "tag-1") -> str:
    """A session of ``user_id`` through the sessions service; its id."""
    session, _ = await app.service("sessions").create_or_load(user_id, tag, "meta")
    return str(session["id"])


async def new_machine(app: App, user_id: str, machine_id: str | None = None) -> str:
    """A machine of ``user_id`` through the machines service; its id."""
    machine_id = machine_id or f"machine-{user_id}-{new_id()[:6]}"
    await app.service("machines").create_or_load(user_id, machine_id, "meta")
    return machine_id
