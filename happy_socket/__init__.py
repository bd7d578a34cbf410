"""happy-socket: the happy realtime protocol over Socket.IO, as a pluggable Python server.

Everything a plugin may import is re-exported here; the rest is internal.
"""

from .app import App, Services, create_app
from .context import ClientType, Clock, Connection, Context, now_ms
from .errors import (
    ConfigError,
    Conflict,
    Envelope,
    HandlerError,
    HTTPError,
    InternalError,
    InvalidParams,
    NotFound,
    TooBusy,
    Unauthorized,
    VersionMismatch,
)
from .hookspecs import hookimpl, hookspec
from .http import Auth, HttpContext, JSONResponse, RouteGroup, Routes, bearer_user
from .ids import new_id, random_id
from .registry import Handler, Registry
from .routing import (
    AllUserConnections,
    InterestedInSession,
    MachineScopedOnly,
    RecipientFilter,
    Router,
    UserScopedOnly,
)
from .settings import Settings
from .storage import AccountMissing, CasResult, Database, Migrations, Outcome, Row, Tx, Unit

__version__ = "0.1.0"

__all__ = [
    "AccountMissing",
    "AllUserConnections",
    "App",
    "Auth",
    "CasResult",
    "ClientType",
    "Clock",
    "ConfigError",
    "Conflict",
    "Connection",
    "Context",
    "Database",
    "Envelope",
    "HTTPError",
    "Handler",
    "HandlerError",
    "HttpContext",
    "InterestedInSession",
    "InternalError",
    "InvalidParams",
    "JSONResponse",
    "MachineScopedOnly",
    "Migrations",
    "NotFound",
    "Outcome",
    "RecipientFilter",
    "Registry",
    "RouteGroup",
    "Router",
    "Routes",
    "Row",
    "Services",
    "Settings",
    "TooBusy",
    "Tx",
    "Unauthorized",
    "Unit",
    "UserScopedOnly",
    "VersionMismatch",
    "__version__",
    "bearer_user",
    "create_app",
    "hookimpl",
    "hookspec",
    "new_id",
    "now_ms",
    "random_id",
]
