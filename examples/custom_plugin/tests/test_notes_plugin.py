"""The example plugin's own tests, written with happy_socket.testing."""

from __future__ import annotations

from pathlib import Path

import click
import happy_socket_notes
import httpx
from click.testing import CliRunner

from happy_socket import App, Settings, create_app
from happy_socket.testing import ServerHarness


def make_app(tmp_path: Path, now: list[int]) -> App:
    return create_app(
        Settings(db=f"sqlite:///{tmp_path / 'notes.db'}", secret="n" * 32),
        plugins=[("notes", happy_socket_notes)],
        load_entry_points=False,
        clock=lambda: now[0],
    )


async def test_note_add_stores_acks_and_tells_the_apps(tmp_path: Path) -> None:
    now = [1_000]
    async with ServerHarness(make_app(tmp_path, now)) as server:
        phone = await server.client("alice")
        laptop = await server.client("alice")
        bob = await server.client("bob")
        ack = await laptop.call("note-add", {"text": "buy milk"})
        assert ack["result"] == "success"
        assert ack["note"]["text"] == "buy milk" and ack["note"]["createdAt"] == 1_000
        assert await phone.next("ephemeral") == {"type": "note", **ack["note"]}
        assert await laptop.nothing("ephemeral")  # the sender is skipped
        assert await bob.nothing("ephemeral")  # other users never see it
        for bad in (None, {}, {"text": ""}, {"text": "   "}, {"text": 5}, {"text": "x" * 1001}):
            assert await laptop.call("note-add", bad) == {
                "result": "error",
                "message": "Invalid parameters",
            }
        async with httpx.AsyncClient(base_url=server.url) as http:
            token = await server.token("alice")
            listed = await http.get("/v1/notes", headers={"Authorization": f"Bearer {token}"})
            assert listed.json() == {"notes": [ack["note"]]}
            other = await http.get(
                "/v1/notes", headers={"Authorization": f"Bearer {await server.token('bob')}"}
            )
            assert other.json() == {"notes": []}
            assert (await http.get("/v1/notes")).status_code == 401


def test_cli_command_lists_notes(tmp_path: Path) -> None:
    import asyncio

    now = [5]
    app = make_app(tmp_path, now)

    async def seed() -> None:
        await app.startup()
        await app.db.execute(
            happy_socket_notes.notes.insert().values(
                id="n1", account_id="carol", text="hi", created_at=5
            )
        )
        await app.shutdown()

    asyncio.run(seed())
    group = click.Group("happy-socket")
    group.add_command(happy_socket_notes.notes_cli)
    result = CliRunner().invoke(
        group,
        [
            "notes",
            "list",
            "--user",
            "carol",
            "--db",
            f"sqlite:///{tmp_path / 'notes.db'}",
            "--secret",
            "n" * 32,
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"text": "hi"' in result.output
