"""HTTP routes of machines (PROTOCOL.md §10): create/load, list, read."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from happy_socket import Conflict, HttpContext, HTTPError, Routes
from happy_socket.validation import MAX_ID_LENGTH

from .service import MachinesService


def _service(ctx: HttpContext) -> MachinesService:
    svc: MachinesService = ctx.app.service("machines")
    return svc


def _key(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HTTPError(400, "Invalid dataEncryptionKey")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "Invalid dataEncryptionKey") from None


async def create_machine(ctx: HttpContext) -> Any:
    """``POST /v1/machines {id, metadata, daemonState?, dataEncryptionKey?}``."""
    data = await ctx.json()
    machine_id, metadata, state = data.get("id"), data.get("metadata"), data.get("daemonState")
    if not isinstance(machine_id, str) or not machine_id or len(machine_id) > MAX_ID_LENGTH:
        raise HTTPError(400, "Invalid id")
    if not isinstance(metadata, str):
        raise HTTPError(400, "Invalid metadata")
    if state is not None and not isinstance(state, str):
        raise HTTPError(400, "Invalid daemonState")
    key = _key(data.get("dataEncryptionKey"))
    try:
        machine, _ = await _service(ctx).create_or_load(ctx.user, machine_id, metadata, state, key)
    except Conflict as exc:
        raise HTTPError(409, exc.message or "Conflict") from None
    return {"machine": machine}


async def list_machines(ctx: HttpContext) -> Any:
    """``GET /v1/machines``: a bare array, most recently active first."""
    return await _service(ctx).list(ctx.user)


async def read_machine(ctx: HttpContext) -> Any:
    """``GET /v1/machines/:id``."""
    machine = await _service(ctx).get(ctx.user, ctx.param("id"))
    if machine is None:
        raise HTTPError(404, "Machine not found")
    return {"machine": machine}


def register(routes: Routes) -> None:
    """Add the routes."""
    routes.add("/v1/machines", create_machine, methods=["POST"], auth=True)
    routes.add("/v1/machines", list_machines, methods=["GET"], auth=True)
    routes.add("/v1/machines/{id}", read_machine, methods=["GET"], auth=True)
