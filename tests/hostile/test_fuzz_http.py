"""Hostile bodies and path parameters at every registered HTTP route.

Driven by ``app.routes``: each route gets junk JSON bodies (any JSON value, from the same
hypothesis pool as the socket fuzz), bodies that are not JSON, and junk path parameters,
with and without a valid token. Nothing may answer 5xx, log an ERROR, or store a row when
every answer was an error.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory

from .conftest import FUZZ_REPORTS
from .fuzz import error_logs
from .payloads import encoded_size, generate, hostile
from .support import FRESH, row_counts

NOT_JSON = [b"", b"{", b"nul", b"\xff\xfe\x00", b"NaN", b"[1,]", b'{"a":1}garbage', b"\x00" * 64]
ODD_PARAMS = ["x", "%00", "..%2F..%2Fetc", "a" * 300, "%F0%9F%98%80", "%ED%A0%80", "null", " "]


async def test_every_route_survives_hostile_bodies(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server()
    app = server.app
    token = await server.token("alice")
    bodies = [
        json.dumps(p).encode() for p in generate(hostile, 150) if encoded_size(p) <= 50_000
    ] + NOT_JSON
    failures: list[str] = []
    tried = 0
    before = await row_counts(app)
    successes = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=FRESH) as http:
        for info in app.routes.infos:
            paths = [
                re.sub(r"\{[^}]+\}", param, info.path)
                for param in (ODD_PARAMS if "{" in info.path else ["-"])
            ]
            for method in info.methods:
                sends: list[tuple[str, bytes | None]] = [(p, None) for p in paths]
                if method in ("POST", "PUT", "PATCH"):
                    sends += [(paths[i % len(paths)], b) for i, b in enumerate(bodies)]
                for path, body in sends:
                    for headers in ({"Authorization": f"Bearer {token}"}, {}):
                        tried += 1
                        reply = await http.request(method, path, content=body, headers=headers)
                        if reply.status_code >= 500:
                            failures.append(f"{method} {path} {body!r:.80}: {reply.status_code}")
                        elif reply.status_code < 300:
                            successes += method != "GET"
                        elif (reply.status_code, reply.text) == (404, "Not Found"):
                            pass  # an escaped "/" in a parameter: no route matched at all
                        elif not isinstance(_json(reply), dict) or "error" not in _json(reply):
                            failures.append(
                                f"{method} {path}: not an error object {reply.text:.80}"
                            )
    if successes == 0:
        assert await row_counts(app) == before
    failures += error_logs(caplog)
    FUZZ_REPORTS.append(
        f"hostile fuzz (HTTP): {tried} requests over {len(app.routes.infos)} routes, "
        f"{successes} accepted writes"
    )
    assert not failures, "\n".join(failures[:15])


def _json(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None
