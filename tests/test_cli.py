"""The wa-agent command: the offline demo and the serve command's configuration checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wa_agent.cli import REQUIRED_ENV, load_object, strip_control

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], stdin: str = "", env: dict[str, str] | None = None,
         cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "wa_agent", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=full_env, cwd=cwd,
                          check=False)


def test_demo_answers_piped_hello() -> None:
    """Piping `hello` into `wa-agent demo` prints the demo bot's answer and exits 0."""
    result = _run(["demo"], stdin="hello\n")
    assert result.returncode == 0, result.stderr
    assert "bot> Hello You! I'm the wa_agent demo bot." in result.stdout


def test_demo_conversation_with_picture_location_and_reset(tmp_path: Path) -> None:
    """The demo handles an image upload, a location, a picture request and /reset in
    CHAT mode, answering each line in order."""
    image = tmp_path / "cat.png"
    from wa_agent.demo import make_png

    image.write_bytes(make_png(8, 8))
    script = (f"/image {image}\n/location 52.52 13.405 Berlin\nsend me a picture\n"
              "/reset\n")
    result = _run(["demo", "--name", "Ann"], stdin=script)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    assert lines[0].startswith("bot> Got your image: image/png")
    assert "You are at 52.5200, 13.4050 (Berlin)." in result.stdout
    assert "bot> Here is a picture for you." in lines
    assert any(line.startswith("bot> [image: image/png") for line in lines)
    assert lines[-1].startswith("bot> Fresh start!")


def test_demo_with_a_user_agent(tmp_path: Path) -> None:
    """`wa-agent demo --agent module:attr` runs the user's own agent on the simulator."""
    (tmp_path / "mybot.py").write_text(textwrap.dedent("""
        async def agent(request):
            return "MYBOT:" + request.text.upper()
    """))
    result = _run(["demo", "--agent", "mybot:agent"], stdin="ping\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bot> MYBOT:PING" in result.stdout


def test_demo_strips_terminal_escapes_from_bot_output(tmp_path: Path) -> None:
    """Control sequences in a reply never reach the terminal."""
    (tmp_path / "evil.py").write_text(textwrap.dedent("""
        async def agent(request):
            return "safe\\x1b[2J\\x1b]0;owned\\x07text\\x9b31m"
    """))
    result = _run(["demo", "--agent", "evil:agent"], stdin="x\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bot> safetext" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


def test_serve_refuses_to_start_without_configuration() -> None:
    """`wa-agent serve` with missing WHATSAPP_* variables exits non-zero naming them."""
    result = _run(["serve", "wa_agent.demo:DemoAgent"],
                  env={"WHATSAPP_VERIFY_TOKEN": "v", "WHATSAPP_APP_SECRET": "s"})
    assert result.returncode == 2
    assert "WHATSAPP_ACCESS_TOKEN" in result.stderr
    assert "WHATSAPP_PHONE_NUMBER_ID" in result.stderr
    assert "WHATSAPP_VERIFY_TOKEN" not in result.stderr
    assert set(REQUIRED_ENV) == {"WHATSAPP_VERIFY_TOKEN", "WHATSAPP_APP_SECRET",
                                 "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID"}


def test_load_object_errors_are_clear() -> None:
    """A bad module:attr spec exits with a message naming what is wrong."""
    with pytest.raises(SystemExit, match="expected module:attribute"):
        load_object("no_colon")
    with pytest.raises(SystemExit, match="cannot import"):
        load_object("surely_not_a_module_xyz:agent")
    with pytest.raises(SystemExit, match="has no attribute"):
        load_object("wa_agent.demo:Nope")
    assert load_object("wa_agent.demo:DemoAgent").__name__ == "DemoAgent"


@pytest.mark.parametrize(("raw", "clean"), [
    ("plain text\nnext line\ttab", "plain text\nnext line\ttab"),
    ("\x1b[31mred\x1b[0m", "red"),
    ("title\x1b]0;evil\x07done", "titledone"),
    ("bell\x07 and c1\x9b", "bell and c1"),
    ("\x1bcreset", "reset"),
])
def test_strip_control(raw: str, clean: str) -> None:
    """ANSI CSI/OSC sequences and C0/C1 control characters are removed; text, newlines
    and tabs are kept."""
    assert strip_control(raw) == clean


def test_serve_with_tunnel_prints_what_to_paste_into_meta(tmp_path: Path) -> None:
    """`wa-agent serve --tunnel` (real pyngrok, fake ngrok agent on loopback) prints the
    public webhook URL and the verify token, and Meta's verification GET through that URL
    gets the challenge back."""
    import re
    import signal
    import time

    import httpx

    from tests.fake_ngrok import write_launcher
    from tests.redis_server import free_port

    launcher = write_launcher(tmp_path, state_file=tmp_path / "state.json",
                              python=sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update({
        "WHATSAPP_VERIFY_TOKEN": "paste-me", "WHATSAPP_APP_SECRET": "s3cret",
        "WHATSAPP_ACCESS_TOKEN": "tok", "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
        "NGROK_AUTHTOKEN": "fake-auth-token", "PYNGROK_NGROK_PATH": str(launcher),
        "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
    })
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wa_agent", "serve", "wa_agent.demo:DemoAgent", "--host",
         "127.0.0.1", "--port", str(port), "--storage", str(tmp_path / "bot.db"), "--tunnel"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        output = ""
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while "paste-me" not in output and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            output += line
        assert "paste-me" in output, output + (proc.stderr.read() if proc.stderr else "")
        match = re.search(r"(https?://\S+/whatsapp/webhook)", output)
        assert match is not None, output
        challenge = httpx.get(match.group(1), params={
            "hub.mode": "subscribe", "hub.verify_token": "paste-me", "hub.challenge": "42"},
            timeout=10)
        assert (challenge.status_code, challenge.text) == (200, "42")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
