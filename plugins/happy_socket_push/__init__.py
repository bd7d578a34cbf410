"""Push tokens: the Expo tokens of each account's native apps, stored for later delivery.

Routes under ``/v1/push-tokens``; publishes ``app.service(PushTokens)`` so that a delivery
plugin can read them. This server never sends a push notification itself (the CLI reads the
tokens with ``GET /v1/push-tokens`` and sends through Expo on its own).
"""

from __future__ import annotations

import sqlalchemy as sa

from happy_socket import App, Routes, Services, hookimpl

from . import http
from .service import PushToken, PushTokens
from .tables import push_tokens

__all__ = ["PushToken", "PushTokens"]


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("push", PushTokens(app))


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    push_tokens.to_metadata(metadata)


@hookimpl
def register_routes(routes: Routes) -> None:
    http.register(routes)
