"""The event registry: event name -> Handler. Two plugins claiming one event is an error."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigError, Envelope

if TYPE_CHECKING:
    from .context import Context

HandlerFn = Callable[["Context", Any], Awaitable[Any]]

RESERVED_EVENTS = frozenset(
    {
        "connect",
        "disconnect",
        "connect_error",
        "disconnecting",
        "newListener",
        "removeListener",
        "*",
    }
)


@attrs.frozen
class Handler:
    """One socket event: its function, ack envelope, ordering, and the plugin that owns it."""

    event: str
    fn: HandlerFn
    envelope: Envelope = Envelope.RESULT
    ordered: bool = False
    plugin: str = "?"


class Registry:
    """Collects handlers from ``register_handlers`` hooks."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self.current_plugin = "?"

    def add(
        self,
        event: str,
        fn: HandlerFn,
        *,
        envelope: Envelope | str = Envelope.RESULT,
        ordered: bool = False,
    ) -> Handler:
        """Register ``fn(ctx, data)`` for ``event``; its return value is the ack.

        ``envelope`` ("result", "ok" or "success") shapes the errors of the ack;
        ``ordered=True`` runs one socket's events of this kind in arrival order.
        """
        if not isinstance(event, str) or not event or event in RESERVED_EVENTS:
            raise ConfigError(f"Plugin {self.current_plugin!r} cannot register event {event!r}.")
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(
                f"Handler for {event!r} in plugin {self.current_plugin!r} must be an async function."
            )
        existing = self._handlers.get(event)
        if existing is not None:
            raise ConfigError(
                f"Event {event!r} is registered by both plugin {existing.plugin!r} "
                f"and plugin {self.current_plugin!r}."
            )
        handler = Handler(event, fn, Envelope(envelope), ordered, self.current_plugin)
        self._handlers[event] = handler
        return handler

    def get(self, event: str) -> Handler | None:
        """The handler of ``event``, if any."""
        return self._handlers.get(event)

    def __iter__(self) -> Iterator[Handler]:
        return iter(sorted(self._handlers.values(), key=lambda h: h.event))

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, event: object) -> bool:
        return event in self._handlers

    def events(self) -> list[str]:
        """All registered event names, sorted."""
        return sorted(self._handlers)
