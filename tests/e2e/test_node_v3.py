"""The v3 message routes with the stock Node socket.io-client and fetch (js/v3_client.mjs).

An app (user-scoped socket) and a CLI (session-scoped socket) of one account exchange batches
through ``POST /v3/sessions/:id/messages`` and page them with ``GET``; racing batches with
overlapping localIds on one server (SQLite) and on two ``happy-socket serve`` processes sharing
PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from happy_socket import App, Settings, create_app
from happy_socket.testing import ServerHarness

from .node import JS_DIR, require_node
from .serve_process import free_port, serve

SCRIPT = JS_DIR / "v3_client.mjs"
SECRET = "node-v3-secret-0123456789abcdef0123456789"


async def run_v3(payload: dict[str, Any]) -> dict[str, Any]:
    """Run js/v3_client.mjs with ``payload``; its parsed output."""
    node = require_node()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the v3 node client did not finish in 60 s") from None
    if proc.returncode != 0:
        raise AssertionError(f"v3 node client failed ({proc.returncode}): {err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


def seqs(pages: list[dict[str, Any]]) -> list[int]:
    return [seq for page in pages for seq in page["seqs"]]


async def new_session(app: App, user: str) -> str:
    await app.accounts.ensure(user)  # a write never creates the account
    session, _ = await app.service("sessions").create_or_load(user, f"v3-{uuid.uuid4().hex}", "m")
    return str(session["id"])


async def test_app_and_cli_exchange_and_page_with_the_js_client(server: ServerHarness) -> None:
    sid = await new_session(server.app, "alice")
    token = await server.token("alice")
    out = await run_v3(
        {
            "mode": "flow",
            "token": token,
            "sid": sid,
            "appUrl": server.url,
            "cliUrl": server.url,
            "postUrls": [server.url],
        }
    )
    assert out["appPost"]["status"] == 200
    posted = out["appPost"]["body"]["messages"]
    assert [(m["seq"], m["localId"]) for m in posted] == [(n, f"app-{n}") for n in range(1, 6)]
    assert set(posted[0]) == {"id", "seq", "localId", "createdAt", "updatedAt"}
    assert [m["seq"] for m in out["cliPost"]["body"]["messages"]] == [6, 7]
    for name in ("cli", "app"):  # every new message reaches both sockets once, in seq order
        seen = out[name]
        assert [m["mseq"] for m in seen] == list(range(1, 251)), name
        assert all(m["sid"] == sid for m in seen)
        update_seqs = [m["seq"] for m in seen]
        assert update_seqs == sorted(update_seqs) and len(set(update_seqs)) == 250
    cli = out["cli"]
    assert [(m["localId"], m["c"]) for m in cli[:7]] == [
        *((f"app-{n}", f"app:app-{n}") for n in range(1, 6)),
        ("cli-1", "cli:cli-1"),
        ("cli-2", "cli:cli-2"),
    ]
    assert cli[0]["id"] == posted[0]["id"]
    assert seqs(out["forward"]) == list(range(1, 251))
    assert [p["hasMore"] for p in out["forward"]] == [True, True, False]
    assert seqs(out["backward"]) == list(range(250, 0, -1))
    assert [p["hasMore"] for p in out["backward"]] == [True, True, False]
    first = out["forward"][0]["first"]
    assert first == {
        "id": posted[0]["id"],
        "seq": 1,
        "content": {"t": "encrypted", "c": "app:app-1"},
        "localId": "app-1",
        "createdAt": posted[0]["createdAt"],
        "updatedAt": posted[0]["updatedAt"],
    }


def overlapping_batches(count: int = 10, width: int = 30, step: int = 10) -> list[list[str]]:
    """Batch i holds L{i*step} .. L{i*step+width-1}: each overlaps its neighbours."""
    return [[f"L{n}" for n in range(i * step, i * step + width)] for i in range(count)]


def check_race(out: dict[str, Any], batches: list[list[str]]) -> None:
    """Each localId stored once, seqs 1..N without gaps, answers agree, each announced once."""
    unique = sorted({local for b in batches for local in b})
    total = len(unique)
    assert seqs(out["forward"]) == list(range(1, total + 1))
    assert [r["status"] for r in out["replies"]] == [200] * len(batches)
    rows: dict[str, tuple[str, int]] = {}
    for reply, sent in zip(out["replies"], batches, strict=True):
        messages = reply["body"]["messages"]
        assert sorted(m["localId"] for m in messages) == sorted(set(sent))
        assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
        for m in messages:
            assert rows.setdefault(m["localId"], (m["id"], m["seq"])) == (m["id"], m["seq"])
    assert sorted(rows) == unique
    assert sorted(seq for _, seq in rows.values()) == list(range(1, total + 1))
    for name in ("app", "cli"):
        seen = out[name]
        assert sorted(m["mseq"] for m in seen) == list(range(1, total + 1)), name
        assert all(rows[m["localId"]] == (m["id"], m["mseq"]) for m in seen)
    update_seqs = [m["seq"] for m in out["app"]]
    assert len(set(update_seqs)) == total  # one user update seq per message


async def test_racing_batches_with_the_js_client(server: ServerHarness) -> None:
    sid = await new_session(server.app, "alice")
    batches = overlapping_batches()
    out = await run_v3(
        {
            "mode": "race",
            "token": await server.token("alice"),
            "sid": sid,
            "appUrl": server.url,
            "cliUrl": server.url,
            "postUrls": [server.url],
            "batches": batches,
            "expect": 120,
        }
    )
    check_race(out, batches)
    # one server: one session's batches are announced in seq order
    assert [m["mseq"] for m in out["cli"]] == list(range(1, 121))


async def test_racing_batches_on_two_processes_with_postgresql_and_redis(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    issuer = create_app(Settings(db=pg_url, secret=SECRET))
    await issuer.startup()  # creates the schema before the processes start
    try:
        sid = await new_session(issuer, "alice")
        token = await issuer.issue_token("alice")
        channel = f"hs-v3-{uuid.uuid4().hex[:10]}"
        args = ["--db", pg_url, "--redis", redis_url, "--redis-channel", channel]
        args += ["--secret", SECRET]
        with ExitStack() as stack:
            # started in a thread: waiting for /health must not block this loop, whose app
            # (the token issuer) has background writes in flight
            one, two = [
                await asyncio.to_thread(
                    stack.enter_context, serve(args, tmp_path, port=free_port())
                )
                for _ in "12"
            ]
            batches = overlapping_batches(count=12)
            out = await run_v3(
                {
                    "mode": "race",
                    "token": token,
                    "sid": sid,
                    "appUrl": two.url,  # the sockets and the writers are on different processes
                    "cliUrl": one.url,
                    "postUrls": [one.url, two.url],
                    "batches": batches,
                    "expect": 140,
                }
            )
            logs = one.output() + two.output()
        check_race(out, batches)
        assert "Traceback" not in logs, logs[-3000:]
        stored = await issuer.service("sessions").get("alice", sid)
        assert stored["seq"] == 140
    finally:
        await issuer.shutdown()
