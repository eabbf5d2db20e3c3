"""The demo terminal (`wa-agent demo`) as a person uses it: typed through a real pseudo
terminal for Ctrl-C, piped for the commands."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wa_agent.terminal import Action, help_text, parse_line

REPO = Path(__file__).resolve().parents[1]

COUNTING_BOT = textwrap.dedent("""
    import asyncio

    seen = []

    async def agent(request):
        seen.append(request.text)
        return f"#{len(seen)}: {request.text}"

    async def slow(request):
        await asyncio.sleep(60)
        return "too late"
""")


class Terminal:
    """`wa-agent demo` running on a pseudo terminal (so stdin is a TTY, as for a person)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        import pty

        env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
        env["TERM"] = "dumb"
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the demo
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "wa_agent", "demo", *args], env)
        self.output = b""
        self._seen = 0  # read_until() looks past this point of the output
        self.status: int | None = None

    def read_until(self, token: bytes, timeout: float = 30.0) -> bool:
        """Read the screen until ``token`` appears after the previous token found."""
        deadline = time.monotonic() + timeout
        while token not in self.output[self._seen :] and time.monotonic() < deadline:
            if not self._read(0.1):
                break
        found = self.output.find(token, self._seen)
        if found < 0:
            return False
        self._seen = found + len(token)
        return True

    def press_ctrl_c(self) -> None:
        """Ctrl-C as a person presses it: a moment after the screen changed (the terminal
        turns it into SIGINT for the demo)."""
        time.sleep(0.3)
        self.type(b"\x03")

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if ready:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                return False
            if not chunk:
                return False
            self.output += chunk
        return True

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float) -> int | None:
        """The exit status once the demo ends within ``timeout`` seconds, else ``None``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                while self._read(0.05):  # what it printed last
                    pass
                return self.status
            self._read(0.05)
        return None

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    (tmp_path / "countbot.py").write_text(COUNTING_BOT)
    return tmp_path


@pytest.fixture
def terminal(bot_dir: Path) -> Iterator[type[Terminal]]:
    started: list[Terminal] = []

    def start(args: list[str]) -> Terminal:
        term = Terminal(args, bot_dir)
        started.append(term)
        return term

    yield start  # type: ignore[misc]
    for term in started:
        term.close()


def test_ctrl_c_at_the_prompt_leaves_at_once(terminal: type[Terminal]) -> None:
    """Ctrl-C at the prompt ends the demo at once with status 0 and no traceback (it used
    to wait for Enter, then print a traceback)."""
    term = terminal(["--agent", "countbot:agent"])
    assert term.read_until(b"you> "), term.text
    term.type(b"hello\r")
    assert term.read_until(b"bot> #1: hello"), term.text
    assert term.read_until(b"you> "), term.text
    term.press_ctrl_c()
    assert term.wait(10) == 0, term.text
    assert "Traceback" not in term.text


def test_second_ctrl_c_quits_without_waiting(terminal: type[Terminal]) -> None:
    """Ctrl-C while the bot is still answering starts a clean stop (which waits for the
    answer in progress); a second Ctrl-C quits at once (status 130), never hangs."""
    term = terminal(["--agent", "countbot:slow"])
    assert term.read_until(b"you> "), term.text
    term.type(b"hello\r")
    term.press_ctrl_c()  # the agent is sleeping by now
    assert term.read_until(b"press it again to quit without waiting"), term.text
    term.press_ctrl_c()
    assert term.wait(5) == 130, term.text
    assert "quit without waiting" in term.text
    assert "Traceback" not in term.text


def test_ctrl_d_at_the_prompt_leaves(terminal: type[Terminal]) -> None:
    """Ctrl-D (end of input) at the prompt ends the demo with status 0."""
    term = terminal(["--agent", "countbot:agent"])
    assert term.read_until(b"you> "), term.text
    term.type(b"\x04")
    assert term.wait(10) == 0, term.text


def _demo(lines: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    return subprocess.run(
        [sys.executable, "-m", "wa_agent", "demo", *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_piped_commands_help_unknown_and_usage(bot_dir: Path) -> None:
    """/help lists the commands; an unknown /command, /image without a path, /doc of a
    missing file and /location with impossible coordinates each get one line and send
    nothing (the bot's counter only counts the real messages); // sends a slash."""
    script = (
        "/help\n/frobnicate now\n/image\n/doc   \n/doc nope.pdf\n/location 91 0\n"
        "/location 52.5 200\n/location north east\n/location 1\nreal one\n"
        "//frobnicate\n"
    )
    result = _demo(script, bot_dir, "--agent", "countbot:agent")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for command in (
        "/image PATH",
        "/doc PATH",
        "/location LAT LON [NAME]",
        "/help",
        "/quit",
        "//text",
    ):
        assert command in out
    assert "/reset" not in out  # task mode: no reset command to offer
    assert "! unknown command /frobnicate: /help lists the commands" in out
    assert out.count("! usage: /image PATH") == 1
    assert out.count("! usage: /doc PATH") == 1
    assert "! cannot read nope.pdf: No such file or directory" in out
    assert out.count("! usage: /location LAT LON [NAME]") == 4
    replies = [line for line in out.splitlines() if line.startswith("bot> ")]
    assert replies == ["bot> #1: real one", "bot> #2: /frobnicate"]
    assert "Traceback" not in result.stderr


def test_reset_is_offered_and_sent_in_chat_mode(bot_dir: Path) -> None:
    """In chat mode /help offers the interface's reset command, and /reset reaches the
    interface (the built-in demo bot greets afresh)."""
    result = _demo("/help\nhello\n/reset\n", bot_dir)
    assert result.returncode == 0, result.stderr
    assert "/reset" in result.stdout.split("bot> ")[0]
    assert result.stdout.splitlines()[-1].startswith("bot> Fresh start!")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello", Action("text", text="hello")),
        ("  spaced  ", Action("text", text="spaced")),
        ("", None),
        ("//etc", Action("text", text="/etc")),
        ("/QUIT", Action("quit")),
        ("/exit", Action("quit")),
        ("/help", Action("help")),
        ("/image cat.png", Action("image", path=Path("cat.png"))),
        ("/image 'my cat.png'", Action("image", path=Path("my cat.png"))),
        ("/doc a b.pdf", Action("document", path=Path("a b.pdf"))),
        (
            "/location -33.9 151.2 Sydney Opera",
            Action("location", text="Sydney Opera", latitude=-33.9, longitude=151.2),
        ),
        ("/location 90 -180", Action("location", latitude=90.0, longitude=-180.0)),
    ],
)
def test_parse_line(line: str, expected: Action | None) -> None:
    """Typed lines become the right action: text, quit, help, media with the path as
    typed (quotes removed), a location within range."""
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "/location nan 0",
        "/location 0 inf",
        "/location -90.5 0",
        "/location 0 180.01",
        "/image",
        "/doc '' ",
        "/stats",
        "/reset",
    ],
)
def test_parse_line_refuses(line: str) -> None:
    """Impossible coordinates, a missing path and unknown commands (``/reset`` too when
    the bot has no reset command) give a message instead of an action."""
    assert isinstance(parse_line(line), str)


def test_reset_command_is_the_interfaces() -> None:
    """The reset command recognised (and listed) is the interface's own."""
    assert parse_line("/start", reset_command="/start") == Action("text", text="/start")
    assert isinstance(parse_line("/reset", reset_command="/start"), str)
    assert "/start" in help_text("/start") and "/reset" not in help_text("/start")


def test_handoff_commands_parse() -> None:
    """The interface's handoff command is sent to the bot as text (only when it has one);
    /takeover, /operator TEXT and /back are the operator's side; /operator needs text."""
    assert parse_line("/human", handoff_command="/human") == Action("text", text="/human")
    assert isinstance(parse_line("/human"), str)
    assert parse_line("/takeover") == Action("takeover")
    assert parse_line("/BACK") == Action("back")
    assert parse_line("/operator  Hi, I am Sam ") == Action("operator", text="Hi, I am Sam")
    assert isinstance(parse_line("/operator"), str)
    listed = help_text(None, "/human")
    assert "/human" in listed and "/operator TEXT" in listed


def test_demo_hands_the_conversation_to_the_operator_and_back(tmp_path: Path) -> None:
    """Piped: `/human` gets the handoff message and the terminal says a person has the
    conversation; the user's next line gets no answer (and no wait); `/operator TEXT`
    reaches the user; `/back` gives it back and the bot answers the next line again;
    `/back` when not handed off is explained."""
    (tmp_path / "countbot.py").write_text(COUNTING_BOT)
    lines = ["hi", "/human", "hello?", "/operator Hi, I am Sam", "/back", "thanks", "/back"]
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "wa_agent", "demo", "--agent", "countbot:agent", "--mode", "chat"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")},
    )
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.splitlines() if not line.startswith(("wa-agent", "  "))]
    assert shown == [
        "bot> #1: hi",
        "bot> I have asked a person to take over. They will answer you here.",
        (
            "(a person has the conversation now: the bot stays silent; /operator TEXT writes as "
            "them, /back hands it back to the bot)"
        ),
        "operator> Hi, I am Sam",
        "(the bot answers again)",
        "bot> #2: thanks",
        "! the conversation is not handed off (/takeover first)",
    ]
    assert time.monotonic() - start < 30  # "hello?" did not wait for the 120 s timeout
