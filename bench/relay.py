"""The ceiling: a bare python-socketio relay with happy-socket's server settings, no database.

Same transport settings as ``happy-socket serve`` (path /v1/updates, ping 15 s/45 s, orjson via
happy_socket.jsonmod, per-message deflate off, uvicorn) and the same rooms and payload shapes
for the events the load tools use (``message``, ``update-metadata``, ``rpc-register``,
``rpc-call``, ``ping``), kept in memory. The token is taken as the user id (no signature check).

    python bench/relay.py --port 3100
    python bench/relay.py --ws lean --transport fast   # happy-socket's protocol + own loop
    python bench/relay.py --server granian             # granian's ASGI server (if installed)

Frame-path candidates (issue 17, bench/frame_candidates.py): ``--ws`` picks uvicorn's
websocket implementation (``websockets-sansio``, ``websockets``, ``wsproto``, or ``lean``:
happy-socket's :func:`~happy_socket.websocket.websocket_protocol`); ``--transport fast``
installs :mod:`happy_socket.transport` (needs ``--ws lean``); ``--server granian`` serves the
same ASGI app with granian (one worker, asyncio loop).
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import time
from pathlib import Path
from typing import Any

import socketio
import uvicorn

from happy_socket import jsonmod

sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins="*",
    cors_credentials=True,
    ping_interval=15,
    ping_timeout=45,
    json=jsonmod,
    logger=False,
    engineio_logger=False,
    transports=["polling", "websocket"],
)
users: dict[str, str] = {}  # sid -> user id
seqs: dict[str, itertools.count[int]] = {}  # user -> update seq
message_seqs: dict[str, itertools.count[int]] = {}  # session -> message seq
metadata: dict[str, tuple[int, str]] = {}  # session -> (version, value)
rpc: dict[tuple[str, str], str] = {}  # (user, method) -> sid


def now() -> int:
    return int(time.time() * 1000)


def next_seq(user: str) -> int:
    return next(seqs.setdefault(user, itertools.count(1)))


async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    auth = auth if isinstance(auth, dict) else {}
    token = auth.get("token")
    if not isinstance(token, str) or not token:
        raise socketio.exceptions.ConnectionRefusedError("Missing authentication token")
    users[sid] = token
    await sio.enter_room(sid, f"user:{token}")
    kind = auth.get("clientType")
    if kind == "session-scoped":
        await sio.enter_room(sid, f"user:{token}:session:{auth.get('sessionId')}")
    elif kind == "machine-scoped":
        await sio.enter_room(sid, f"user:{token}:machine:{auth.get('machineId')}")
    else:
        await sio.enter_room(sid, f"user:{token}:user-scoped")


async def disconnect(sid: str, reason: Any = None) -> None:
    user = users.pop(sid, None)
    for key in [k for k, v in rpc.items() if v == sid and k[0] == user]:
        del rpc[key]


async def ping(sid: str, *args: Any) -> dict[str, Any]:
    return {}


def session_rooms(user: str, session: str) -> list[str]:
    return [f"user:{user}:session:{session}", f"user:{user}:user-scoped"]


async def message(sid: str, data: Any = None) -> dict[str, Any]:
    user, session = users[sid], data["sid"]
    t = now()
    msg = {
        "id": secrets.token_hex(12),
        "seq": next(message_seqs.setdefault(session, itertools.count(1))),
        "content": {"t": "encrypted", "c": data["message"]},
        "localId": data.get("localId"),
        "createdAt": t,
        "updatedAt": t,
    }
    update = {
        "id": secrets.token_hex(6),
        "seq": next_seq(user),
        "body": {"t": "new-message", "sid": session, "message": msg},
        "createdAt": t,
    }
    await sio.emit("update", update, to=session_rooms(user, session), skip_sid=sid)
    return {"result": "success", "id": msg["id"], "seq": msg["seq"], "localId": msg["localId"]}


async def update_metadata(sid: str, data: Any = None) -> dict[str, Any]:
    user, session = users[sid], data["sid"]
    version, value = metadata.get(session, (0, ""))
    if data.get("expectedVersion") != version:
        return {"result": "version-mismatch", "version": version, "metadata": value}
    version, value = version + 1, data["metadata"]
    metadata[session] = (version, value)
    update = {
        "id": secrets.token_hex(6),
        "seq": next_seq(user),
        "body": {
            "t": "update-session",
            "id": session,
            "metadata": {"value": value, "version": version},
        },
        "createdAt": now(),
    }
    await sio.emit("update", update, to=session_rooms(user, session))
    return {"result": "success", "version": version, "metadata": value}


async def rpc_register(sid: str, data: Any = None) -> None:
    rpc[(users[sid], data["method"])] = sid
    await sio.emit("rpc-registered", {"method": data["method"]}, to=sid)


async def rpc_call(sid: str, data: Any = None) -> dict[str, Any]:
    target = rpc.get((users[sid], data["method"]))
    if target is None:
        return {"ok": False, "error": "RPC method not available"}
    result = await sio.call("rpc-request", data, to=target, timeout=30)
    return {"ok": True, "result": result}


HANDLERS = {
    "connect": connect,
    "disconnect": disconnect,
    "ping": ping,
    "message": message,
    "update-metadata": update_metadata,
    "rpc-register": rpc_register,
    "rpc-call": rpc_call,
}
for _event, _handler in HANDLERS.items():
    sio.on(_event, _handler)


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = jsonmod.dumps({"status": "ok", "service": "relay"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3100)
    parser.add_argument("--ws", default="auto", help="uvicorn websocket implementation, or lean")
    parser.add_argument("--transport", choices=["engineio", "fast"], default="engineio")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    args = parser.parse_args()
    if args.transport == "fast":
        from happy_socket import transport

        transport.install(sio.eio)
    app = socketio.ASGIApp(sio, other_asgi_app=health, socketio_path="v1/updates")
    if args.server == "granian":
        serve_granian(args.host, args.port)
        return
    ws: Any = args.ws
    if ws == "lean":
        from happy_socket.websocket import websocket_protocol

        ws = websocket_protocol()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        ws=ws,
        loop="asyncio",  # as happy-socket serve (asyncio.run), even when uvloop is installed
        ws_per_message_deflate=False,
        lifespan="off",
        backlog=2048,
    )


app = socketio.ASGIApp(sio, other_asgi_app=health, socketio_path="v1/updates")


def serve_granian(host: str, port: int) -> None:
    """Serve ``relay:app`` with granian: one worker, asyncio loop, no websocket compression."""
    from granian import Granian  # type: ignore[import-not-found]
    from granian.constants import Interfaces, Loops  # type: ignore[import-not-found]

    Granian(
        "relay:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.asyncio,
        log_enabled=False,
        backlog=2048,
        working_dir=Path(__file__).resolve().parent,
    ).serve()


if __name__ == "__main__":
    main()
