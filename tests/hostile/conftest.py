"""Fixtures of the hostile suite; the fuzz tally is printed in the terminal summary."""

from __future__ import annotations

from typing import Any

from tests.scaleout.conftest import cluster  # noqa: F401 - two-process isolation reuses it

FUZZ_REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many hostile payloads were tried."""
    for line in FUZZ_REPORTS:
        terminalreporter.write_line(line)
