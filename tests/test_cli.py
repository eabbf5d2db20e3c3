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


def _run(
    args: list[str], stdin: str = "", env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wa_agent", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        cwd=cwd,
        check=False,
    )


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
    script = f"/image {image}\n/location 52.52 13.405 Berlin\nsend me a picture\n/reset\n"
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
    (tmp_path / "mybot.py").write_text(
        textwrap.dedent("""
        async def agent(request):
            return "MYBOT:" + request.text.upper()
    """)
    )
    result = _run(["demo", "--agent", "mybot:agent"], stdin="ping\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bot> MYBOT:PING" in result.stdout


def test_demo_strips_terminal_escapes_from_bot_output(tmp_path: Path) -> None:
    """Control sequences in a reply never reach the terminal."""
    (tmp_path / "evil.py").write_text(
        textwrap.dedent("""
        async def agent(request):
            return "safe\\x1b[2J\\x1b]0;owned\\x07text\\x9b31m"
    """)
    )
    result = _run(["demo", "--agent", "evil:agent"], stdin="x\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bot> safetext" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


#: A module like the README's: an agent, an interface in chat mode on SQLite, a manager.
MYBOT = textwrap.dedent("""
    from wa_agent import AgentRequest, InterfaceManager, WhatsAppInterface

    async def agent(request: AgentRequest) -> str:
        turns = len(request.history) // 2
        return f"You said {request.text!r} ({turns} earlier turns)"

    interface = WhatsAppInterface(agent, mode="chat", storage="bot.db")
    manager = InterfaceManager([interface])
    guarded = WhatsAppInterface(agent, mode="chat", name="guarded",
                                allowed_numbers=["+44 7700 900123"])
    beating = WhatsAppInterface(agent, name="beating", heartbeat_period=30)
    not_an_agent = 42

    class Bot:
        async def answer(self, request):
            return "never"
""")


def _mybot(tmp_path: Path) -> Path:
    (tmp_path / "mybot.py").write_text(MYBOT)
    return tmp_path


@pytest.mark.parametrize("attr", ["interface", "manager"])
def test_demo_runs_the_users_interface_or_manager_as_configured(tmp_path: Path, attr: str) -> None:
    """`wa-agent demo --agent mybot:interface` (or `:manager`) runs that object: it prints
    the effective mode, store and webhook path, answers in its chat mode (history kept),
    and keeps that history in the interface's own SQLite file."""
    result = _run(
        ["demo", "--agent", f"mybot:{attr}"], stdin="hello\nagain\n", cwd=_mybot(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    header = result.stdout.split("bot> ")[0]
    assert "chat mode" in header
    assert f"SQLite {tmp_path / 'bot.db'}" in header
    assert "webhook path: /whatsapp/webhook" in header
    assert "bot> You said 'hello' (0 earlier turns)" in result.stdout
    assert "bot> You said 'again' (1 earlier turns)" in result.stdout
    assert (tmp_path / "bot.db").is_file()


def test_demo_and_serve_run_a_bare_agent_in_task_mode_by_default(tmp_path: Path) -> None:
    """A bare agent without --mode runs in task mode in the demo (no history), as
    WhatsAppInterface(agent) would, and --mode chat switches history on."""
    cwd = _mybot(tmp_path)
    result = _run(["demo", "--agent", "mybot:agent"], stdin="a\nb\n", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "task mode" in result.stdout and "store: in memory" in result.stdout
    assert "bot> You said 'b' (0 earlier turns)" in result.stdout
    result = _run(["demo", "--agent", "mybot:agent", "--mode", "chat"], stdin="a\nb\n", cwd=cwd)
    assert "bot> You said 'b' (1 earlier turns)" in result.stdout


def test_demo_writes_as_an_allowed_number_of_a_whitelist(tmp_path: Path) -> None:
    """With a whitelisted interface, the demo user is its first allowed number (so the bot
    answers instead of refusing), and the header says who is answered."""
    result = _run(["demo", "--agent", "mybot:guarded"], stdin="hi\n", cwd=_mybot(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "answers only +447700900123" in result.stdout
    assert "bot> You said 'hi' (0 earlier turns)" in result.stdout
    result = _run(
        ["demo", "--agent", "mybot:guarded", "--number", "15551230001"], stdin="hi\n", cwd=tmp_path
    )
    assert "+15551230001 is not in 'guarded'" in result.stdout
    assert "bot> This operation not allowed" in result.stdout


def test_demo_runs_the_interfaces_heartbeat(tmp_path: Path) -> None:
    """An interface with a heartbeat runs it in the demo as configured: the header shows
    the period, and the interface answers as usual."""
    result = _run(["demo", "--agent", "mybot:beating"], stdin="hi\n", cwd=_mybot(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "interface 'beating': task mode" in result.stdout
    assert "heartbeat every 30 min" in result.stdout
    assert "bot> You said 'hi' (0 earlier turns)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["demo", "--agent", "mybot:interface", "--mode", "task"],
            (
                "--mode task conflicts with mybot:interface: interface 'WhatsApp' is configured with "
                "mode='chat'"
            ),
        ),
        (
            ["demo", "--agent", "mybot:not_an_agent"],
            (
                "mybot:not_an_agent is not an agent, a WhatsAppInterface or an InterfaceManager (it "
                "is 'int'"
            ),
        ),
        (["demo", "--agent", "mybot:Bot"], "mybot:Bot is the class Bot, not an agent"),
        (
            ["serve", "mybot:interface", "--storage", "other.db"],
            "mybot:interface is a WhatsAppInterface, configured in your code: --storage only apply",
        ),
        (["serve", "mybot:manager", "--mode", "task"], "--mode task conflicts with mybot:manager"),
    ],
)
def test_cli_mistakes_get_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    """What the commands cannot run (a conflicting option, an object that is not an agent,
    an interface or a manager, a class instead of an instance) exits 2 with one line
    naming the problem, and no traceback."""
    env = {
        "WHATSAPP_VERIFY_TOKEN": "v",
        "WHATSAPP_APP_SECRET": "s",
        "WHATSAPP_ACCESS_TOKEN": "t",
        "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
    }
    result = _run(args, env=env, cwd=_mybot(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def _serve(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    """Start `wa-agent serve` and return it with what it printed up to 'listening on'."""
    import time

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wa_agent", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    output = ""
    deadline = time.monotonic() + 30
    while "listening on" not in output and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        output += line
    return proc, output


def _stop(proc: subprocess.Popen[str]) -> str:
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.mark.parametrize(
    ("attr", "mode", "store"),
    [
        ("interface", "chat", "bot.db"),
        ("manager", "chat", "bot.db"),
        ("agent", "task", "wa_agent.db"),
    ],
)
def test_serve_runs_what_the_user_built(tmp_path: Path, attr: str, mode: str, store: str) -> None:
    """`wa-agent serve mybot:interface` / `:manager` / `:agent` starts, prints the
    effective mode, store and the webhook path `/whatsapp/webhook` (no tunnel), and serves
    in that mode: Meta's verification GET is answered and the health shows the mode."""
    import httpx

    from tests.redis_server import free_port

    port = free_port()
    env = {
        "WHATSAPP_VERIFY_TOKEN": "vt",
        "WHATSAPP_APP_SECRET": "s3cret",
        "WHATSAPP_ACCESS_TOKEN": "tok",
        "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
    }
    proc, output = _serve(
        _mybot(tmp_path), [f"mybot:{attr}", "--host", "127.0.0.1", "--port", str(port)], env
    )
    try:
        assert f"{mode} mode" in output, output
        assert f"store: SQLite {tmp_path / store}" in output
        assert f"listening on http://127.0.0.1:{port}/whatsapp/webhook" in output
        assert "https://<your public host>/whatsapp/webhook" in output
        base = f"http://127.0.0.1:{port}/whatsapp"
        for _ in range(100):  # the line is printed just before uvicorn binds
            try:
                health = httpx.get(f"{base}/health", timeout=5)
                break
            except httpx.ConnectError:
                import time

                time.sleep(0.1)
        assert health.json()["mode"] == mode
        challenge = httpx.get(
            f"{base}/webhook",
            params={"hub.mode": "subscribe", "hub.verify_token": "vt", "hub.challenge": "7"},
            timeout=5,
        )
        assert (challenge.status_code, challenge.text) == (200, "7")
    finally:
        err = _stop(proc)
    assert "Traceback" not in err, err


def test_serve_refuses_an_interface_without_its_secrets(tmp_path: Path) -> None:
    """`wa-agent serve mybot:interface` with no app secret or token anywhere exits 2
    naming what the interface is missing (serve always verifies signatures)."""
    result = _run(
        ["serve", "mybot:interface"], env={"WHATSAPP_VERIFY_TOKEN": "v"}, cwd=_mybot(tmp_path)
    )
    assert result.returncode == 2
    assert (
        "interface 'WhatsApp' is missing WHATSAPP_ACCESS_TOKEN, WHATSAPP_PHONE_NUMBER_ID, "
        "WHATSAPP_APP_SECRET" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_without_configuration() -> None:
    """`wa-agent serve` with missing WHATSAPP_* variables exits non-zero naming them."""
    result = _run(
        ["serve", "wa_agent.demo:DemoAgent"],
        env={"WHATSAPP_VERIFY_TOKEN": "v", "WHATSAPP_APP_SECRET": "s"},
    )
    assert result.returncode == 2
    assert "WHATSAPP_ACCESS_TOKEN" in result.stderr
    assert "WHATSAPP_PHONE_NUMBER_ID" in result.stderr
    assert "WHATSAPP_VERIFY_TOKEN" not in result.stderr
    assert set(REQUIRED_ENV) == {
        "WHATSAPP_VERIFY_TOKEN",
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_PHONE_NUMBER_ID",
    }


def test_load_object_errors_are_clear() -> None:
    """A bad module:attr spec exits with a message naming what is wrong."""
    with pytest.raises(SystemExit, match="expected module:attribute"):
        load_object("no_colon")
    with pytest.raises(SystemExit, match="cannot import"):
        load_object("surely_not_a_module_xyz:agent")
    with pytest.raises(SystemExit, match="has no attribute"):
        load_object("wa_agent.demo:Nope")
    assert load_object("wa_agent.demo:DemoAgent").__name__ == "DemoAgent"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain text\nnext line\ttab", "plain text\nnext line\ttab"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("title\x1b]0;evil\x07done", "titledone"),
        ("bell\x07 and c1\x9b", "bell and c1"),
        ("\x1bcreset", "reset"),
    ],
)
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

    _mybot(tmp_path)
    launcher = write_launcher(tmp_path, state_file=tmp_path / "state.json", python=sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update(
        {
            "WHATSAPP_VERIFY_TOKEN": "paste-me",
            "WHATSAPP_APP_SECRET": "s3cret",
            "WHATSAPP_ACCESS_TOKEN": "tok",
            "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
            "NGROK_AUTHTOKEN": "fake-auth-token",
            "PYNGROK_NGROK_PATH": str(launcher),
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wa_agent",
            "serve",
            "mybot:agent",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage",
            str(tmp_path / "bot.db"),
            "--tunnel",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
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
        challenge = httpx.get(
            match.group(1),
            params={"hub.mode": "subscribe", "hub.verify_token": "paste-me", "hub.challenge": "42"},
            timeout=10,
        )
        assert (challenge.status_code, challenge.text) == (200, "42")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


async def test_serve_logs_handoff_events(tmp_path: Path) -> None:
    """`wa-agent serve` shows handoff events without --verbose: a user's `/human` is
    answered with the handoff message (sent to the Cloud API emulator) and stderr says the
    conversation was handed off, by the user."""
    import asyncio

    import httpx

    from tests.redis_server import free_port
    from wa_agent.server import BackgroundServer
    from wa_agent.signature import SignatureVerifier
    from wa_agent.testing import CloudAPIEmulator, webhooks

    (tmp_path / "hbot.py").write_text(
        textwrap.dedent("""
        import os
        from wa_agent import WhatsAppInterface

        interface = WhatsAppInterface(lambda request: "hi", mode="chat",
                                      base_url=os.environ["EMULATOR_URL"])
    """)
    )
    emulator = CloudAPIEmulator(access_token="tok")
    port = free_port()
    async with BackgroundServer(emulator) as cloud:
        env = {
            "WHATSAPP_VERIFY_TOKEN": "vt",
            "WHATSAPP_APP_SECRET": "s3cret",
            "WHATSAPP_ACCESS_TOKEN": "tok",
            "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
            "EMULATOR_URL": cloud.url,
        }
        proc, output = await asyncio.to_thread(
            _serve, tmp_path, ["hbot:interface", "--host", "127.0.0.1", "--port", str(port)], env
        )
        try:
            assert "listening on" in output, output
            item = webhooks.text_message("15551230001", "/human")
            body = webhooks.encode(
                webhooks.envelope(messages=[item], phone_number_id="100000000000001")
            )
            headers = {
                "content-type": "application/json",
                "x-hub-signature-256": SignatureVerifier("s3cret").sign(body),
            }
            async with httpx.AsyncClient(trust_env=False) as client:
                for _ in range(100):
                    try:
                        response = await client.post(
                            f"http://127.0.0.1:{port}/whatsapp/webhook",
                            content=body,
                            headers=headers,
                        )
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.1)
            assert response.status_code == 200
            await emulator.wait_for_messages(1, timeout=15)
            assert "person" in (emulator.messages[0].text or "")
        finally:
            err = await asyncio.to_thread(_stop, proc)
        await emulator.aclose()
    assert "INFO wa_agent.handoff: conversation with" in err, err
    assert "handed off (by user: the user asked for a person)" in err
