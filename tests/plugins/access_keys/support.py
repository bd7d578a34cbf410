"""Test support shared by the access-keys and usage tests: sessions and machines are made
through the real ``sessions`` and ``machines`` plugins' public services."""

from __future__ import annotations

from happy_socket import App, new_id


async def new_session(app: App, user_id: str, tag: str = "tag-1") -> str:
    """A session of ``user_id`` through the sessions service; its id."""
    await app.accounts.ensure(user_id)  # a write never creates the account
    session, _ = await app.service("sessions").create_or_load(user_id, tag, "meta")
    return str(session["id"])


async def new_machine(app: App, user_id: str, machine_id: str | None = None) -> str:
    """A machine of ``user_id`` through the machines service; its id."""
    machine_id = machine_id or f"machine-{user_id}-{new_id()[:6]}"
    await app.accounts.ensure(user_id)  # a write never creates the account
    await app.service("machines").create_or_load(user_id, machine_id, "meta")
    return machine_id
