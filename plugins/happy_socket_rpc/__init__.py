"""RPC between a user's own sockets (docs/protocol.md, "RPC"), on one process or many (Redis).

Options (``settings.plugin_options["rpc"]`` or ``HAPPY_SOCKET_RPC_<NAME>``): ``grace``
(seconds a call waits for a holder, default 10; ``--rpc-grace``), ``timeout`` (seconds a
holder has to answer, default 30), ``redis_prefix`` (Redis keys and channels, default
``<settings.redis_channel>:rpc``, i.e. ``happy-socket:rpc``), ``recheck`` (with Redis, how often a waiting call re-reads the
registry besides being woken by registrations, default 1); limits: ``max_method_length``
(256), ``max_methods_per_socket`` (100), ``max_methods_per_user`` (1000, over all live
processes with Redis); ``cleanup_slice`` (500 method keys per Redis call of a cleanup).
"""

from __future__ import annotations

from happy_socket import App, Context, Envelope, Registry, Services, hookimpl

from .handlers import rpc_call, rpc_register, rpc_unregister
from .service import RpcService

__all__ = ["RpcService"]


@hookimpl
def register_services(services: Services, app: App) -> None:
    services.add("rpc", RpcService(app))


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("rpc-register", rpc_register, envelope=Envelope.OK, ordered=True)
    registry.add("rpc-unregister", rpc_unregister, envelope=Envelope.OK, ordered=True)
    registry.add("rpc-call", rpc_call, envelope=Envelope.OK)


@hookimpl
async def startup(app: App) -> None:
    await _service(app).start()


@hookimpl
async def shutdown(app: App) -> None:
    await _service(app).stop()


@hookimpl
def on_connect(ctx: Context) -> None:
    _service(ctx.app).connected(ctx.sid, ctx.user_id)


@hookimpl
async def on_disconnect(ctx: Context) -> None:
    await _service(ctx.app).disconnected(ctx.sid)


def _service(app: App) -> RpcService:
    rpc: RpcService = app.service("rpc")
    return rpc
