"""HTTP routes of machines: create/load, list, read (docs/http.md), delete (docs/http/sessions.md)."""

from __future__ import annotations

from typing import Any

from happy_socket import HttpContext, HTTPError, NotFound, Routes
from happy_socket.validation import MAX_ID_LENGTH, optional_b64, require_str

from .service import MachinesService

MACHINE_NOT_FOUND = "Machine not found"


def _service(ctx: HttpContext) -> MachinesService:
    return ctx.app.service(MachinesService)


def _invalid(field: str) -> HTTPError:
    """The 400 body these routes have always answered: ``{"error": "Invalid <field>"}``."""
    return HTTPError(400, f"Invalid {field}")


async def create_machine(ctx: HttpContext) -> Any:
    """``POST /v1/machines {id, metadata, daemonState?, dataEncryptionKey?}``.

    An id owned by another user raises Conflict (409).
    """
    data = await ctx.json()
    machine_id = require_str(data, "id", max_length=MAX_ID_LENGTH, error=_invalid("id"))
    metadata = require_str(data, "metadata", allow_empty=True, error=_invalid("metadata"))
    state = data.get("daemonState")
    if state is not None:
        state = require_str(data, "daemonState", allow_empty=True, error=_invalid("daemonState"))
    key = optional_b64(data, "dataEncryptionKey", error=_invalid("dataEncryptionKey"))
    machine, _ = await _service(ctx).create_or_load(ctx.user, machine_id, metadata, state, key)
    return {"machine": machine}


async def list_machines(ctx: HttpContext) -> Any:
    """``GET /v1/machines``: a bare array, most recently active first."""
    return await _service(ctx).list(ctx.user)


async def read_machine(ctx: HttpContext) -> Any:
    """``GET /v1/machines/:id``."""
    machine = await _service(ctx).get(ctx.user, ctx.param("id"))
    if machine is None:
        raise NotFound(MACHINE_NOT_FOUND)
    return {"machine": machine}


async def delete_machine(ctx: HttpContext) -> Any:
    """``DELETE /v1/machines/:id``: the machine and the caller's access keys for it."""
    if not await _service(ctx).delete(ctx.user, ctx.param("id")):
        raise NotFound(MACHINE_NOT_FOUND)
    return {"success": True}


def register(routes: Routes) -> None:
    """Add the routes."""
    group = routes.group("/v1/machines", auth="bearer")
    group.add("", create_machine, methods=["POST"])
    group.add("", list_machines, methods=["GET"])
    group.add("/{id}", read_machine, methods=["GET"])
    group.add("/{id}", delete_machine, methods=["DELETE"])
