"""Every code block of the docs (docs/**/*.md and README.md) runs as written.

What each fenced block is, by its info string:

- ``python``: run in a fresh directory by a new interpreter; every ASGI host it defines
  (FastAPI or Starlette) is then served by uvicorn and must answer ``GET /health`` 200. A first
  line ``# test_NAME.py`` makes it a test file: pytest runs it in a directory without any
  configuration. A first line ``# package/module.py`` makes it part of the *docs project*: the
  files every other block can import (the echo plugin of writing_plugins.md).
- ``toml``: parsed; a ``pyproject.toml`` with ``[project]`` is installed with the docs project
  (``pip install --no-deps --target``) and its entry point must show in
  ``happy-socket plugins``.
- ``bash``/``sh``: each ``happy-socket`` command runs in a fresh directory (``serve`` until it
  says it is serving, on a free port); ``pip``, ``pytest``, venv creation and activation are
  setup steps the test environment has done; any other command needs a marker.
  A block of setup steps only (``pip install ...``, ``pytest``) is counted as such.
- ``json``: parsed, unless it is a shape with placeholders (``<...>``, ``…``, ``|``).
- no info string: text (diagrams, output, command synopses), not code.

A comment on the line before a block (blank lines between are allowed) changes that:

- ``<!-- snippet: skip REASON -->``: not run (it needs a deployment, the happy CLI, ...);
- ``<!-- snippet: continues -->``: a python block that runs after the previous python block of
  the page, in the same interpreter;
- ``<!-- snippet: api -->``: a reference listing with free names (``user_id``, ...): it is
  compiled, and every call on a service (``x = app.service(...)``), on a name it imports or on
  a hook's argument must exist, accept those arguments, and be awaited exactly when it is a
  coroutine function; every ``@hookimpl`` must be a hook and take only its arguments.

``test_snippet_counts`` reports how many blocks ran and how many were skipped.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*snippet:\s*(\w+)\s*(.*?)\s*-->\s*$")
MARKERS = ("skip", "continues", "api")
PATH_COMMENT = re.compile(r"^#\s*([\w./-]+\.(?:py|toml))\b")
PLACEHOLDERS = ("<", "…", "...", "|")
SETUP_COMMANDS = ("pip", "pytest")
LANGUAGES = {"python": "python", "toml": "toml", "bash": "bash", "sh": "bash", "json": "json"}


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: comments dropped, ``&&``/``;`` split, ``&`` dropped."""
    found: list[list[str]] = []
    for line in code.splitlines():
        current: list[str] = []
        for token in shlex.split(line, comments=True):
            if token in ("&&", ";", "&"):
                if current:
                    found.append(current)
                current = []
            else:
                current.append(token)
        if current:
            found.append(current)
    return found


def is_setup(command: list[str]) -> bool:
    """pip, pytest, creating and activating a virtual environment: done already here."""
    if command[0] in SETUP_COMMANDS:
        return True
    if command[0] in (".", "source") and command[1:2] == [".venv/bin/activate"]:
        return True
    return command[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"])


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # "skip", "continues", "api" or None
    reason: str  # after the marker's name

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def path(self) -> str | None:
        """The file this block is, from a first line like ``# pkg/module.py``."""
        first = self.code.splitlines()[0] if self.code else ""
        found = PATH_COMMENT.match(first)
        return found.group(1) if found else None

    @property
    def kind(self) -> str:
        """What the test does with it (see the module docstring)."""
        if self.marker == "skip":
            return "skipped"
        lang = LANGUAGES.get(self.lang, "text" if not self.lang else self.lang)
        if lang == "python":
            if self.marker == "api":
                return "api"
            name = Path(self.path or "").name
            return "pytest" if name.startswith("test_") else "python"
        if lang == "json" and any(p in self.code for p in PLACEHOLDERS):
            return "shape"
        if lang == "bash" and all(is_setup(c) for c in commands(self.code)):
            return "setup"
        return lang


def collect(pages: list[Path] = PAGES) -> list[Snippet]:
    """Every fenced block of ``pages`` with the marker that precedes it."""
    found = []
    for page in pages:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            opening = FENCE.match(lines[i])
            if not opening:
                i += 1
                continue
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines)
            )
            marker, reason = None, ""
            before = i - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            if before >= 0 and (m := MARKER.match(lines[before].strip())):
                marker, reason = m.group(1), m.group(2)
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Snippet(page, i + 1, opening.group(1), code, marker, reason))
            i = end + 1
    return found


SNIPPETS = collect()


def of_kind(*kinds: str) -> list[Any]:
    """pytest params of the snippets of ``kinds``; skipped ones carry their reason."""
    params = []
    for s in SNIPPETS:
        if s.kind in kinds and s.marker != "continues":
            params.append(pytest.param(s, id=s.id))
        elif s.kind == "skipped" and LANGUAGES.get(s.lang) in {LANGUAGES.get(k) for k in kinds}:
            params.append(pytest.param(s, id=s.id, marks=pytest.mark.skip(reason=s.reason)))
    return params


def project_files() -> dict[str, str]:
    """The docs project: package modules and the plugin's pyproject.toml, by path."""
    files: dict[str, str] = {}
    for s in SNIPPETS:
        path = s.path
        if s.kind in ("python", "toml") and path and ("/" in path or path == "pyproject.toml"):
            assert path not in files, f"{s.id}: {path} is defined twice in the docs"
            files[path] = s.code
    return files


def write_project(where: Path, *extra: tuple[str, str]) -> Path:
    for path, code in [*project_files().items(), *extra]:
        target = where / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    return where


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no pytest or CI state of this run, the venv first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HAPPY_SOCKET_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


# -- the markers ------------------------------------------------------------------------------


def test_markers_are_known_and_skips_say_why() -> None:
    for s in SNIPPETS:
        if s.marker is None:
            continue
        assert s.marker in MARKERS, f"{s.id}: unknown marker {s.marker!r}"
        if s.marker == "skip":
            assert s.reason, f"{s.id}: a skipped snippet must say why"
        else:
            assert LANGUAGES.get(s.lang) == "python", f"{s.id}: {s.marker} is for python"
        if s.marker == "continues":
            earlier = [p for p in SNIPPETS if p.page == s.page and p.line < s.line]
            assert any(p.kind == "python" for p in earlier), f"{s.id}: continues nothing"


def test_collect_reads_markers_paths_and_kinds(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- snippet: skip needs a deployment -->\n\n```bash\ncurl x\n```\n"
        "```python\n# pkg/mod.py\nX = 1\n```\n"
        '```json\n{"a": <n>}\n```\n```json\n{"a": 1}\n```\n```\nplain\n```\n'
    )
    found = collect([page])
    assert [(s.line, s.kind, s.marker, s.reason) for s in found] == [
        (3, "skipped", "skip", "needs a deployment"),
        (6, "python", None, ""),
        (10, "shape", None, ""),
        (13, "json", None, ""),
        (16, "text", None, ""),
    ]
    assert found[1].path == "pkg/mod.py" and found[1].code == "# pkg/mod.py\nX = 1\n"


# -- python -----------------------------------------------------------------------------------

RUNNER = """
import asyncio, runpy, socket, sys

import httpx, uvicorn
from starlette.applications import Starlette


async def check(host):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(host, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            health = await http.get("/health")
            assert health.status_code == 200, health.text
    finally:
        server.should_exit = True
        await task


namespace = {}
for path in sys.argv[1:]:
    namespace = runpy.run_path(path, init_globals=namespace, run_name="__main__")
hosts = {id(v): v for v in namespace.values() if isinstance(v, Starlette)}
for host in hosts.values():
    asyncio.run(check(host))
print(f"hosts served: {len(hosts)}")
"""


def with_continuations(snippet: Snippet) -> list[Snippet]:
    """``snippet`` and the ``continues`` blocks that follow it on its page."""
    chain = [snippet]
    later = [s for s in SNIPPETS if s.page == snippet.page and s.line > snippet.line]
    for s in later:
        if LANGUAGES.get(s.lang) != "python":
            continue
        if s.marker != "continues":
            break
        chain.append(s)
    return chain


@pytest.mark.parametrize("snippet", of_kind("python"))
def test_python_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    write_project(tmp_path)
    (tmp_path / "_run_snippet.py").write_text(RUNNER)
    files = []
    for n, part in enumerate(with_continuations(snippet)):
        name = part.path if part.path and "/" not in part.path else f"snippet_{n}.py"
        if part.path and "/" in part.path:
            name = part.path  # a module of the docs project: already written
        else:
            (tmp_path / name).write_text(part.code)
        files.append(name)
    done = subprocess.run(
        [sys.executable, "_run_snippet.py", *files],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{snippet.id}:\n{done.stdout}\n{done.stderr}"
    assert "hosts served:" in done.stdout


@pytest.mark.parametrize("snippet", of_kind("pytest"))
def test_test_snippet_passes_with_no_configuration(snippet: Snippet, tmp_path: Path) -> None:
    assert snippet.path is not None
    write_project(tmp_path, (snippet.path, snippet.code))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", snippet.path],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{snippet.id}:\n{output}"
    assert "[tool.pytest" not in project_files().get("pyproject.toml", "")  # no settings
    assert "mode=Mode.STRICT" in output  # pytest-asyncio as it comes: nothing configured
    assert re.search(r"\b\d+ passed\b", output) and " skipped" not in output, output


# -- API listings -----------------------------------------------------------------------------


@cache
def listing_app() -> Any:
    from happy_socket import Settings, create_app

    return create_app(Settings(db="sqlite:///:memory:", secret="d" * 32))


def hook_arguments() -> dict[str, Any]:
    """What a hook receives, by argument name."""
    import sqlalchemy as sa

    from happy_socket.cli import cli

    app = listing_app()
    return {
        "app": app,
        "routes": app.routes,
        "services": app.services,
        "registry": app.registry,
        "migrations": app.migrations,
        "metadata": sa.MetaData(),
        "cli": cli,
    }


class ListingChecker(ast.NodeVisitor):
    """Checks the calls of an API listing against the objects they name."""

    def __init__(self, snippet: Snippet) -> None:
        self.snippet = snippet
        self.names: dict[str, Any] = {"app": listing_app()}
        self.problems: list[str] = []
        self.checked = 0
        self._awaited: set[int] = set()

    def problem(self, node: ast.AST, text: str) -> None:
        line = self.snippet.line + getattr(node, "lineno", 0)
        self.problems.append(f"{self.snippet.page.relative_to(ROOT)}:{line}: {text}")

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        exec(compile(ast.Module([node], []), "<listing>", "exec"), self.names)

    visit_ImportFrom = visit_Import

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        value = node.value
        if (
            len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "service"
            and self._resolve(value.func.value) is not None
        ):
            expr = compile(ast.Expression(value), "<listing>", "eval")
            self.names[node.targets[0].id] = eval(expr, self.names)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        from happy_socket import hookspecs

        if not any(ast.unparse(d) == "hookimpl" for d in node.decorator_list):
            self.problem(node, f"{node.name}: only @hookimpl functions are checked")
            return
        spec = getattr(hookspecs, node.name, None)
        if spec is None or not getattr(spec, "happy_socket_spec", None):
            self.problem(node, f"{node.name} is not a hook")
            return
        accepted = set(inspect.signature(spec).parameters)
        taken = [a.arg for a in node.args.args]
        if set(taken) - accepted:
            self.problem(node, f"{node.name}({', '.join(taken)}): takes only {sorted(accepted)}")
        saved = dict(self.names)
        arguments = hook_arguments()
        self.names.update({a: arguments[a] for a in taken if a in arguments})
        self.checked += 1
        for statement in node.body:
            self.visit(statement)
        self.names = saved

    def visit_Await(self, node: ast.Await) -> None:
        self._awaited.add(id(node.value))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        target = self._resolve(node.func)
        if target is None:
            return
        if target is _MISSING:
            self.problem(node, f"{ast.unparse(node.func)} does not exist")
            return
        self.checked += 1
        awaited = id(node) in self._awaited
        if inspect.iscoroutinefunction(target) and not awaited:
            self.problem(node, f"{ast.unparse(node.func)}(...) is a coroutine: await it")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            return
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})
        except TypeError as exc:
            self.problem(node, f"{ast.unparse(node)} does not fit {signature}: {exc}")

    def _resolve(self, node: ast.expr) -> Any:
        """The object ``node`` names, _MISSING if a known object lacks it, None if unknown."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self._resolve(node.value)
            if owner is None or owner is _MISSING:
                return None
            return getattr(owner, node.attr, _MISSING)
        return None


_MISSING = object()


def parse(code: str) -> ast.Module:
    """The syntax tree of ``code``, top-level ``await`` allowed."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree: ast.Module = compile(code, "<listing>", "exec", flags=flags)
    return tree


@pytest.mark.parametrize("snippet", of_kind("api"))
def test_api_listing_matches_the_code(snippet: Snippet) -> None:
    tree = parse(snippet.code)
    checker = ListingChecker(snippet)
    checker.visit(tree)
    assert not checker.problems, "\n".join(checker.problems)
    assert checker.checked >= 3, f"{snippet.id}: almost nothing in it could be checked"


def test_the_listing_checker_finds_wrong_names_arguments_and_awaits() -> None:
    code = (
        'sessions = app.service("sessions")\n'
        "await sessions.nope(user_id)\n"
        "await sessions.get(user_id)\n"
        "sessions.get(user_id, session_id)\n"
        "@hookimpl\ndef register_tabels(metadata): pass\n"
        "@hookimpl\ndef startup(app, extra): pass\n"
    )
    checker = ListingChecker(Snippet(ROOT / "README.md", 0, "python", code, "api", ""))
    checker.visit(parse(code))
    assert [p.split(": ", 1)[1].split(" does not fit")[0] for p in checker.problems] == [
        "sessions.nope does not exist",
        "sessions.get(user_id)",
        "sessions.get(...) is a coroutine: await it",
        "register_tabels is not a hook",
        "startup(app, extra): takes only ['app']",
    ]


# -- toml -------------------------------------------------------------------------------------


@pytest.mark.parametrize("snippet", of_kind("toml"))
def test_toml_snippet_parses_and_a_pyproject_installs(snippet: Snippet, tmp_path: Path) -> None:
    data = tomllib.loads(snippet.code)
    if snippet.path != "pyproject.toml":
        return  # a part of a pyproject.toml: parsing it is all there is to do
    project = write_project(tmp_path / "project")
    assert (project / "pyproject.toml").read_text() == snippet.code
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    installed = subprocess.run(
        [*pip, "--no-build-isolation", "--no-index", "--target", str(target), str(project)],
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = subprocess.run(
        [str(BIN / "happy-socket"), "plugins", "--json"],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(target)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    for name in data["project"]["entry-points"]["happy_socket"]:
        assert plugins[name]["enabled"] is True
        assert plugins[name]["version"] == data["project"]["version"]
    assert plugins["echo"]["events"] == ["echo-test"]


# -- bash -------------------------------------------------------------------------------------


def wait_healthy(url: str) -> None:
    import httpx

    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url}/health never answered 200")


def serve(command: list[str], cwd: Path) -> str:
    """Run ``happy-socket serve ...`` on a free port until it says it serves; SIGTERM."""
    process = subprocess.Popen(
        [str(BIN / "happy-socket"), *command[1:], "--host", "127.0.0.1", "--port", "0"],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            serving = re.search(r"happy-socket serving on (http://\S+)", line)
            if serving:  # the line comes before uvicorn's signal handlers: wait for an answer
                wait_healthy(serving.group(1))
                process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    assert "happy-socket serving on" in output and process.returncode == 0, output
    return output


@pytest.mark.parametrize("snippet", of_kind("bash"))
def test_shell_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    for command in commands(snippet.code):
        if is_setup(command):
            continue
        assert command[0] == "happy-socket", (
            f"{snippet.id}: {shlex.join(command)!r} cannot run in a test: "
            "mark the block <!-- snippet: skip REASON -->"
        )
        if command[1:2] == ["serve"]:
            serve(command, tmp_path)
        else:
            done = subprocess.run(
                [str(BIN / "happy-socket"), *command[1:]],
                cwd=tmp_path,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout}{done.stderr}"


# -- json -------------------------------------------------------------------------------------


@pytest.mark.parametrize("snippet", of_kind("json"))
def test_json_snippet_parses(snippet: Snippet) -> None:
    json.loads(snippet.code)


# -- the count --------------------------------------------------------------------------------


def test_snippet_counts(capsys: pytest.CaptureFixture[str]) -> None:
    kinds = Counter(s.kind for s in SNIPPETS if s.marker != "continues")
    ran = sum(kinds[k] for k in ("python", "pytest", "api", "toml", "bash", "json"))
    skipped = kinds["skipped"]
    with capsys.disabled():
        print(
            f"\ndocs snippets: {ran} ran, {skipped} skipped, {kinds['setup']} setup steps "
            f"only, {kinds['shape'] + kinds['text']} not code ({kinds['shape']} JSON shapes, "
            f"{kinds['text']} text) — {dict(sorted(kinds.items()))}"
        )
    known = {"python", "pytest", "api", "toml", "bash", "json", "shape", "text", "setup"}
    unknown = set(kinds) - known
    assert unknown <= {"skipped"}, f"blocks of no known kind: {unknown}"
    assert kinds["python"] >= 5 and kinds["pytest"] >= 1 and kinds["bash"] >= 2
    assert ran >= 25 and skipped <= 6, kinds


# -- nothing outside the repository -----------------------------------------------------------

#: names of the specification files that live outside this repository, and the section sign
#: their citations used (split so that this file does not match itself)
OUTSIDE = ("PROTOCOL" + ".md", "HTTP-API" + ".md", "../" + "shared", "/work/" + "shared", "\u00a7")
SOURCES = ("happy_socket", "plugins", "docs", "tests", "examples", "bench", ".ci")
SUFFIXES = {".py", ".md", ".toml", ".mjs", ".js", ".sh", ".txt", ""}
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_texts() -> list[Path]:
    """Code and docs of the repository (CHANGELOG.md, the lead's history, aside)."""
    found = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for top in SOURCES:
        for path in (ROOT / top).rglob("*"):
            if "node_modules" in path.parts or "__pycache__" in path.parts:
                continue
            if path.is_file() and path.suffix in SUFFIXES:
                found.append(path)
    return found


def test_nothing_refers_to_files_outside_the_repository() -> None:
    hits = []
    for path in repository_texts():
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(name in line for name in OUTSIDE):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "say it in our own docs (docs/protocol.md, events.md, http.md):\n" + "\n".join(
        hits
    )


def test_every_relative_link_of_the_docs_stays_in_the_repository() -> None:
    broken = []
    for page in [*PAGES, *(ROOT / "examples").rglob("*.md")]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor of the same page
            resolved = (page.parent / target.split("#")[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)
