"""A standalone walk-through of the happy protocol from the client side, in Python.

    happy-socket serve &            # in another terminal
    python examples/client_walkthrough.py http://127.0.0.1:3005

1. log in over ``POST /v1/auth`` with a fresh Ed25519 key (as the happy CLI does);
2. create a machine and a session over HTTP;
3. connect a machine-scoped (daemon), a session-scoped (coding session) and a user-scoped (app)
   socket;
4. the session sends a message — the app receives ``new-message``;
5. the app updates the session's metadata — both receive ``update-session``;
6. the daemon registers an RPC method and the app calls it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
from typing import Any

import httpx
import socketio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def login(http: httpx.AsyncClient) -> str:
    """Sign a random challenge with a new key; the server answers a bearer token."""
    key = Ed25519PrivateKey.generate()
    challenge = os.urandom(32)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    response = await http.post(
        "/v1/auth",
        json={
            "publicKey": b64(public),
            "challenge": b64(challenge),
            "signature": b64(key.sign(challenge)),
        },
    )
    response.raise_for_status()
    return str(response.json()["token"])


async def connect(
    url: str, auth: dict[str, Any], received: list[tuple[str, Any]]
) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)

    async def record(event: str, *args: Any) -> None:
        received.append((event, args[0] if args else None))

    client.on("*", record)
    await client.connect(url, socketio_path="/v1/updates", auth=auth, transports=["websocket"])
    return client


async def wait_for(received: list[tuple[str, Any]], predicate: Any, timeout: float = 5.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            for event, payload in received:
                if predicate(event, payload):
                    return payload
            await asyncio.sleep(0.01)


async def post(http: httpx.AsyncClient, path: str, token: str, body: dict[str, Any]) -> Any:
    """POST ``body`` with the bearer token; the JSON answer (an HTTP error raises)."""
    response = await http.post(path, headers={"Authorization": f"Bearer {token}"}, json=body)
    response.raise_for_status()
    return response.json()


async def walkthrough(url: str, log: Any = print) -> dict[str, Any]:
    """Run every step against the server at ``url``; returns what it saw.

    Every run is a new account with a new machine id (machine ids are unique across accounts:
    reusing one that another account registered answers 409), so it can run again and again.
    """
    async with httpx.AsyncClient(base_url=url) as http:
        token = await login(http)
        machine_id = f"machine-{secrets.token_hex(6)}"
        machine = (
            await post(http, "/v1/machines", token, {"id": machine_id, "metadata": "m-meta"})
        )["machine"]
        session = (
            await post(http, "/v1/sessions", token, {"tag": "walkthrough", "metadata": "s-meta"})
        )["session"]
        log(f"logged in; machine {machine['id']}, session {session['id']}")

    seen: dict[str, list[tuple[str, Any]]] = {"daemon": [], "session": [], "app": []}
    daemon = await connect(
        url,
        {"token": token, "clientType": "machine-scoped", "machineId": machine["id"]},
        seen["daemon"],
    )
    coding = await connect(
        url,
        {"token": token, "clientType": "session-scoped", "sessionId": session["id"]},
        seen["session"],
    )
    app = await connect(url, {"token": token, "clientType": "user-scoped"}, seen["app"])
    try:
        sent = await coding.call(
            "message", {"sid": session["id"], "message": "hello (encrypted)", "localId": "l-1"}
        )
        message = await wait_for(
            seen["app"], lambda e, p: e == "update" and p["body"]["t"] == "new-message"
        )
        log(
            f"message stored as seq {sent['seq']}; the app received it: {message['body']['message']['content']}"
        )

        updated = await app.call(
            "update-metadata",
            {
                "sid": session["id"],
                "metadata": "renamed",
                "expectedVersion": session["metadataVersion"],
            },
        )
        await wait_for(
            seen["session"], lambda e, p: e == "update" and p["body"]["t"] == "update-session"
        )
        log(f"metadata is now version {updated['version']}")

        async def on_rpc_request(data: Any) -> Any:  # the return value is the ack
            return {"stdout": f"ran {data['params']}"}

        daemon.on("rpc-request", on_rpc_request)
        await daemon.emit("rpc-register", {"method": f"{machine['id']}:bash"})
        await wait_for(seen["daemon"], lambda e, p: e == "rpc-registered")
        answer = await app.call("rpc-call", {"method": f"{machine['id']}:bash", "params": "ls"})
        log(f"rpc answer: {answer}")
        return {"sent": sent, "message": message, "updated": updated, "rpc": answer}
    finally:
        for client in (daemon, coding, app):
            await client.disconnect()


if __name__ == "__main__":
    result = asyncio.run(walkthrough(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3005"))
    print(json.dumps(result["rpc"]))
