"""The pytest plugin (``happy_socket.pytest_plugin``, entry point ``pytest11``): its fixtures, here
and in a plugin project outside the repository that has no pytest configuration at all."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from happy_socket import pytest_plugin
from tests.core.test_doc_snippets import SNIPPETS, clean_env, write_project

ROOT = Path(__file__).parents[2]


def run_pytest(project: Path, *args: str, **env: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode, done.stdout + done.stderr


def outcomes(output: str) -> dict[str, str]:
    """``{file.py::test: PASSED|FAILED|SKIPPED|ERROR}`` from pytest's ``-rA`` summary."""
    summary = re.findall(r"^(PASSED|FAILED|SKIPPED|ERROR) (?:\[\d+\] )?(\S+)", output, re.M)
    return {node.rstrip(":"): outcome for outcome, node in summary}


def test_installed_as_a_pytest11_entry_point() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        declared = tomllib.load(fh)["project"]["entry-points"]["pytest11"]
    assert declared == {"happy_socket": "happy_socket.pytest_plugin"}
    # every copy of the metadata (a stale happy_socket.egg-info in the checkout may come first)
    installed = {
        (ep.name, ep.value)
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] == "happy-socket"
        for ep in dist.entry_points
        if ep.group == "pytest11"
    }
    assert ("happy_socket", "happy_socket.pytest_plugin") in installed, (
        "the installed metadata is older than pyproject.toml: pip install -e ."
    )


def test_this_repository_is_in_auto_mode_so_nothing_is_marked(
    pytestconfig: pytest.Config,
) -> None:
    assert pytestconfig.pluginmanager.has_plugin("happy_socket")
    assert not pytest_plugin._strict(pytestconfig)  # its collection hook returns at once


async def test_happy_server_serves_a_plugin(happy_server: Any) -> None:
    from happy_socket import Registry, hookimpl

    class Echo:
        @hookimpl
        def register_handlers(self, registry: Registry) -> None:
            async def echo(ctx: Any, data: Any) -> Any:
                return {"ok": True, "echo": data}

            registry.add("echo-test", echo, envelope="ok")

    server = await happy_server(plugins=[("echo", Echo())], load_entry_points=False)
    other = await happy_server()  # a second server in the same test: both stopped after it
    alice = await server.client("alice")
    assert await alice.call("echo-test", [1]) == {"ok": True, "echo": [1]}
    assert server.app.plugin_names == ["echo"]
    assert "sessions" in other.app.plugin_names and other.port != server.port


async def test_app_client_answers_in_process(app_client: Any, happy_db_url: str) -> None:
    http = await app_client(db=happy_db_url)
    assert http.app.settings.db == happy_db_url
    profile = await http.get("/v1/account/profile", user="alice")
    assert profile.status_code == 200 and profile.json()["id"] == "alice"
    assert (await http.get("/v1/account/profile")).status_code == 401


def test_the_docs_plugin_project_passes_with_no_configuration(tmp_path: Path) -> None:
    """writing_plugins.md's plugin and testing_plugins.md's tests, outside the repository."""
    tests = [s for s in SNIPPETS if s.kind == "pytest"]
    assert [s.path for s in tests] == ["test_echo.py", "test_sessions.py"]
    project = write_project(tmp_path, *((s.path or "", s.code) for s in tests))
    assert not list(project.glob("conftest.py")) and not list(project.glob("pytest.ini"))
    code, output = run_pytest(project)
    assert code == 0, output
    assert "mode=Mode.STRICT" in output  # pytest-asyncio's default mode: nothing configured
    assert outcomes(output) == {
        "test_echo.py::test_echo": "PASSED",
        "test_echo.py::test_echo_is_served_beside_every_installed_plugin": "PASSED",
        "test_sessions.py::test_a_message_reaches_the_app": "PASSED",
    }


SCOPE = """
import asyncio

{imports}

async def test_async():
    await asyncio.sleep(0)
"""


def test_which_async_tests_are_marked_in_strict_mode(tmp_path: Path) -> None:
    """Marked: modules that import happy_socket or a plugin, and tests that use a fixture.
    Not marked: other modules' tests, tests marked for anyio."""
    files = {
        "test_uses_core.py": SCOPE.format(imports="from happy_socket import Settings"),
        "test_uses_plugin.py": SCOPE.format(imports="import happy_socket_sessions"),
        "test_unrelated.py": SCOPE.format(imports=""),
        "test_fixture.py": textwrap.dedent(
            """
            async def test_with_fixture(happy_sqlite_url):
                assert happy_sqlite_url.startswith("sqlite:///")
            """
        ),
        "test_anyio.py": textwrap.dedent(
            """
            import pytest
            import happy_socket

            @pytest.mark.anyio
            async def test_anyio_only(anyio_backend):
                assert anyio_backend == "asyncio"

            @pytest.fixture
            def anyio_backend():
                return "asyncio"
            """
        ),
    }
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    code, output = run_pytest(tmp_path, *files)
    assert outcomes(output) == {
        "test_uses_core.py::test_async": "PASSED",
        "test_uses_plugin.py::test_async": "PASSED",
        "test_unrelated.py::test_async": "FAILED",  # pytest: async tests need a plugin
        "test_fixture.py::test_with_fixture": "PASSED",
        "test_anyio.py::test_anyio_only": "PASSED",  # run once, by anyio's plugin
    }, output
    assert code == 1


def test_postgresql_is_skipped_when_missing_and_fails_under_ci(tmp_path: Path) -> None:
    (tmp_path / "test_pg.py").write_text(
        textwrap.dedent(
            """
            def test_needs_postgresql(happy_pg_url):
                raise AssertionError("unreachable")

            def test_both(happy_db_url):
                assert happy_db_url.startswith("sqlite")
            """
        )
    )
    nowhere = "postgresql://postgres@127.0.0.1:1/postgres"
    code, output = run_pytest(tmp_path, HAPPY_SOCKET_TEST_PG=nowhere, CI="")
    assert code == 0, output
    assert "PostgreSQL is not reachable" in output
    assert "1 passed, 2 skipped" in output, output
    code, output = run_pytest(tmp_path, HAPPY_SOCKET_TEST_PG=nowhere, CI="true")
    assert code == 1 and "CI=true: tests that need it must not be skipped" in output, output


def test_the_plugin_can_be_turned_off(tmp_path: Path) -> None:
    (tmp_path / "test_off.py").write_text("def test_x(happy_sqlite_url):\n    pass\n")
    code, output = run_pytest(tmp_path, "-p", "no:happy_socket")
    assert code == 1 and "fixture 'happy_sqlite_url' not found" in output, output
