"""``import wa_agent`` is light: lazy exports, no extra, nothing heavy until a name is used.

Each check runs in a fresh interpreter so modules imported by other tests do not count.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import wa_agent

ROOT = Path(__file__).resolve().parent.parent

#: Optional dependencies (extras): ``import wa_agent`` must never import them.
EXTRAS = ("ipywidgets", "nest_asyncio", "pyngrok", "redis")
#: Core dependencies and frameworks that a bare ``import wa_agent`` must not pull in yet.
HEAVY = (
    "httpx",
    "httpcore",
    "uvicorn",
    "httptools",
    "pydantic",
    "pydantic_core",
    "anyio",
    "sqlite3",
    "fastapi",
    "starlette",
)
#: Modules that are not about an extra; importing any of them must not import an extra.
CORE_MODULES = (
    "wa_agent.agents",
    "wa_agent.asgi",
    "wa_agent.events",
    "wa_agent.exceptions",
    "wa_agent.heartbeat",
    "wa_agent.interface",
    "wa_agent.llm",
    "wa_agent.manager",
    "wa_agent.parser",
    "wa_agent.secret",
    "wa_agent.server",
    "wa_agent.signature",
    "wa_agent.stores.base",
    "wa_agent.stores.memory",
    "wa_agent.stores.sqlite",
    "wa_agent.testing",
)


def run_fresh(code: str, *flags: str) -> tuple[Any, str]:
    """Run ``code`` in a new interpreter from the repository root; it prints one JSON
    value on its last stdout line. Returns that value and stderr. The interpreter is a
    bare one: not measured by coverage (``bash scripts/test`` measures subprocesses, and
    coverage imports modules of its own, sqlite3 among them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def top_level(modules: list[str]) -> set[str]:
    return {name.split(".", 1)[0] for name in modules}


def test_bare_import_is_lazy() -> None:
    """A bare ``import wa_agent`` imports no extra and none of the heavy dependencies."""
    modules, _ = run_fresh("import sys, json, wa_agent; print(json.dumps(sorted(sys.modules)))")
    loaded = top_level(modules)
    assert "wa_agent" in loaded
    assert loaded.isdisjoint(EXTRAS), loaded & set(EXTRAS)
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)
    own = sorted(m for m in modules if m.startswith("wa_agent."))
    assert own == [], own


def test_every_exported_name_resolves_without_an_extra() -> None:
    """Every name in ``wa_agent.__all__`` resolves, and resolving them all (``from wa_agent
    import *``) still imports no extra."""
    code = (
        "import sys, json, wa_agent\n"
        "missing = []\n"
        "for name in wa_agent.__all__:\n"
        "    try:\n"
        "        getattr(wa_agent, name)\n"
        "    except Exception as exc:\n"
        "        missing.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print(json.dumps({'missing': missing, 'modules': sorted(sys.modules)}))\n"
    )
    result, _ = run_fresh(code)
    assert result["missing"] == []
    loaded = top_level(result["modules"])
    assert loaded.isdisjoint(EXTRAS), loaded & set(EXTRAS)


def test_core_modules_import_no_extra() -> None:
    """Importing any non-extra submodule (interface, manager, stores, ...) imports no extra;
    only wa_agent.widget / wa_agent.tunnel / wa_agent.stores.redis may."""
    present = [m for m in CORE_MODULES if importlib.util.find_spec(m) is not None]
    assert "wa_agent.asgi" in present and "wa_agent.parser" in present
    code = (
        "import importlib, json, sys\n"
        f"for name in {present!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    modules, _ = run_fresh(code)
    loaded = top_level(modules)
    assert loaded.isdisjoint(EXTRAS), loaded & set(EXTRAS)


def test_all_matches_the_lazy_table() -> None:
    """``__all__`` lists each lazily exported name once; an unknown name is AttributeError."""
    names = list(wa_agent.__all__)
    assert len(names) == len(set(names))
    assert set(names) == set(wa_agent._EXPORTS)
    assert set(names) <= set(dir(wa_agent))
    try:
        wa_agent.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_import_time_is_measured() -> None:
    """Measure ``import wa_agent`` in a fresh interpreter (printed, not asserted: timings
    are never asserted in tests; benchmarks/ holds the target)."""
    code = (
        "import time, json\n"
        "t0 = time.perf_counter()\n"
        "import wa_agent\n"
        "t1 = time.perf_counter()\n"
        "from wa_agent import MessageParser, SignatureVerifier, Message\n"
        "t2 = time.perf_counter()\n"
        "print(json.dumps({'bare_ms': (t1 - t0) * 1e3, 'pieces_ms': (t2 - t1) * 1e3}))\n"
    )
    timings, stderr = run_fresh(code, "-X", "importtime")
    own = [line for line in stderr.splitlines() if line.rstrip().endswith("| wa_agent")]
    assert len(own) == 1, stderr[-2000:]
    cumulative_us = int(own[0].split("|")[1])
    print(
        f"import wa_agent: {timings['bare_ms']:.1f} ms (perf_counter), "
        f"{cumulative_us / 1000:.1f} ms cumulative (-X importtime); "
        f"+ parser/verifier/events: {timings['pieces_ms']:.1f} ms"
    )
    assert timings["bare_ms"] > 0 and cumulative_us > 0


def _imports_of(path: Path, module: str) -> set[str]:
    """Every wa_agent module ``path`` imports anywhere (top level, in functions, under
    TYPE_CHECKING), resolved to dotted names."""
    import ast

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(0, node.level - 1)):
                base = base.rsplit(".", 1)[0]
            target = (
                (f"{base}.{node.module}" if node.module else base)
                if node.level
                else (node.module or "")
            )
            for alias in node.names:
                found.add(target)
                found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("wa_agent")}


def test_phone_and_the_simulator_are_not_an_import_cycle() -> None:
    """The phone widget is a view on the simulator and imports nothing of wa_agent.testing
    (not even for type checking: it types the simulator with protocols); only the
    simulator's phone() imports the phone."""
    root = ROOT / "wa_agent"
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    phone = _imports_of(modules["wa_agent.phone"], "wa_agent.phone")
    assert not any(name.startswith("wa_agent.testing") for name in phone), phone
    simulator = _imports_of(modules["wa_agent.testing.simulator"], "wa_agent.testing.simulator")
    assert "wa_agent.phone" in simulator
