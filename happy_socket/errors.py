"""Typed errors that handlers raise; dispatch renders them through the event's ack envelope."""

from __future__ import annotations

import enum
from typing import Any


class Envelope(enum.Enum):
    """The three ack shapes of the protocol (PROTOCOL.md §4)."""

    RESULT = "result"  # {"result": "error", "message": ...}
    OK = "ok"  # {"ok": False, "error": ...}
    SUCCESS = "success"  # {"success": False, "error": ...}


class _Default(enum.Enum):
    DEFAULT = 0


class HandlerError(Exception):
    """An expected failure of a handler, answered to the client as an envelope error.

    ``message=None`` renders without a message (``{"result": "error"}``), which some
    events of the protocol use.
    """

    default_message: str | None = "Error"

    def __init__(self, message: str | _Default | None = _Default.DEFAULT, **fields: Any) -> None:
        self.message = self.default_message if isinstance(message, _Default) else message
        self.fields = fields
        super().__init__(self.message or type(self).__name__)

    def render(self, envelope: Envelope) -> dict[str, Any]:
        """The ack payload for this error in ``envelope``'s shape."""
        if envelope is Envelope.RESULT:
            reply: dict[str, Any] = {"result": "error"}
            if self.message is not None:
                reply["message"] = self.message
        elif envelope is Envelope.OK:
            reply = {"ok": False, "error": self.message}
        else:
            reply = {"success": False, "error": self.message}
        reply.update(self.fields)
        return reply


class InvalidParams(HandlerError):
    """The payload does not have the documented shape."""

    default_message = "Invalid parameters"


class NotFound(HandlerError):
    """The resource does not exist for this user (another user's counts as missing)."""

    default_message = "Not found"


class Conflict(HandlerError):
    """The resource exists and cannot be created again."""

    default_message = "Already exists"


class Unauthorized(HandlerError):
    """The caller is not authenticated."""

    default_message = "Unauthorized"


class InternalError(HandlerError):
    """Something unexpected failed; details are logged, never sent."""

    default_message = "Internal error"


class VersionMismatch(HandlerError):
    """A compare-and-set lost: ``fields`` carry the current value(s).

    Rendered as ``{"result": "version-mismatch", **fields}`` (or ``ok``/``success``
    shapes with ``error: "version-mismatch"``).
    """

    default_message = "version-mismatch"

    def render(self, envelope: Envelope) -> dict[str, Any]:
        if envelope is Envelope.RESULT:
            return {"result": "version-mismatch", **self.fields}
        return super().render(envelope)


class ConfigError(Exception):
    """Start-up cannot continue; the message is one sentence meant for the operator."""


class HTTPError(Exception):
    """Raised inside an HTTP route: becomes ``status`` with the JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        self.status = status
        self.message = message
        self.fields = fields
        super().__init__(f"{status}: {message}")
