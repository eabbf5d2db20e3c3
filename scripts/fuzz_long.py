#!/usr/bin/env python3
"""A long fuzzing run of the webhook endpoint: the properties of ``tests/test_fuzz.py`` with
many more hypothesis examples, round after round (fresh random seeds each round) until the
time budget is spent or a property fails.

    .venv/bin/python scripts/fuzz_long.py --minutes 5 --scale 20

Each round runs ``pytest tests/test_fuzz.py`` with ``WA_FUZZ_SCALE`` (every property's
example budget is multiplied by it). The last line is the figure for the README:

    fuzz_long: 123,456 inputs tried in 5.0 min (9 rounds, 7 properties), failures found: 0

Exit status 1 if any round failed (hypothesis prints the minimal failing input and keeps it
in ``.hypothesis/`` so the normal test run replays it).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="time budget; a round is not cut short (default 5)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=20.0,
        help="multiplier of each property's example budget per round (default 20)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="stop after this many rounds (default: only the time budget)",
    )
    args = parser.parse_args(argv)

    totals: collections.Counter[str] = collections.Counter()
    failures = 0
    rounds = 0
    started = time.monotonic()
    deadline = started + args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "examples.json"
        while time.monotonic() < deadline and (not args.rounds or rounds < args.rounds):
            rounds += 1
            report.unlink(missing_ok=True)
            env = dict(os.environ, WA_FUZZ_SCALE=str(args.scale), WA_FUZZ_REPORT=str(report))
            t0 = time.monotonic()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "tests/test_fuzz.py",
                    "-q",
                    "-x",
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "no:logging",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            counts = json.loads(report.read_text()) if report.exists() else {}
            totals.update(counts)
            summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(
                f"round {rounds}: {sum(counts.values()):,} inputs in "
                f"{time.monotonic() - t0:.0f} s: {summary}",
                flush=True,
            )
            if result.returncode != 0:
                failures += 1
                print(result.stdout[-6000:], result.stderr[-2000:], sep="\n", flush=True)
                break
    elapsed = (time.monotonic() - started) / 60
    for name, count in sorted(totals.items()):
        print(f"  {name:>16}: {count:,}")
    print(
        f"fuzz_long: {sum(totals.values()):,} inputs tried in {elapsed:.1f} min "
        f"({rounds} rounds, {len(totals)} properties), failures found: {failures}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
