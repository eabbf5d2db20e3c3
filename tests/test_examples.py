"""The composition examples in ``examples/`` run as scripts and do what they print.

Each example is run the way a reader runs it (``python examples/<name>.py``) in a fresh
interpreter, offline: its Cloud API emulator and servers listen on 127.0.0.1 only. The
checks read what the script printed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: float = 60) -> list[str]:
    """Run ``examples/<name>`` and return its stdout lines; fail on a non-zero exit or a
    traceback."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def test_compose_fastapi() -> None:
    """The FastAPI bot built from the pieces verifies Meta's handshake, refuses unsigned
    posts, ignores a redelivery, verifies a non-ASCII body and answers each user in order
    with its own counter kept in the store's history; every answered message is marked read."""
    lines = run_example("compose_fastapi.py")
    assert lines[:7] == [
        "GET /webhook, right token: 200 1158201444",
        "GET /webhook, wrong token: 403",
        "POST Alice 'hello': 200 processing",
        "POST Alice 'hello' again (Meta redelivers): 200 ignored",
        "POST Bob 'Grüße 👋': 200 processing",
        "POST Alice 'again': 200 processing",
        "POST unsigned: 403 invalid_signature",
    ]
    replies = [line for line in lines if line.startswith("reply to ")]
    assert sorted(replies) == sorted(
        [
            "reply to 15551230001: Message #1 from you: 'hello'",
            "reply to 15551230002: Message #1 from you: 'Grüße 👋'",
            "reply to 15551230001: Message #2 from you: 'again'",
        ]
    )
    alice = [r for r in replies if "15551230001" in r]
    assert alice[0].endswith("'hello'") and alice[1].endswith("'again'")  # in order
    assert lines[-1] == "messages marked read: 3"


def test_compose_starlette_and_mounted_manager() -> None:
    """The Starlette composition answers through the Sender, and a WhatsAppInterface mounted
    with InterfaceManager.app inside a FastAPI app works next to the app's own routes,
    started and stopped by the parent's lifespan, keeping per-user history (CHAT)."""
    lines = run_example("compose_starlette.py")
    assert lines == [
        "starlette GET /webhook: 200 42",
        "starlette POST 'stressed': 200 processing",
        "starlette reply: desserts",
        "fastapi GET /orders/7: 200 {'order': 7, 'status': 'shipped'}",
        "fastapi GET /bot/whatsapp/webhook: 200 43",
        "fastapi POST 'hi': 200 processing",
        "fastapi POST 'me again': 200 processing",
        "mounted bot reply: Hello Bea! Earlier messages: 0.",
        "mounted bot reply: Hello Bea! Earlier messages: 1.",
        "mounted bot health: received=2 processed=2 mode=chat",
    ]


@pytest.mark.redis
def test_worker_scale_out(redis_url: str) -> None:
    """Two receiver processes and two worker processes share Redis: every webhook delivered
    to both receivers at once is recorded by exactly one, and each message is answered
    exactly once, in order per user, by whichever worker holds that user's lease."""
    lines = run_example("worker.py", "--redis-url", redis_url, timeout=90)
    deliveries = [line for line in lines if "delivered to both receivers" in line]
    assert len(deliveries) == 6
    assert all(line.endswith("['ignored', 'processing']") for line in deliveries)
    assert "receivers recorded 6 message(s), ignored 6 duplicate(s)" in lines
    assert "replies to Ana: ['#1: ANA SAYS 1', '#2: ANA SAYS 2']" in lines
    assert "replies to Ben: ['#1: BEN SAYS 1', '#2: BEN SAYS 2']" in lines
    assert "replies to Cai: ['#1: CAI SAYS 1', '#2: CAI SAYS 2']" in lines
    answered = [line for line in lines if line.startswith("worker-")]
    assert len(answered) == 2  # both workers shut down cleanly on SIGTERM and reported
    assert sum(int(line.split(" answered ")[1].split()[0]) for line in answered) == 6


def test_heartbeat_only() -> None:
    """A HeartbeatScheduler in the app's own task group delivers through the Sender on its
    schedule; outside the 24-hour window it sends the template, or skips without one; a
    second process sharing the store is kept out by the lease."""
    lines = run_example("heartbeat_only.py")
    assert lines[:3] == [
        "beat -> 15551230001: Reminder: drink a glass of water.",
        "beat -> 15551230001: Reminder: stand up and stretch.",
        "beat -> 15551230001: Reminder: look out of the window.",
    ]
    assert lines[3] == "outside the window: delivered, sent a template 'daily_reminder'"
    assert lines[4] == (
        "outside the window, no template: skipped: outside the 24-hour "
        "window and no template configured"
    )
    assert lines[5] == "second process: skipped: heartbeat lease held by another worker"
    assert lines[6].startswith("first process: delivered=")
    assert lines[6].endswith("skipped=1 failures=0")


def test_until_next_daily_time() -> None:
    """heartbeat_only.until() gives the delay to the next daily time, tomorrow once passed."""
    from datetime import UTC, datetime, time, timedelta

    spec = importlib.util.spec_from_file_location("heartbeat_only", EXAMPLES / "heartbeat_only.py")
    assert spec is not None and spec.loader is not None
    heartbeat_only = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heartbeat_only)
    now = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert heartbeat_only.until(time(9, 0), now) == timedelta(minutes=30)
    assert heartbeat_only.until(time(8, 0), now) == timedelta(hours=23, minutes=30)
    assert heartbeat_only.until(time(8, 30), now) == timedelta(days=1)
