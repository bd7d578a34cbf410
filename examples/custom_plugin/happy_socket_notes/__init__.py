"""Example plugin: short notes per user, over a socket event, an HTTP route and a CLI command."""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa

from happy_socket import (
    App,
    Context,
    HttpContext,
    InvalidParams,
    Registry,
    Routes,
    UserScopedOnly,
    hookimpl,
    new_id,
)
from happy_socket.cli import app_options, echo_json, run_with_app
from happy_socket.settings import Settings
from happy_socket.validation import require_object, require_str

MAX_TEXT = 1000

notes = sa.Table(
    "example_notes",
    sa.MetaData(),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(200), nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


def serialize(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "text": row["text"], "createdAt": row["created_at"]}


async def list_notes(app: App, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The user's newest notes."""
    query = (
        sa.select(notes)
        .where(notes.c.account_id == user_id)
        .order_by(notes.c.created_at.desc(), notes.c.id)
        .limit(limit)
    )
    return [serialize(r) for r in await app.db.fetch_all(query)]


async def note_add(ctx: Context, data: Any) -> dict[str, Any]:
    """Store a note and tell the user's apps."""
    text = require_str(require_object(data), "text", max_length=MAX_TEXT)
    if not text.strip():
        raise InvalidParams()
    row = {"id": new_id(), "account_id": ctx.user_id, "text": text, "created_at": ctx.clock()}
    await ctx.db.execute(notes.insert().values(**row))
    note = serialize(row)
    await ctx.emit_ephemeral({"type": "note", **note}, UserScopedOnly(), skip_sender=True)
    return {"result": "success", "note": note}


async def notes_route(ctx: HttpContext) -> dict[str, Any]:
    return {"notes": await list_notes(ctx.app, ctx.user)}


@click.group("notes")
def notes_cli() -> None:
    """Notes of the example plugin."""


@notes_cli.command("list")
@click.option("--user", required=True, help="Account id.")
@app_options
def list_command(user: str, settings: Settings) -> None:
    """Print a user's notes as JSON."""

    async def work(app: App) -> list[dict[str, Any]]:
        return await list_notes(app, user)

    echo_json(run_with_app(settings, work))


@hookimpl
def register_handlers(registry: Registry) -> None:
    registry.add("note-add", note_add)


@hookimpl
def register_tables(metadata: sa.MetaData) -> None:
    notes.to_metadata(metadata)


@hookimpl
def register_routes(routes: Routes) -> None:
    routes.add("/v1/notes", notes_route, methods=["GET"], auth=True)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(notes_cli)
