"""A browser on another origin: the stock client's handshake and an HTTP preflight, both allowed
by the one ``cors_origins`` setting (``--cors-origin``)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.node import results

APP_ORIGIN = "https://app.happy.example"


async def _handshake(
    url: str, token: str, origin: str, transport: str, *, then_ping: bool = True
) -> Any:
    steps: list[dict[str, Any]] = [
        {
            "op": "connect",
            "auth": {"token": token, "clientType": "user-scoped"},
            "transports": [transport],
            "extraHeaders": {"Origin": origin},
        },
    ]
    if then_ping:
        steps.append({"op": "emit", "event": "ping", "ack": True})
    return await results(url, steps)


async def test_cross_origin_handshake_and_preflight_with_any_origin(make_server: Any) -> None:
    server = await make_server()
    token = await server.token("alice")
    for transport in ("polling", "websocket"):
        connected, pong = await _handshake(server.url, token, APP_ORIGIN, transport)
        assert connected["connected"] is True, connected
        assert pong == {"ack": {}, "ackArgs": [{}]}
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.options(
            "/v1/auth",
            headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert reply.status_code == 204
        assert reply.headers["access-control-allow-origin"] == "*"


async def test_only_listed_origins_may_connect(make_server: Any) -> None:
    server = await make_server(cors_origins=(APP_ORIGIN,))
    token = await server.token("alice")
    connected, _ = await _handshake(server.url, token, APP_ORIGIN, "polling")
    assert connected["connected"] is True, connected
    (refused,) = await _handshake(
        server.url, token, "https://evil.example", "polling", then_ping=False
    )
    assert "connect_error" in refused, refused
