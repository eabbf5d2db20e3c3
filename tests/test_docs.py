"""The documentation cannot rot: its code runs, its names exist, the site builds strictly.

Every fenced ``python`` block in ``docs/*.md`` and ``README.md`` is checked, in page order,
in a temporary directory with the ``WHATSAPP_*``, model and ngrok variables unset and every
socket confined to loopback. The first line of a block says how:

* (no marker) the block is **run**, as a script (``__name__ == "__main__"``); top-level
  ``await`` is allowed (it runs on a fresh event loop, as in a notebook). ``async def
  test_*(wa_simulator)`` functions it defines are then run too, with the pytest plugin's
  ``wa_simulator`` factory.
* ``# file: name.py`` (or just ``# name.py``) the block is that file: it is written to the
  temporary directory and imported (so later blocks of the page can import it), and the
  ``async def test_*(wa_simulator)`` functions it defines are run.
* ``# doc-test: compile-only (reason)`` for code that needs real credentials, a Redis
  server or a server that runs forever: it is compiled and linted for undefined names.

Whatever the marker, every ``import`` and ``from ... import`` of the block must resolve, and
every ``wa_agent.<name>`` it uses must exist.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import wa_agent

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

COMPILE_ONLY = "# doc-test: compile-only"
_FILE_MARKER = re.compile(r"#\s*(?:file:\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*\.py)\s*$")
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_SECRETS = (
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "NGROK_AUTHTOKEN",
    "REDIS_URL",
)
_LOOPBACK = {None, "", "127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class Block:
    """One ``python`` code block of a page."""

    page: Path
    line: int
    source: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.source.lstrip("\n").split("\n", 1)[0].strip()

    @property
    def kind(self) -> str:
        if self.first_line.startswith(COMPILE_ONLY):
            return "compile"
        return "file" if self.file_name else "run"

    @property
    def file_name(self) -> str | None:
        match = _FILE_MARKER.fullmatch(self.first_line)
        return match["name"] if match else None


def blocks_of(page: Path) -> list[Block]:
    """The page's ``python`` blocks, dedented (blocks inside list items are indented)."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        indent = match["indent"]
        lines = [line.removeprefix(indent) for line in match["body"].split("\n")]
        line_no = text.count("\n", 0, match.start()) + 2
        found.append(Block(page, line_no, "\n".join(lines)))
    return found


CODE_PAGES = [page for page in PAGES if blocks_of(page)]


def compile_block(block: Block) -> Any:
    """Compile as a module that may use top-level ``await``."""
    return compile(block.source, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def check_imports(block: Block) -> None:
    """Every import resolves; every ``wa_agent.x.y`` attribute chain exists."""
    tree = ast.parse(block.source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name == "*" or hasattr(module, alias.name):
                    continue
                importlib.import_module(f"{node.module}.{alias.name}")  # a submodule
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.Attribute):
            chain: list[str] = []
            inner: ast.expr = node
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "wa_agent":
                obj: Any = wa_agent
                for i, attr in enumerate(chain):
                    if not hasattr(obj, attr):
                        name = ".".join(["wa_agent", *chain[: i + 1]])
                        obj = importlib.import_module(name)  # a submodule, or ImportError
                    else:
                        obj = getattr(obj, attr)


def lint_undefined_names(blocks: list[Block], tmp_path: Path) -> None:
    """ruff's undefined-name check over every block (it sees what compile() does not)."""
    files = []
    for n, block in enumerate(blocks):
        path = tmp_path / "lint" / f"block_{n}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(block.source, encoding="utf-8")
        files.append((path, block))
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [
            str(ruff),
            "check",
            "--isolated",
            "--select",
            "F821,F822,F823",
            "--target-version",
            "py311",
            "--output-format",
            "concise",
            *(str(p) for p, _ in files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = proc.stdout
    for path, block in files:  # path:row:col -> page:line
        page, first = block.page.relative_to(ROOT), block.line
        report = re.sub(
            re.escape(str(path)) + r":(\d+):\d+",
            lambda m, page=page, first=first: f"{page}:{first + int(m[1]) - 1}",
            report,
        )
    assert proc.returncode == 0, report


async def _run_plugin_tests(namespace: dict[str, Any]) -> None:
    """Run ``async def test_*`` functions a block defined, with a ``wa_simulator``."""
    from wa_agent.testing import Simulator

    for name, fn in list(namespace.items()):
        if not (name.startswith("test_") and inspect.iscoroutinefunction(fn)):
            continue
        params = list(inspect.signature(fn).parameters)
        assert set(params) <= {"wa_simulator"}, f"{name} uses fixtures {params}"
        started: list[Simulator] = []

        async def factory(bot: Any, **options: Any) -> Simulator:
            sim = Simulator(bot, **options)
            await sim.start()
            started.append(sim)  # noqa: B023 - used before the next iteration
            return sim

        try:
            await fn(*([factory] if params else []))
        finally:
            for sim in reversed(started):
                await sim.stop()


def run_block(block: Block) -> None:
    code = compile_block(block)
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": block.where}
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)  # noqa: S102 - running the docs' own examples is the point
    asyncio.run(_run_plugin_tests(namespace))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No credentials from the environment, and no connection beyond loopback."""
    for name in _SECRETS:
        monkeypatch.delenv(name, raising=False)
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def host_of(address: Any) -> Any:
        return address[0] if isinstance(address, tuple) else None

    def guard(host: Any) -> None:
        if isinstance(host, bytes):
            host = host.decode()
        if host not in _LOOPBACK:
            raise OSError(f"doc blocks must stay offline; tried to reach {host!r}")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        guard(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def connect(self: socket.socket, address: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                guard(host_of(address))
            return real(self, address)

        return connect

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", wrap(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", wrap(real_connect_ex))
    saved = dict(os.environ)
    try:
        yield
    finally:  # a block may set variables (and fail before it removes them)
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("page", CODE_PAGES, ids=[p.name for p in CODE_PAGES])
def test_code_blocks(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    """Each python block of the page compiles, imports only names that exist, uses no
    undefined name, and runs offline unless marked compile-only; file blocks import."""
    blocks = blocks_of(page)
    lint_undefined_names(blocks, tmp_path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    own_modules: list[str] = []
    try:
        for block in blocks:
            try:
                compile_block(block)
                if block.kind == "file":
                    assert block.file_name is not None
                    (workdir / block.file_name).write_text(block.source, encoding="utf-8")
                    importlib.invalidate_caches()
                    own_modules.append(block.file_name[:-3])
                check_imports(block)
                if block.kind == "run":
                    run_block(block)
                elif block.kind == "file":
                    module = importlib.import_module(own_modules[-1])
                    asyncio.run(_run_plugin_tests(vars(module)))
            except BaseException as exc:
                raise AssertionError(f"{block.where}: {type(exc).__name__}: {exc}") from exc
    finally:
        for name in own_modules:
            sys.modules.pop(name, None)


def test_markers_are_known() -> None:
    """A comment that looks like a doc-test marker but is misspelt would silently run or
    skip a block: only the documented markers exist."""
    for page in PAGES:
        for block in blocks_of(page):
            first = block.first_line
            if first.startswith("# doc-test"):
                assert first.startswith(COMPILE_ONLY + " ("), f"{block.where}: {first}"


def test_docs_run_some_blocks() -> None:
    """Most blocks are run, not only compiled (guards against marking everything
    compile-only)."""
    kinds = [block.kind for page in PAGES for block in blocks_of(page)]
    assert kinds.count("run") >= 25, kinds
    assert kinds.count("run") > 2 * kinds.count("compile"), kinds


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds offline: every page is in the nav, every link and
    anchor resolves."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    pages = {p.stem for p in DOCS.glob("*.md")}
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert pages - {"index"} <= built


# --------------------------------------------------------------------------- public API


#: Submodule names that stay out of ``wa_agent.__all__`` on purpose (advanced or internal).
NOT_EXPORTED = {
    "api_error_from_body",  # exceptions: build the right error from a Graph body
    "ErrorRule",
    "error_rule",  # exceptions: the error-code table's rows
    "HeartbeatConfig",
    "heartbeat_from_agent",  # heartbeat: the interface's wiring
    "ConversationListener",
    "normalize_number",  # interface: widget hooks, number helper
    "describe_attachment",  # llm: text stand-in for media
    "parse_timestamp",  # parser
    "reveal",  # secret
    "print_dashboard_instructions",  # tunnel
    "uvicorn_options",  # server: ServerLimits as uvicorn settings
    "Conversation",
    "LogEntry",
    "render_conversation",  # widget internals
}
PUBLIC_MODULES = (
    "agents",
    "asgi",
    "events",
    "exceptions",
    "heartbeat",
    "interface",
    "llm",
    "manager",
    "parser",
    "secret",
    "sender",
    "server",
    "signature",
    "stores.base",
    "stores.memory",
    "stores.sqlite",
    "text",
    "transcribe",
    "tunnel",
    "widget",
)


def _public_objects() -> Iterator[tuple[str, Any]]:
    for name in wa_agent.__all__:
        yield f"wa_agent.{name}", getattr(wa_agent, name)
    testing = importlib.import_module("wa_agent.testing")
    for name in testing.__all__:
        yield f"wa_agent.testing.{name}", getattr(testing, name)
    webhooks = importlib.import_module("wa_agent.testing.webhooks")
    for name in dir(webhooks):
        value = getattr(webhooks, name)
        if (
            not name.startswith("_")
            and inspect.isfunction(value)
            and value.__module__ == webhooks.__name__
        ):
            yield f"wa_agent.testing.webhooks.{name}", value
    redis_store = importlib.import_module("wa_agent.stores.redis")
    yield "wa_agent.stores.redis.RedisSessionStore", redis_store.RedisSessionStore


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, value.fget
        elif isinstance(value, (staticmethod, classmethod)):
            yield name, value.__func__
        elif inspect.isfunction(value):
            yield name, value


def test_every_public_name_has_a_docstring() -> None:
    """Every exported class and function, and every public method and property defined on
    an exported class, has a docstring (wa_agent, wa_agent.testing, the Redis store)."""
    missing = []
    for qualname, obj in _public_objects():
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        own = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (own or "").strip():
            missing.append(qualname)
        if inspect.isclass(obj):
            for name, member in _members(obj):
                if not (getattr(member, "__doc__", None) or "").strip():
                    missing.append(f"{qualname}.{name}")
    assert missing == []


def test_all_is_sorted_and_complete() -> None:
    """``wa_agent.__all__`` is sorted, and every class or function a public module lists in
    its own ``__all__`` is exported, except the few kept in their module on purpose."""
    assert list(wa_agent.__all__) == sorted(wa_agent.__all__)
    exported = set(wa_agent.__all__)
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(f"wa_agent.{module_name}")
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue  # constants and type aliases stay in their module
            if name not in exported and name not in NOT_EXPORTED:
                missing.append(f"wa_agent.{module_name}.{name}")
    assert missing == []
    stale = {n for n in NOT_EXPORTED if n in exported}
    assert stale == set(), "exported now: remove from NOT_EXPORTED"


def test_api_index_lists_every_export() -> None:
    """docs/reference.md names every exported name (so the docs cover the whole API)."""
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)[(`]", text))
    assert sorted(set(wa_agent.__all__) - named) == []


# --------------------------------------------------------------------------- shell commands
#
# Every command the README, the docs, SECURITY.md and the notebooks' text show must work as
# written after the README's setup (`bash scripts/test`, then `source .venv/bin/activate`):
# its program exists (in the project's virtual environment, on PATH, or installed by a
# `pip install` shown earlier on the page), the files and modules it names exist, a
# `wa-agent` command uses only subcommands and options the CLI has, and a `pip install` of
# this project names its distribution and extras. Commands are read from ```bash/sh/shell/
# console blocks (every line) and from inline `code` of two words or more that starts with
# one of the project's tools, `bash scripts/...` or `.venv/bin/...` (one word is a name).

SHELL_PAGES = [*PAGES, ROOT / "SECURITY.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]
#: Pages a reader starts from: a bare venv tool may only appear after the activation line.
ENTRY_PAGES = {ROOT / "README.md", DOCS / "quickstart.md"}
ACTIVATE = "source .venv/bin/activate"
VENV_BIN = Path(sys.executable).parent
#: Tools that come from the project's virtual environment (not on PATH before activation).
VENV_TOOLS = {"wa-agent", "python", "pip", "pytest", "jupyter", "mkdocs", "uvicorn", "ruff", "mypy"}
#: Programs installed by a `pip install` of another package shown earlier on the page.
INSTALLED_BY = {"jupyter": {"jupyterlab", "notebook"}}
SHELL_BUILTINS = {"export", "cd", "source", ".", "echo", "set", "unset", "cat"}
_SHELL_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?:bash|sh|shell|console)[^\n]*\n(?P<body>.*?)^(?P=indent)```"
    r"[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_ANY_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```.*?^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL
)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_PLACEHOLDER = re.compile(r"<[^<>\n]+>")
_OPERATORS = {"|", "||", "&&", ";", "&"}


@dataclass(frozen=True)
class Command:
    """One shell command shown on a page."""

    page: Path
    offset: int  # where it is on the page (characters)
    argv: tuple[str, ...]
    inline: bool

    @property
    def where(self) -> str:
        text = page_text(self.page)
        return (
            f"{self.page.relative_to(ROOT)}:{text.count(chr(10), 0, self.offset) + 1}: "
            f"{' '.join(self.argv)}"
        )


def page_text(page: Path) -> str:
    """A markdown page, or a notebook's markdown cells (one after the other)."""
    if page.suffix != ".ipynb":
        return page.read_text(encoding="utf-8")
    import json

    cells = json.loads(page.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")


def split_commands(line: str) -> list[list[str]]:
    """A shell line as commands (split at pipes, ``&&``, ``;``), each as its words, with
    comments, redirections and ``<placeholders>`` (as ``PLACEHOLDER``) dealt with."""
    import shlex

    lexer = shlex.shlex(_PLACEHOLDER.sub("PLACEHOLDER", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: inline code that is not a command
        return []
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in _OPERATORS:
            commands.append([])
        elif token in (">", ">>", "<", "2>"):
            skip_next = True
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def _program(argv: list[str]) -> list[str]:
    """Without leading ``NAME=value`` assignments."""
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", argv[0]):
        argv = argv[1:]
    return argv


def commands_of(page: Path) -> list[Command]:
    text = page_text(page)
    found: list[Command] = []
    for match in _SHELL_FENCE.finditer(text):
        body = "\n".join(line.removeprefix(match["indent"]) for line in match["body"].split("\n"))
        offset = match.start("body")
        for line in body.replace("\\\n", " ").split("\n"):
            for argv in split_commands(line):
                if _program(argv):
                    found.append(Command(page, offset, tuple(_program(argv)), inline=False))
            offset += len(line) + 1
    prose = _ANY_FENCE.sub(lambda m: " " * len(m[0]), text)  # offsets stay right
    for match in _INLINE.finditer(prose):
        for argv in split_commands(match[1]):
            argv = _program(argv)
            if len(argv) > 1 and (
                argv[0] in VENV_TOOLS
                or argv[0].startswith(".venv/bin/")
                or (argv[0] == "bash" and argv[1:2] and argv[1].startswith("scripts/"))
            ):
                found.append(Command(page, match.start(), tuple(argv), inline=True))
    return sorted(found, key=lambda c: c.offset)


def _project_extras() -> tuple[str, set[str]]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["name"], set(project["optional-dependencies"])


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _cli_options() -> dict[str, set[str]]:
    """``wa-agent``'s subcommands and the option strings each accepts."""
    import argparse

    from wa_agent.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = set(parser._option_string_actions)
    return {name: top | set(p._option_string_actions) for name, p in sub.choices.items()}


def check_command(command: Command, installed: set[str]) -> str | None:
    """What is wrong with ``command`` (``None``: nothing). ``installed``: the packages a
    ``pip install`` earlier on the page installs."""
    argv = list(command.argv)
    program = argv[0]
    if program in SHELL_BUILTINS:
        if program == "source" and argv[1:] == [".venv/bin/activate"]:
            return None if (VENV_BIN / "activate").is_file() else "no .venv/bin/activate"
        return None
    if program.startswith(".venv/bin/"):
        program = program.removeprefix(".venv/bin/")
        if not (VENV_BIN / program).exists():
            return f"{program} is not in the virtual environment"
    elif program in VENV_TOOLS:
        if (
            command.page in ENTRY_PAGES
            and not 0 <= page_text(command.page).find(ACTIVATE) < command.offset
        ):
            return f"{program} is shown before the page says `{ACTIVATE}`"
        if not (VENV_BIN / program).exists() and not INSTALLED_BY.get(program, set()) & installed:
            return f"{program} is not in the virtual environment (nor pip-installed above)"
    elif shutil.which(program) is None:
        return f"{program} is not on PATH"
    args = argv[1:]
    if program == "wa-agent" and args:
        options = _cli_options()
        if args[0] not in options:
            return f"wa-agent has no subcommand {args[0]!r}"
        unknown = [
            a.split("=")[0]
            for a in args[1:]
            if a.startswith("-") and a.split("=")[0] not in options[args[0]]
        ]
        if unknown:
            return f"wa-agent {args[0]} has no option {', '.join(unknown)}"
    if program in ("python", "python3") and args[:1] == ["-m"] and len(args) > 1:
        import importlib.util

        if importlib.util.find_spec(args[1]) is None:
            return f"no module {args[1]}"
    if program == "pip" and args[:1] == ["install"]:
        name, extras = _project_extras()
        for requirement in (a for a in args[1:] if not a.startswith("-")):
            match = re.match(r"([A-Za-z0-9_.\-]+|\.)(?:\[([^\]]*)\])?", requirement)
            assert match is not None, requirement
            if match[1] == "." or _normalize(match[1]) == _normalize(name):
                wanted = {e.strip() for e in (match[2] or "").split(",") if e.strip()}
                if not wanted <= extras:
                    return f"{name} has no extra {', '.join(sorted(wanted - extras))}"
            elif _normalize(match[1]).replace("-", "_") == "wa_agent":
                return f"the distribution is {name}, not {match[1]}"
    for arg in args:  # files of the repository that the command names
        first = arg.split("/", 1)[0]
        if (
            "/" in arg
            and first
            and "PLACEHOLDER" not in arg
            and (ROOT / first).is_dir()
            and first != ".venv"
            and not (ROOT / arg).exists()
        ):
            return f"{arg} does not exist"
    if program == "bash" and args and not (ROOT / args[0]).is_file():
        return f"{args[0]} does not exist"
    return None


def _installs_above(commands: list[Command], command: Command) -> set[str]:
    names: set[str] = set()
    for earlier in commands:
        if earlier.offset >= command.offset:
            break
        if earlier.argv[:2] == ("pip", "install"):
            names |= {
                _normalize(re.split(r"[\[<>=@ ]", a)[0])
                for a in earlier.argv[2:]
                if not a.startswith("-")
            }
    return names


SHELL_COMMAND_PAGES = [page for page in SHELL_PAGES if commands_of(page)]


@pytest.mark.parametrize("page", SHELL_COMMAND_PAGES, ids=[p.name for p in SHELL_COMMAND_PAGES])
def test_shell_commands_work_after_setup(page: Path) -> None:
    """Every shell command the page shows can run as written after the README's setup:
    the program exists (and, on the README and the quickstart, comes after the line that
    activates the virtual environment), named files and modules exist, `wa-agent` options
    exist, and `pip install` names this project's distribution and extras."""
    commands = commands_of(page)
    problems = []
    for command in commands:
        problem = check_command(command, _installs_above(commands, command))
        if problem:
            problems.append(f"{command.where}: {problem}")
    assert problems == []


def test_documented_wa_agent_commands_run_help() -> None:
    """`wa-agent --help` and `wa-agent <subcommand> --help`, for every subcommand the docs
    show, run from the virtual environment's console script."""
    subcommands = {
        c.argv[1]
        for page in SHELL_PAGES
        for c in commands_of(page)
        if c.argv[0] in ("wa-agent", ".venv/bin/wa-agent") and len(c.argv) > 1
    }
    assert subcommands == {"demo", "serve"}
    for args in ([], *([name] for name in sorted(subcommands))):
        proc = subprocess.run(
            [str(VENV_BIN / "wa-agent"), *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage: wa-agent" in proc.stdout


def test_the_command_checker_finds_mistakes(tmp_path: Path) -> None:
    """The checker catches what this section exists for: a venv tool before the activation
    line, an option the CLI lacks, a script that is not there, another project's name."""
    page = ROOT / "README.md"

    def check(argv: tuple[str, ...], offset: int = 10**9) -> str | None:
        return check_command(Command(page, offset, argv, inline=False), set())

    assert check(("wa-agent", "demo"), offset=0) is not None  # before `source ...`
    assert check(("wa-agent", "demo", "--agent", "m:a", "--mode", "chat")) is None
    assert "no option --colour" in (check(("wa-agent", "serve", "--colour")) or "")
    assert "no subcommand" in (check(("wa-agent", "launch")) or "")
    assert "does not exist" in (check(("bash", "scripts/nothing")) or "")
    assert "does not exist" in (check(("python", "benchmarks/nothing.py")) or "")
    assert "not wa_agent" in (check(("pip", "install", "wa_agent[all]")) or "")
    assert "no extra" in (check(("pip", "install", "-e", ".[everything]")) or "")
    assert check(("jupyter", "lab")) is None or "pip-installed" in (check(("jupyter", "lab")) or "")
    assert split_commands("echo hi | bash scripts/demo && X=1 wa-agent demo # note") == [
        ["echo", "hi"],
        ["bash", "scripts/demo"],
        ["X=1", "wa-agent", "demo"],
    ]


_NAMED = re.compile(r"`(wa_agent(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\(\)|\(…\))?`")


def test_names_in_the_prose_exist() -> None:
    """Every `wa_agent.name.path` the prose of the README, the docs and the notebooks
    mentions (outside code blocks) can be imported or looked up: the quickstart notebook
    once pointed at a `wa_agent.DemoAgent` that is not exported."""
    missing = []
    for page in SHELL_PAGES:
        prose = _ANY_FENCE.sub("", page_text(page))
        for dotted in sorted(set(_NAMED.findall(prose))):
            parts = dotted.split(".")
            if parts[-1] in ("db", "py", "md", "toml", "sqlite3"):
                continue  # a file name such as wa_agent.db
            obj: Any = importlib.import_module(parts[0])
            for i, part in enumerate(parts[1:], start=1):
                if hasattr(obj, part):
                    obj = getattr(obj, part)
                    continue
                try:
                    obj = importlib.import_module(".".join(parts[: i + 1]))
                except ImportError:
                    missing.append(f"{page.relative_to(ROOT)}: {dotted}")
                    break
    assert missing == []
