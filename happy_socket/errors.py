"""Typed errors that handlers and routes raise, and how each transport renders them.

One error type serves both transports: a socket event renders it through its ack envelope
(:meth:`HandlerError.render`), an HTTP route as ``status`` with a JSON body
(:meth:`HandlerError.http_body`). Services raise these; neither adapter translates by hand.
"""

from __future__ import annotations

import enum
from typing import Any


class Envelope(enum.Enum):
    """The three ack shapes of the protocol (docs/protocol.md, "Events and acks")."""

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
    status: int = 400  # the HTTP status of this error

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

    def http_body(self) -> dict[str, Any]:
        """The JSON body of this error as an HTTP response: ``{"error": message, **fields}``."""
        return {"error": self.message or type(self).__name__, **self.fields}


class InvalidParams(HandlerError):
    """The payload does not have the documented shape."""

    default_message = "Invalid parameters"

    def http_body(self) -> dict[str, Any]:
        """The validation shape the happy clients know: ``{error: "Error", message, statusCode}``."""
        return {
            "error": "Error",
            "message": self.message or "Invalid parameters",
            "statusCode": 400,
        }


class NotFound(HandlerError):
    """The resource does not exist for this user (another user's counts as missing)."""

    default_message = "Not found"
    status = 404


class Conflict(HandlerError):
    """The resource exists and cannot be created again."""

    default_message = "Already exists"
    status = 409


class Unauthorized(HandlerError):
    """The caller is not authenticated."""

    default_message = "Unauthorized"
    status = 401


class InternalError(HandlerError):
    """Something unexpected failed; details are logged, never sent."""

    default_message = "Internal error"
    status = 500

    def http_body(self) -> dict[str, Any]:
        """What any unexpected failure answers over HTTP (details are only logged)."""
        return {
            "error": "Internal Server Error",
            "message": "An unexpected error occurred",
            "statusCode": 500,
        }


class VersionMismatch(HandlerError):
    """A compare-and-set lost: ``fields`` carry the current value(s).

    Rendered as ``{"result": "version-mismatch", **fields}`` (or ``ok``/``success``
    shapes with ``error: "version-mismatch"``).
    """

    default_message = "version-mismatch"
    status = 200  # the happy HTTP routes answer a lost compare-and-set with 200

    def render(self, envelope: Envelope) -> dict[str, Any]:
        if envelope is Envelope.RESULT:
            return {"result": "version-mismatch", **self.fields}
        return super().render(envelope)

    def http_body(self) -> dict[str, Any]:
        """``{"success": false, "error": "version-mismatch", **fields}``."""
        return self.render(Envelope.SUCCESS)


class TooBusy(HandlerError):
    """The caller has too much work in flight; retry after ``retry_after`` seconds (HTTP 429)."""

    default_message = "Too many requests"
    status = 429

    def __init__(
        self, message: str | _Default | None = _Default.DEFAULT, *, retry_after: int = 1
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(Exception):
    """Start-up cannot continue; the message is one sentence meant for the operator."""


def reason_of(exc: BaseException) -> str:
    """The first line of ``exc``'s message, for a one-sentence configuration error (the
    driver's own error when SQLAlchemy wraps it)."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    text = (str(exc) or type(exc).__name__).strip()
    return text.splitlines()[0].strip().rstrip(".")


class HTTPError(HandlerError):
    """An error with an explicit HTTP status: ``status`` with the body ``{"error": message, **fields}``.

    For statuses no typed error names; in a socket handler it renders like any HandlerError.
    """

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.status = status
