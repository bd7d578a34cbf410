"""The ``ping`` event (docs/events.md): the client emits with only a callback; the ack is ``{}``."""

from __future__ import annotations

from typing import Any

from happy_socket import Context, Registry, hookimpl


async def ping(ctx: Context, data: Any) -> dict[str, Any]:
    """Answer ``{}`` whatever was sent."""
    return {}


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("ping", ping)
