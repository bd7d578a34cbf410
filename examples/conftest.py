"""The examples' smoke tests reuse the project's fixtures (real servers, databases)."""

from tests.conftest import *  # noqa: F403
