"""``happy-socket serve`` with :mod:`happy_socket.transport` installed (bench A/B only).

    python bench/serve_fast.py serve --db sqlite:///bench.db --secret ...

Same arguments as ``happy-socket``. The transport is now on in every App, so this is the same
as ``happy-socket serve`` (installing it twice changes nothing); it is kept so the commands
recorded in bench/RESULTS.md ("Frame ceiling candidates") still run.
"""

from __future__ import annotations

from typing import Any

import happy_socket.cli_serve as cli_serve
from happy_socket import transport
from happy_socket.cli import main

_create_app = vars(cli_serve)["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """create_app, then the fast websocket driver on its engine.io server."""
    app = _create_app(*args, **kwargs)
    transport.install(app.sio.eio)
    return app


vars(cli_serve)["create_app"] = create_app

if __name__ == "__main__":
    main()
