"""The two seed examples (``examples/seed_chat.py``, ``examples/seed_heartbeat.py``) run as
scripts: offline they play a scripted conversation on the simulator; with the WHATSAPP_*
variables they serve the webhook (checked on 127.0.0.1 only; nothing is sent anywhere)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STRIP = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "ALLOWED_NUMBERS",
    "HEARTBEAT_RECIPIENT",
    "HOST",
    "PORT",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIP}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def run_offline(name: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def test_seed_chat_offline_conversation() -> None:
    """Offline, seed_chat.py says what to set, falls back to the DemoAgent and prints a
    conversation showing per-user history, a /reset greeting and a whitelist refusal."""
    lines = run_offline("seed_chat.py")
    assert "WHATSAPP_ACCESS_TOKEN" in lines[0] and "simulator" in lines[0]
    assert "ANTHROPIC_API_KEY is not set" in lines[1] and "DemoAgent" in lines[1]
    talk = "\n".join(lines[2:])
    turns = talk.split("\n")
    assert turns[0] == "Alice: hello" and turns[1].startswith("Bot: Hello Alice!")
    assert turns[2] == "Alice: What is 6 times 7?"
    assert "We have talked 1 time before" in talk.split("Bob: hi")[0]
    bob_part = talk.split("Bob: hi")[1].split("Alice: /reset")[0]
    assert bob_part.strip().startswith("Bot: Hello Bob!") and "talked" not in bob_part
    after_reset = talk.split("Alice: /reset")[1]
    assert after_reset.strip().startswith("Bot: Fresh start!")
    remember = after_reset.split("Alice: Do you remember me?")[1].split("Mallory:")[0]
    assert "talked" not in remember  # history cleared by the reset
    assert turns[-2:] == ["Mallory: hi, can I use this bot?", "Bot: This operation not allowed"]


def test_seed_heartbeat_offline_beats() -> None:
    """Offline, seed_heartbeat.py answers Alice, then the agent's own heartbeat writes to her
    twice with no message from her, and she is the remembered recipient."""
    lines = run_offline("seed_heartbeat.py")
    assert "ANTHROPIC_API_KEY is not set" in lines[1]
    assert lines[2] == "Alice: hello" and lines[3].startswith("Bot: Hello Alice!")
    assert lines[4:6] == ["Bot (heartbeat): Just checking in: I'm still here."] * 2
    assert lines[6] == "heartbeat: every 1 s, recipient 15551230001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_seed_examples_serve_with_whatsapp_variables(tmp_path: Path) -> None:
    """With the four WHATSAPP_* variables set, each example serves the webhook: Meta's
    verification handshake succeeds, /health answers in CHAT mode, and Ctrl+C (SIGINT)
    stops it cleanly. The durable SQLite store is created in the working directory."""
    for name, db in (("seed_chat.py", "seed_chat.db"), ("seed_heartbeat.py", "seed_heartbeat.db")):
        port = free_port()
        env = clean_env(
            WHATSAPP_VERIFY_TOKEN="verify-me",
            WHATSAPP_APP_SECRET="app-secret",
            WHATSAPP_ACCESS_TOKEN="token",
            WHATSAPP_PHONE_NUMBER_ID="123456",
            HOST="127.0.0.1",
            PORT=str(port),
        )
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = httpx.Client(trust_env=False, timeout=10)
        try:
            base = f"http://127.0.0.1:{port}/whatsapp"
            deadline = time.monotonic() + 30
            while True:
                try:
                    verify = client.get(
                        f"{base}/webhook",
                        params={
                            "hub.mode": "subscribe",
                            "hub.verify_token": "verify-me",
                            "hub.challenge": "31337",
                        },
                    )
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "the example never listened"
                    time.sleep(0.1)
            assert (verify.status_code, verify.text) == (200, "31337")
            health = client.get(f"{base}/health").json()
            assert (health["interface"], health["mode"], health["status"]) == (
                "WhatsAppBot",
                "chat",
                "ok",
            )
            assert ("heartbeat" in health) is (name == "seed_heartbeat.py")
        finally:
            client.close()
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert (tmp_path / db).exists()
