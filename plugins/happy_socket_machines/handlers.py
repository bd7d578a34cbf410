"""Socket events of machines (docs/events.md, Machines)."""

from __future__ import annotations

from typing import Any

from happy_socket import Context, InvalidParams
from happy_socket.presence import heartbeat_time
from happy_socket.validation import MAX_ID_LENGTH, expected_version

from .service import MachinesService


def service(ctx: Context) -> MachinesService:
    """This app's machines service."""
    svc: MachinesService = ctx.service("machines")
    return svc


def _machine_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    value = data.get("machineId")
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        return None
    return value


async def _update(ctx: Context, data: Any, field: str) -> dict[str, Any]:
    machine_id = _machine_id(data)
    if machine_id is None:
        raise InvalidParams()
    value = data.get(field)
    expected = expected_version(data.get("expectedVersion"))
    if not isinstance(value, str) or expected is None:
        raise InvalidParams()
    version = await service(ctx).compare_and_set(ctx.user_id, machine_id, field, value, expected)
    return {"result": "success", "version": version, field: value}


async def machine_update_metadata(ctx: Context, data: Any) -> dict[str, Any]:
    """``machine-update-metadata {machineId, metadata, expectedVersion}``."""
    return await _update(ctx, data, "metadata")


async def machine_update_state(ctx: Context, data: Any) -> dict[str, Any]:
    """``machine-update-state {machineId, daemonState, expectedVersion}``."""
    return await _update(ctx, data, "daemonState")


async def machine_alive(ctx: Context, data: Any) -> None:
    """``machine-alive {machineId, time}``: presence heartbeat, no ack."""
    machine_id = _machine_id(data)
    if machine_id is None:
        return
    at = heartbeat_time(data.get("time"), ctx.clock())
    if at is None:
        return
    await service(ctx).heartbeat(ctx.user_id, machine_id, at)
