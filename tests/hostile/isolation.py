"""The isolation matrix: user B aims every event and HTTP route at user A's resources.

Works on one in-process server and on a cluster of ``happy-socket serve`` processes: a
:class:`Deployment` says where the sockets of A and B connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from happy_socket import App, Auth
from happy_socket.testing import TestSocket

from .payloads import generic_template, templates
from .support import FRESH, BadAck, b64, classify, create_resources, rows_mentioning

STRAY_EVENTS = ("update", "ephemeral", "rpc-request")
# routes that answer 200 whatever the parameter, touching only the caller's own rows
# (removing a push token that is not there is a success)
SAME_ANSWER_FOR_ANY_PARAM = {("DELETE", "/v1/push-tokens/{token}")}


class Deployment(Protocol):
    """One or more server processes sharing a database."""

    @property
    def app(self) -> App:
        """An App on the same database: tokens and row inspection."""

    def url(self, index: int) -> str: ...

    async def connect(self, index: int, user: str, **auth: Any) -> TestSocket: ...


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for an event")
        await asyncio.sleep(0.02)


def total_events(socks: list[TestSocket]) -> int:
    """Events received so far by ``socks``."""
    return sum(len(v) for s in socks for v in s.events.values())


def mentions(sock: TestSocket, needles: list[str]) -> list[str]:
    """Received updates/ephemerals/rpc-requests whose JSON contains one of ``needles``."""
    hits = []
    for event in STRAY_EVENTS:
        for payload in sock.events.get(event, []):
            text = json.dumps(payload, default=str)
            hits += [f"{event}: {text[:200]}" for n in needles if n in text]
    return hits


class Matrix:
    """A and B on a deployment; A's resources, B's attempts, and the checks."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.app = dep.app
        self.failures: list[str] = []
        self.tried = 0

    async def setup(self, user_a: str, user_b: str) -> None:
        dep, app = self.dep, self.app
        self.a_app = await dep.connect(0, user_a)
        self.a = await create_resources(dep.url(0), app, user_a, self.a_app)
        self.a_session = await dep.connect(
            0, user_a, clientType="session-scoped", sessionId=self.a.session_id
        )
        self.a_machine = await dep.connect(
            1, user_a, clientType="machine-scoped", machineId=self.a.machine_id
        )
        marker = self.a.marker

        async def answer(data: Any) -> Any:
            return {
                "from": marker,
                "params": data.get("params") if isinstance(data, dict) else None,
            }

        self.a_machine.client.on("rpc-request", answer)
        self.a.rpc_method = f"{self.a.machine_id}:ls"
        await self.a_machine.emit("rpc-register", {"method": self.a.rpc_method})
        await self.a_machine.next("rpc-registered")

        self.b_app = await dep.connect(1, user_b)
        self.b_app_same_process = await dep.connect(0, user_b)
        self.b = await create_resources(dep.url(1), app, user_b, self.b_app)
        # B's sockets claim A's session and machine ids: they join B's rooms only.
        self.b_session = await dep.connect(
            0, user_b, clientType="session-scoped", sessionId=self.a.session_id
        )
        self.b_machine = await dep.connect(
            1, user_b, clientType="machine-scoped", machineId=self.a.machine_id
        )
        self.b_socks = [self.b_app, self.b_app_same_process, self.b_session, self.b_machine]
        self.a_socks = [self.a_app, self.a_session, self.a_machine]
        assert await self.a_call_rpc() == {"ok": True, "result": {"from": marker, "params": 1}}

    async def a_call_rpc(self) -> Any:
        return await self.a_app.call("rpc-call", {"method": self.a.rpc_method, "params": 1})

    # -- the attacks ---------------------------------------------------------

    def exact(self) -> list[tuple[str, Any, Any]]:
        """(event, payload, the exact ack) for B against A's resources (docs/events.md)."""
        a, b = self.a, self.b
        blob = b64(b"b")
        part = {"data": blob, "expectedVersion": 1}
        session_error = {"result": "error"}
        not_found = {"result": "error", "message": "Session not found"}
        machine = {"result": "error", "message": "Machine not found"}
        artifact = {"result": "error", "message": "Artifact not found"}
        pair = {"ok": False, "error": "Session or machine not found"}
        tokens = {"total": 1}
        cases: list[tuple[str, Any, Any]] = []
        for version in (0, 1):
            cases += [
                (
                    "update-metadata",
                    {"sid": a.session_id, "metadata": "b", "expectedVersion": version},
                    session_error,
                ),
                (
                    "update-state",
                    {"sid": a.session_id, "agentState": "b", "expectedVersion": version},
                    session_error,
                ),
                (
                    "machine-update-metadata",
                    {"machineId": a.machine_id, "metadata": "b", "expectedVersion": version},
                    machine,
                ),
                (
                    "machine-update-state",
                    {"machineId": a.machine_id, "daemonState": "b", "expectedVersion": version},
                    machine,
                ),
            ]
        cases += [
            ("message", {"sid": a.session_id, "message": "b"}, not_found),
            ("message", {"sid": a.session_id, "message": "b", "localId": "l1"}, not_found),
            ("artifact-read", {"artifactId": a.artifact_id}, artifact),
            ("artifact-update", {"artifactId": a.artifact_id, "header": part}, artifact),
            (
                "artifact-update",
                {"artifactId": a.artifact_id, "body": part, "header": part},
                artifact,
            ),
            ("artifact-delete", {"artifactId": a.artifact_id}, artifact),
            (
                "artifact-create",
                {"id": a.artifact_id, "header": blob, "body": blob, "dataEncryptionKey": blob},
                {
                    "result": "error",
                    "message": "Artifact with this ID already exists for another account",
                },
            ),
            (
                "rpc-call",
                {"method": a.rpc_method, "params": {}},
                {"ok": False, "error": "RPC method not available"},
            ),
            ("access-key-get", {"sessionId": a.session_id, "machineId": a.machine_id}, pair),
            ("access-key-get", {"sessionId": b.session_id, "machineId": a.machine_id}, pair),
            ("access-key-get", {"sessionId": a.session_id, "machineId": b.machine_id}, pair),
            (
                "usage-report",
                {"key": a.usage_key, "sessionId": a.session_id, "tokens": tokens, "cost": tokens},
                {"success": False, "error": "Session not found"},
            ),
            (
                "session-alive",
                {"sid": a.session_id, "time": self.app.clock(), "thinking": True},
                None,
            ),
            ("session-end", {"sid": a.session_id, "time": self.app.clock()}, None),
            ("machine-alive", {"machineId": a.machine_id, "time": self.app.clock()}, None),
        ]
        return [c for c in cases if c[0] in self.app.registry]

    def generic(self) -> list[tuple[str, Any]]:
        """Every registered event with its known fields (or every id field) set to A's ids."""
        ids = {
            "session": [self.a.session_id],
            "machine": [self.a.machine_id],
            "artifact": [self.a.artifact_id],
            "method": [self.a.rpc_method],
        }
        known = templates(ids)
        out = []
        for event in self.app.registry.events():
            for template in (known.get(event), generic_template(ids)):
                if template:
                    out.append((event, {k: v[0] for k, v in template.items()}))
        return out

    async def attack_events(self) -> None:
        targets = set(self.a.needles)
        for sock in (self.b_app, self.b_app_same_process, self.b_session, self.b_machine):
            for event, payload, expected in self.exact():
                self.tried += 1
                ack = await sock.call(event, payload)
                if ack != expected:
                    self.failures.append(f"{event} {payload}: {ack!r} != {expected!r}")
            for event, payload in self.generic():
                self.tried += 1
                handler = self.app.registry.get(event)
                assert handler is not None
                ack = await sock.call(event, payload)
                try:
                    kind = classify(event, handler.envelope, ack)
                except BadAck as exc:
                    self.failures.append(f"{event} {payload}: {exc}")
                    continue
                aimed = any(isinstance(v, str) and v in targets for v in payload.values())
                if aimed and kind == "success" and event != "rpc-register":
                    self.failures.append(f"{event} {payload}: succeeded for B: {ack!r}")
        # B's own registration of A's method name is B's alone: A's calls still reach A.
        await self.b_app.emit("rpc-unregister", {"method": self.a.rpc_method})

    async def attack_routes(self) -> None:
        a = self.a
        params = {"sessionId": a.session_id, "machineId": a.machine_id, "id": a.machine_id}
        body = {
            "id": a.machine_id,
            "tag": a.session_tag,
            "metadata": "b",
            "data": "b",
            "expectedVersion": 1,
            "sessionId": a.session_id,
            "machineId": a.machine_id,
        }
        needles = a.needles
        for index in (0, 1):
            async with httpx.AsyncClient(
                limits=FRESH,
                base_url=self.dep.url(index),
                headers={"Authorization": f"Bearer {self.b.token}"},
                timeout=10,
            ) as http:
                for info in self.app.routes.infos:
                    path = info.path
                    for name, value in params.items():
                        path = path.replace("{" + name + "}", value)
                    for method in info.methods:
                        self.tried += 1
                        sent = body if method in ("POST", "PUT", "PATCH") else None
                        reply = await http.request(method, path, json=sent)
                        leaked = [n for n in needles if n in reply.text]
                        if reply.status_code >= 500 or leaked:
                            self.failures.append(
                                f"{method} {path}: {reply.status_code} {reply.text[:200]} leaked={leaked}"
                            )
                        if (
                            "{" in info.path
                            and info.auth is Auth.BEARER
                            and reply.status_code == 200
                            and (method, info.path) not in SAME_ANSWER_FOR_ANY_PARAM
                        ):
                            self.failures.append(f"{method} {path}: 200 for B: {reply.text[:200]}")
                await self._exact_routes(http)

    async def _exact_routes(self, http: httpx.AsyncClient) -> None:
        a = self.a
        checks: list[tuple[str, str, Any, int, Any]] = []
        paths = {r.path for r in self.app.routes.infos}
        if "/v1/sessions/{sessionId}/messages" in paths:
            checks.append(
                (
                    "GET",
                    f"/v1/sessions/{a.session_id}/messages",
                    None,
                    404,
                    {"error": "Session not found"},
                )
            )
        if "/v1/machines/{id}" in paths:
            checks.append(
                ("GET", f"/v1/machines/{a.machine_id}", None, 404, {"error": "Machine not found"})
            )
        if "/v1/machines" in paths:
            checks.append(
                ("POST", "/v1/machines", {"id": a.machine_id, "metadata": "b"}, 409, None)
            )
        if "/v1/access-keys/{sessionId}/{machineId}" in paths:
            key_path = f"/v1/access-keys/{a.session_id}/{a.machine_id}"
            pair = {"error": "Session or machine not found"}
            checks += [
                ("GET", key_path, None, 404, pair),
                ("POST", key_path, {"data": "b"}, 404, pair),
                (
                    "PUT",
                    key_path,
                    {"data": "b", "expectedVersion": 1},
                    404,
                    {"error": "Access key not found"},
                ),
                ("GET", f"/v1/access-keys/{self.b.session_id}/{a.machine_id}", None, 404, pair),
            ]
        for method, path, body, status, expected in checks:
            self.tried += 1
            reply = (
                await http.request(method, path, json=body)
                if body
                else await http.request(method, path)
            )
            if reply.status_code != status or (expected is not None and reply.json() != expected):
                self.failures.append(f"{method} {path}: {reply.status_code} {reply.text[:200]}")
        if "/v1/sessions" in paths:
            listed = (await http.get("/v1/sessions")).json()["sessions"]
            if any(s["id"] == a.session_id for s in listed):
                self.failures.append("GET /v1/sessions lists A's session for B")
        if "/v1/machines" in paths:
            listed = (await http.get("/v1/machines")).json()
            if any(m["id"] == a.machine_id for m in listed):
                self.failures.append("GET /v1/machines lists A's machine for B")

    # -- A acts: B hears nothing ---------------------------------------------

    async def a_acts(self) -> None:
        a, app = self.a, self.app
        b_before = total_events(self.b_socks)
        updates = len(self.a_app.events["update"])
        ephemerals = len(self.a_app.events["ephemeral"])
        steps: list[Callable[[], Awaitable[Any]]] = []
        if "message" in app.registry:
            steps.append(
                lambda: self.a_session.call("message", {"sid": a.session_id, "message": a.marker})
            )
        if "update-metadata" in app.registry:
            steps.append(
                lambda: self.a_app.call(
                    "update-metadata",
                    {"sid": a.session_id, "metadata": a.marker, "expectedVersion": 0},
                )
            )
        if "machine-update-metadata" in app.registry:
            steps.append(
                lambda: self.a_machine.call(
                    "machine-update-metadata",
                    {"machineId": a.machine_id, "metadata": a.marker, "expectedVersion": 1},
                )
            )
        if "artifact-update" in app.registry:
            part = {"data": b64(a.marker.encode()), "expectedVersion": 1}
            steps.append(
                lambda: self.a_app.call(
                    "artifact-update", {"artifactId": a.artifact_id, "header": part}
                )
            )
        for step in steps:
            ack = await step()
            assert ack.get("result") == "success", ack
        await until(lambda: len(self.a_app.events["update"]) >= updates + len(steps))
        if "session-alive" in app.registry:
            await self.a_session.emit("session-alive", {"sid": a.session_id, "time": app.clock()})
            await until(lambda: len(self.a_app.events["ephemeral"]) > ephemerals)
        if "usage-report" in app.registry:
            report = {
                "key": "k2",
                "sessionId": a.session_id,
                "tokens": {"total": 2},
                "cost": {"total": 2},
            }
            assert (await self.a_session.call("usage-report", report))["success"] is True
        assert await self.a_call_rpc() == {"ok": True, "result": {"from": a.marker, "params": 1}}
        await asyncio.sleep(0.5)
        if total_events(self.b_socks) != b_before:
            got = [(e, p) for s in self.b_socks for e, ps in s.events.items() for p in ps]
            self.failures.append(f"B's sockets received A's activity: {got[-5:]}")

    async def run(self, user_a: str, user_b: str) -> None:
        """The whole matrix; failures are collected in ``self.failures``."""
        await self.setup(user_a, user_b)
        a_rows = await rows_mentioning(self.app, self.a.needles)
        a_seen = total_events(self.a_socks)
        await self.attack_events()
        await self.attack_routes()
        await asyncio.sleep(0.3)
        if await rows_mentioning(self.app, self.a.needles) != a_rows:
            self.failures.append("A's rows changed during B's attempts")
        if total_events(self.a_socks) != a_seen:
            got = [(e, p) for s in self.a_socks for e, ps in s.events.items() for p in ps]
            self.failures.append(f"A's sockets received something from B: {got[-5:]}")
        for sock in self.b_socks:
            self.failures += mentions(
                sock, [self.a.marker, b64(self.a.marker.encode()), self.a.user]
            )
        assert await self.a_call_rpc() == {
            "ok": True,
            "result": {"from": self.a.marker, "params": 1},
        }
        await self.a_acts()
