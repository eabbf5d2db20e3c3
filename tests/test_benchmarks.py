"""Smoke test of the benchmark scripts: each runs with tiny settings (in parallel, on
loopback) and ends with its JSON line. Nothing is asserted about timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

#: script -> tiny arguments (each finishes in a few seconds with the Python client).
TINY: dict[str, list[str]] = {
    "ack.py": [
        "--client",
        "python",
        "--reps",
        "1",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--concurrency",
        "8",
        "--bodies",
        "2000",
        "--targets",
        "bare,wa-memory",
    ],
    "latency.py": [
        "--client",
        "python",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--rate",
        "200",
        "--agent-delay",
        "0.2",
        "--targets",
        "bare,wa-memory,wa-split",
    ],
    "e2e.py": [
        "-n",
        "60",
        "--deadline",
        "8",
        "--settle",
        "0.2",
        "--connections",
        "8",
        "--no-ceiling",
        "--only",
        "wa-memory,wa-sqlite,baseline",
    ],
    "parser.py": ["--bodies", "300", "--repeats", "1"],
    "coldstart.py": ["--rounds", "1"],
    "memory.py": ["--conversations", "100", "--exchanges", "1"],
}

KEYS: dict[str, set[str]] = {
    "ack.py": {"benchmark", "client", "machine", "results", "targets"},
    "latency.py": {"benchmark", "client", "results", "targets"},
    "e2e.py": {"benchmark", "results", "ratios", "lost", "duplicated", "targets"},
    "parser.py": {"benchmark", "results", "targets"},
    "coldstart.py": {"benchmark", "results", "targets"},
    "memory.py": {"benchmark", "results"},
}


@pytest.fixture(scope="module")
def outputs() -> dict[str, tuple[int, str, str]]:
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / name), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for name, args in TINY.items()
    }
    out: dict[str, tuple[int, str, str]] = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=90)
            out[name] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return out


def _last_json(stdout: str) -> dict[str, Any]:
    return dict(json.loads(stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("script", sorted(TINY))
def test_script_ends_with_its_json_line(
    script: str, outputs: dict[str, tuple[int, str, str]]
) -> None:
    """Each benchmark exits 0 and its last line is one JSON object with the keys the docs
    describe, naming the benchmark."""
    code, stdout, stderr = outputs[script]
    assert code == 0, stderr[-3000:]
    data = _last_json(stdout)
    assert KEYS[script] <= data.keys()
    assert data["benchmark"] == script.removesuffix(".py")


def test_e2e_answers_every_acknowledged_message_once(
    outputs: dict[str, tuple[int, str, str]],
) -> None:
    """In the end-to-end run every message wa_agent acknowledged was answered exactly once
    (lost == duplicated == 0), in every wa_agent scenario."""
    data = _last_json(outputs["e2e.py"][1])
    assert data["lost"] == 0
    assert data["duplicated"] == 0
    wa_runs = [r for r in data["results"] if r["scenario"].startswith("wa-")]
    assert wa_runs
    assert all(r["finished"] and r["acked"] == r["n"] for r in wa_runs)


def test_latency_split_layout_acks_everything(outputs: dict[str, tuple[int, str, str]]) -> None:
    """The receiver/worker layout (``wa-split``: a receive-only server and a worker on one
    throwaway redis-server) runs in the latency benchmark: every webhook got its 200."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    _code, stdout, _stderr = outputs["latency.py"]
    split = _last_json(stdout)["results"]["wa-split"]
    assert split["requests"] > 0
    assert split["non_200"] == 0 and split["errors"] == 0
