"""Cold start: how long ``import wa_agent`` takes, what it drags in, and how long
``await manager.start()`` takes until the server is listening.

Every sample is a fresh interpreter (``python -c ...``), so nothing is cached in-process;
the OS page cache is warm after the first round (discarded as a warm-up). Reported: the
median and min–max of ``--rounds`` samples.

* ``import wa_agent``: the import alone, timed inside the child.
* ``from wa_agent import WhatsAppInterface, InterfaceManager``: what a bot script imports.
* ``manager.start()`` → listening: an InterfaceManager with one interface (memory store,
  Sender built but never called), timed from the call until it returns — it returns once
  uvicorn accepts connections — and checked with a TCP connect. The second ``start()`` in
  the same process (after ``stop()``) is reported as "warm".
* optional extras (redis, ipywidgets, nest_asyncio, pyngrok, fastapi, starlette, ...) must
  not be imported by ``import wa_agent``.

    python benchmarks/coldstart.py            # about 10 s
    python benchmarks/coldstart.py --quick    # about 3 s
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import SRC, emit, fmt_range, machine_info, table

GOAL_IMPORT_MS = 200.0
EXTRAS = (
    "redis",
    "ipywidgets",
    "nest_asyncio",
    "pyngrok",
    "fastapi",
    "starlette",
    "traitlets",
    "IPython",
    "uvicorn",
    "httptools",
    "anthropic",
    "openai",
)

_IMPORT = """
import sys, time, json
t = time.perf_counter()
import wa_agent
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "modules": sorted(m for m in sys.modules if "." not in m)}))
"""

_IMPORT_HOSTING = """
import time, json
t = time.perf_counter()
from wa_agent import WhatsAppInterface, InterfaceManager
print(json.dumps({"s": time.perf_counter() - t}))
"""

_START = """
import asyncio, json, socket, time
t_import = time.perf_counter()
from wa_agent import InterfaceManager, WhatsAppInterface
from wa_agent.sender import Sender
t_import = time.perf_counter() - t_import

async def agent(request):
    return "ok"

async def main():
    out = {"import_s": t_import}
    for key in ("cold_s", "warm_s"):
        iface = WhatsAppInterface(agent, verify_token="v", app_secret="s",
                                  sender=Sender("t", "1", base_url="http://127.0.0.1:9"))
        manager = InterfaceManager([iface])
        t = time.perf_counter()
        url = await manager.start("127.0.0.1", 0)
        out[key] = time.perf_counter() - t
        host, port = url.rsplit(":", 1)
        socket.create_connection(("127.0.0.1", int(port)), 2).close()
        t = time.perf_counter()
        await manager.stop()
        out[key.replace("_s", "_stop_s")] = time.perf_counter() - t
    print(json.dumps(out))

asyncio.run(main())
"""


def run_child(code: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="")
    proc = subprocess.run(
        [sys.executable, *args, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def interpreter_ms() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - t) * 1000


def imports_by_package(code: str, n: int = 8) -> list[tuple[str, float]]:
    """Where import time goes under ``code``: ``-X importtime`` self times summed per
    top-level package (interpreter start-up excluded), slowest first, in ms."""
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    lines = [
        ln
        for ln in proc.stderr.splitlines()
        if ln.startswith("import time:") and "cumulative" not in ln
    ]
    names = [ln.rsplit("|", 1)[1].strip() for ln in lines]
    start = max((i for i, name in enumerate(names) if name == "site"), default=-1) + 1
    totals: dict[str, float] = {}
    for line, name in zip(lines[start:], names[start:], strict=True):
        self_us = int(line.split(":", 1)[1].split("|", 1)[0])
        root = name.split(".", 1)[0]
        totals[root] = totals.get(root, 0.0) + self_us / 1000
    return sorted(totals.items(), key=lambda kv: -kv[1])[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description="import time and start-to-listening time")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="~5 s smoke run")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 3
    t_start = time.monotonic()
    run_child(_IMPORT)  # warm the page cache and any bytecode cache
    imports, hosting, starts = [], [], []
    modules: list[str] = []
    for _ in range(args.rounds):
        child = run_child(_IMPORT)
        imports.append(child["s"] * 1000)
        modules = child["modules"]
        hosting.append(run_child(_IMPORT_HOSTING)["s"] * 1000)
    for _ in range(max(1, args.rounds // 2)):
        starts.append(run_child(_START))
    bare_python = statistics.median(interpreter_ms() for _ in range(3))
    extras_loaded = sorted(set(EXTRAS) & set(modules))
    slowest = imports_by_package("import wa_agent")
    slowest_hosting = imports_by_package("from wa_agent import WhatsAppInterface, InterfaceManager")

    cold = [s["cold_s"] * 1000 for s in starts]
    warm = [s["warm_s"] * 1000 for s in starts]
    stop = [s["cold_stop_s"] * 1000 for s in starts]
    rows = [
        ["import wa_agent", fmt_range(imports, 1)],
        ["from wa_agent import WhatsAppInterface, InterfaceManager", fmt_range(hosting, 1)],
        ["manager.start() -> listening (first in process)", fmt_range(cold, 1)],
        ["manager.start() -> listening (second, warm)", fmt_range(warm, 1)],
        ["manager.stop() (idle)", fmt_range(stop, 1)],
        ["python -c pass (interpreter start, for scale)", f"{bare_python:.1f}"],
    ]
    print(table(["what", "ms median (min–max)"], rows))
    print(f"\noptional extras imported by `import wa_agent`: {extras_loaded or 'none'}")
    print(
        "import wa_agent, by package (ms): " + ", ".join(f"{name} {ms:.1f}" for name, ms in slowest)
    )
    print(
        "hosting import, by package (ms): "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in slowest_hosting)
    )
    import_ms = statistics.median(imports)
    result = {
        "benchmark": "coldstart",
        "machine": machine_info(),
        "settings": {"rounds": args.rounds},
        "results": {
            "import_ms": import_ms,
            "import_ms_all": imports,
            "import_hosting_ms": statistics.median(hosting),
            "start_cold_ms": statistics.median(cold),
            "start_warm_ms": statistics.median(warm),
            "stop_ms": statistics.median(stop),
            "python_startup_ms": bare_python,
            "extras_imported": extras_loaded,
            "import_by_package_ms": dict(slowest),
            "hosting_import_by_package_ms": dict(slowest_hosting),
            "modules_after_import": len(modules),
        },
        "targets": {
            "import wa_agent < 200 ms": {
                "goal_ms": GOAL_IMPORT_MS,
                "value_ms": import_ms,
                "met": import_ms < GOAL_IMPORT_MS,
            },
            "no extra imported": {"met": not extras_loaded, "imported": extras_loaded},
        },
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    emit(result)


if __name__ == "__main__":
    main()
