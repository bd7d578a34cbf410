"""An app with one test plugin, started in process, with a socket the dispatcher knows."""

from __future__ import annotations

from happy_socket import Settings, create_app
from happy_socket.app import App
from happy_socket.context import ClientType, Connection


async def started_with(db_url: str, name: str, plugin: object, sid: str = "sid1") -> App:
    """Start an app with only ``plugin`` on ``db_url``; user alice is connected as ``sid``."""
    app = create_app(
        Settings(db=db_url, secret="s" * 32), plugins=[(name, plugin)], load_entry_points=False
    )
    await app.startup()
    app.dispatcher.accept(Connection(sid=sid, user_id="alice", client_type=ClientType.USER))
    return app
