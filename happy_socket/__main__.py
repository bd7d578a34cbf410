"""``python -m happy_socket``: the ``happy-socket`` command."""

from .cli import main

main()
