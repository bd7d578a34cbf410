"""GET /metrics: connections by client type, events by outcome, ack latency, write batches."""

from __future__ import annotations

import re

import httpx

from happy_socket.testing import ServerHarness


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert match, f"{sample} not in metrics"
    return float(match.group(1))


async def test_metrics_reflect_traffic(server: ServerHarness) -> None:
    app_sock = await server.client("alice")
    await server.client("alice", client_type="machine-scoped", machine_id="M1")
    assert await app_sock.call("ping") == {}
    too_deep: list[object] = []
    for _ in range(40):
        too_deep = [too_deep]
    assert await app_sock.call("ping", too_deep) == {
        "result": "error",
        "message": "Invalid parameters",
    }
    assert await server.refusal({"token": "bad"}) == "Invalid authentication token"
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(text, 'happy_socket_connections{client_type="user-scoped"}') == 1
    assert value(text, 'happy_socket_connections{client_type="machine-scoped"}') == 1
    assert value(text, 'happy_socket_events_total{event="ping",outcome="ok"}') == 1
    assert value(text, 'happy_socket_events_total{event="ping",outcome="rejected"}') == 1
    assert value(text, 'happy_socket_ack_seconds_count{event="ping"}') == 2
    assert (
        value(text, 'happy_socket_handshake_refusals_total{reason="Invalid authentication token"}')
        == 1
    )
    assert value(text, "happy_socket_db_write_batch_size_count") >= 1


async def test_without_metrics_there_is_no_route(make_server: object) -> None:
    server: ServerHarness = await make_server(without=("metrics",))  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/metrics")).status_code == 404
