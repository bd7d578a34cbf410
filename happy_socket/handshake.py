"""The Socket.IO handshake: an ``auth`` object becomes a Connection, or one exact refusal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import socketio

from .context import ClientType, Connection

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("happy_socket.dispatch")

MISSING_TOKEN = "Missing authentication token"
MISSING_SESSION = "Session ID required for session-scoped clients"
MISSING_MACHINE = "Machine ID required for machine-scoped clients"
INVALID_TOKEN = "Invalid authentication token"
AUTH_FAILED = "Internal error"  # an authenticate hook raised: the token could not be checked
AUTH_TOO_LARGE = "Authentication data too large"
TOO_MANY_SOCKETS = "Too many connections"
MAX_AUTH_BYTES = 4096  # the handshake ``auth`` object, as JSON; real clients send ~300 bytes
#: the handshake fields a Connection keeps (the rest of the ``auth`` object is dropped)
KEPT_AUTH_FIELDS = ("clientType", "sessionId", "machineId", "happyClient", "appState")


def _text(value: Any, limit: int = 512) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= limit else None


async def connection_for(
    app: App, sid: str, auth: Any, sockets_of: Callable[[str], int]
) -> Connection:
    """Turn a handshake ``auth`` into a Connection, or refuse it with the exact message.

    ``sockets_of(user)`` is how many sockets the user already has on this process.
    """
    auth = auth if isinstance(auth, dict) else {}
    try:
        too_large = len(orjson.dumps(auth)) > MAX_AUTH_BYTES
    except (orjson.JSONEncodeError, TypeError):
        too_large = True
    if too_large:
        raise socketio.exceptions.ConnectionRefusedError(AUTH_TOO_LARGE)
    token = auth.get("token")
    if not isinstance(token, str) or not token:
        raise socketio.exceptions.ConnectionRefusedError(MISSING_TOKEN)
    client_type = ClientType.parse(auth.get("clientType"))
    session_id = _text(auth.get("sessionId"))
    machine_id = _text(auth.get("machineId"))
    if client_type is ClientType.SESSION and session_id is None:
        raise socketio.exceptions.ConnectionRefusedError(MISSING_SESSION)
    if client_type is ClientType.MACHINE and machine_id is None:
        raise socketio.exceptions.ConnectionRefusedError(MISSING_MACHINE)
    try:
        user_id = await app.authenticate(token, auth)
    except Exception:
        # the token may be fine (the database is down, say): don't tell the client it is
        # invalid — a client that believes that drops its credentials
        log.exception("authenticate hook failed for sid %s", sid)
        raise socketio.exceptions.ConnectionRefusedError(AUTH_FAILED) from None
    if user_id is None:
        raise socketio.exceptions.ConnectionRefusedError(INVALID_TOKEN)
    if sockets_of(user_id) >= app.settings.max_sockets_per_user:
        raise socketio.exceptions.ConnectionRefusedError(TOO_MANY_SOCKETS)
    return Connection(
        sid=sid,
        user_id=user_id,
        client_type=client_type,
        session_id=session_id if client_type is ClientType.SESSION else None,
        machine_id=machine_id if client_type is ClientType.MACHINE else None,
        happy_client=_text(auth.get("happyClient")),
        app_state=_text(auth.get("appState"), 64),
        auth={k: auth[k] for k in KEPT_AUTH_FIELDS if isinstance(auth.get(k), str)},
    )
