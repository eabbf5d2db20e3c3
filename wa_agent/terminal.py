"""``wa-agent demo``: chat with a bot on the simulator from this terminal.

Interactive use has line editing and history (``readline``); piped input works too: each
line is sent, the bot's answers are printed, and the program ends at end of input.
Commands: ``/image PATH``, ``/doc PATH``, ``/location LAT LON [NAME]``, the interface's
reset command (``/reset``, chat mode only) and handoff command (``/human``), both sent to
the bot, ``/help``, ``/quit``; the operator's side of a handoff: ``/takeover``,
``/operator TEXT`` (write as the person who took over) and ``/back`` (hand back to the
bot); a line starting with ``//`` is sent as text without its first ``/``. Any other ``/word`` is
reported as unknown, not sent. Choices the bot offers are printed numbered; typing a number
taps that choice. Everything the bot sends is stripped of terminal control sequences before
it is printed.

The simulator and the bot run on an event loop in a background thread while this thread
reads the keyboard, so Ctrl-C at the prompt (or while waiting for an answer) leaves at
once: the bot is stopped and the program ends. A second Ctrl-C while it stops quits
without waiting.
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

from ._console import strip_control

if TYPE_CHECKING:
    from .testing.simulator import Reply, SimulatedUser, Simulator

__all__ = ["parse_line", "run_demo"]

T = TypeVar("T")

#: How long stopping the bot may take before the program gives up waiting.
STOP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Action:
    """What one typed line asks for (see :func:`parse_line`)."""

    kind: Literal[
        "text",
        "image",
        "document",
        "location",
        "help",
        "quit",
        "tap",
        "takeover",
        "operator",
        "back",
    ]
    text: str = ""
    path: Path | None = None
    latitude: float = 0.0
    longitude: float = 0.0


def help_text(reset_command: str | None, handoff_command: str | None = None) -> str:
    """The commands, as ``/help`` prints them (``reset_command``: only when the bot has
    one, i.e. a chat-mode interface; ``handoff_command`` likewise)."""
    rows = [
        ("/image PATH", "send a photo"),
        ("/doc PATH", "send a document"),
        ("/location LAT LON [NAME]", "share a location (degrees, e.g. 52.52 13.40 Berlin)"),
    ]
    if reset_command:
        rows.append((reset_command, "clear the conversation (sent to the bot)"))
    if handoff_command:
        rows.append((handoff_command, "ask for a person (sent to the bot)"))
    rows += [
        ("/takeover", "as the operator: take the conversation over from the bot"),
        ("/operator TEXT", "as the operator: write to the user"),
        ("/back", "as the operator: hand the conversation back to the bot"),
        ("1, 2, ...", "tap a numbered choice the bot offered"),
        ("//text", "send text that starts with /"),
        ("/help", "this list"),
        ("/quit", "leave (Ctrl-D and Ctrl-C too)"),
    ]
    width = max(len(command) for command, _ in rows)
    return "Type a message and press Enter. Commands:\n" + "\n".join(
        f"  {command:<{width}}  {what}" for command, what in rows
    )


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def parse_line(
    line: str, *, reset_command: str | None = None, handoff_command: str | None = None
) -> Action | str | None:
    """Turn a typed line into an :class:`Action`, a message for the user (``str``: a usage
    line or an unknown command; nothing is sent), or ``None`` for a blank line."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("//"):
        return Action("text", text=line[1:])
    if line.isdigit():
        return Action("tap", text=line)  # a numbered choice, when the bot offered some
    if not line.startswith("/"):
        return Action("text", text=line)
    command, _, rest = line.partition(" ")
    lowered = command.lower()
    if lowered in ("/quit", "/exit"):
        return Action("quit")
    if lowered in ("/help", "/?"):
        return Action("help")
    if lowered in ("/image", "/doc"):
        path = _unquote(rest)
        if not path:
            return f"usage: {lowered} PATH (a file on this computer)"
        return Action("image" if lowered == "/image" else "document", path=Path(path))
    if lowered == "/location":
        return _location(rest)
    if lowered in ("/takeover", "/back"):
        return Action("takeover" if lowered == "/takeover" else "back")
    if lowered == "/operator":
        if not rest.strip():
            return "usage: /operator TEXT (what the operator writes to the user)"
        return Action("operator", text=rest.strip())
    for sent in (reset_command, handoff_command):
        if sent and lowered == sent.lower() and not rest.strip():
            return Action("text", text=line)
    return (
        f"unknown command {strip_control(command)}: /help lists the commands "
        "(start the line with // to send it as text)"
    )


def _location(rest: str) -> Action | str:
    usage = (
        "usage: /location LAT LON [NAME]: latitude -90 to 90 and longitude -180 to 180, "
        "in degrees (e.g. /location 52.52 13.40 Berlin)"
    )
    words = rest.split()
    if len(words) < 2:
        return usage
    try:
        latitude, longitude = float(words[0]), float(words[1])
    except ValueError:
        return usage
    if not (
        math.isfinite(latitude)
        and math.isfinite(longitude)
        and -90 <= latitude <= 90
        and -180 <= longitude <= 180
    ):
        return usage
    return Action("location", text=" ".join(words[2:]), latitude=latitude, longitude=longitude)


def _describe(reply: Reply) -> str:
    """One printable line for a reply; every field the bot (or a user) controls, type and
    MIME type included, is stripped of control sequences. Choices are listed numbered (type
    the number to tap one)."""
    rich = _describe_rich(reply)
    if rich is not None:
        return strip_control(rich)
    if reply.type == "text":
        return strip_control(reply.text or "")
    parts = [f"[{reply.type}"]
    if reply.mime_type:
        parts.append(f": {reply.mime_type}")
    if reply.size is not None:
        parts.append(f", {reply.size} bytes")
    if reply.filename:
        parts.append(f", {reply.filename}")
    parts.append("]")
    if reply.text:
        parts.append(" " + reply.text)
    return strip_control("".join(parts))


def tap_or_text(action: Action, offered: Reply | None) -> Action:
    """A typed number taps that choice of the last reply that offered some; with no such
    choice it is sent as text."""
    if action.kind == "tap" and not (
        offered is not None and 1 <= int(action.text) <= len(offered.buttons)
    ):
        return Action("text", text=action.text)
    return action


def _describe_rich(reply: Reply) -> str | None:
    """Choices (numbered), a link button, a reaction, a location, contact cards or a voice
    note, readably; ``None`` for anything else."""
    if reply.buttons:
        lines = [reply.text or ""]
        if reply.list_button:
            lines.append(f"  [{reply.list_button}]")
        lines += [
            f"  {n}. {c.title}" + (f" ({c.description})" if c.description else "")
            for n, c in enumerate(reply.buttons, 1)
        ]
        return "\n".join(lines)
    link = reply.link_button
    if link is not None:
        return f"{reply.text or ''}\n  [{link.label}: {link.url}]"
    if reply.reaction:
        return f"[reacted {reply.reaction}]"
    location = reply.location
    if location is not None:
        place = ", ".join(p for p in (location.name, location.address) if p)
        return f"[location {location.latitude}, {location.longitude}" + (
            f": {place}]" if place else "]"
        )
    if reply.contacts:
        return "\n".join(
            f"[contact {c.name}" + (f": {', '.join(c.phones)}]" if c.phones else "]")
            for c in reply.contacts
        )
    if reply.voice:
        return f"[voice note, {reply.size} bytes]"
    return None


class _LoopThread:
    """An event loop running in a daemon thread; :meth:`run` waits for a coroutine on it
    from the calling thread, which stays free to take Ctrl-C."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True, name="wa-agent-demo-loop")
        self._thread.start()

    def _main(self) -> None:
        # Ctrl-C must interrupt the thread that reads the keyboard: the kernel hands SIGINT
        # to any thread that does not block it, and a loop thread (or a worker thread it
        # starts, which inherits the mask) taking it would leave input() waiting.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:  # Ctrl-C or a timeout: do not leave it running
            future.cancel()
            raise

    def close(self) -> None:
        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.run(finish(), STOP_TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(STOP_TIMEOUT)
            if not self._thread.is_alive():
                self.loop.close()


def run_demo(
    bot: Any = None,
    *,
    name: str = "You",
    number: str = "15551230001",
    timeout: float = 120.0,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Start the simulator with ``bot`` (an agent, a :class:`~wa_agent.WhatsAppInterface`
    or an :class:`~wa_agent.InterfaceManager`; default: the built-in demo bot in chat mode)
    and chat with its first interface as the user ``number`` until end of input, ``/quit``
    or Ctrl-C. Returns the exit status (0; 1 if the bot could not start)."""
    from .interface import InterfaceMode, WhatsAppInterface
    from .testing.simulator import Simulator

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    interactive = stdin is sys.stdin and stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    if bot is None:
        from .demo import DemoAgent

        bot = WhatsAppInterface(DemoAgent(), mode="chat", name="demo")
    sim = Simulator(bot, statuses=True)
    interface = sim.interface
    reset = interface.reset_command if interface.mode is InterfaceMode.CHAT else None
    commands = (reset, interface.settings.handoff_command)
    runner = _LoopThread()
    try:
        try:
            user = runner.run(_start(sim, number, name))
        except KeyboardInterrupt:
            _stop(runner, sim, out)
            return 0
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            print(f"! the bot could not start: {strip_control(str(exc))}", file=out)
            _stop(runner, sim, out)
            return 1
        if interactive:
            print(
                f"You are {strip_control(name)} (+{number}), chatting with the bot on a "
                "local WhatsApp simulator.\n" + help_text(*commands),
                file=out,
            )
        try:
            _chat(
                runner,
                sim,
                user,
                commands=commands,
                timeout=timeout,
                interactive=interactive,
                stdin=stdin,
                out=out,
            )
        except KeyboardInterrupt:
            print("\n(Ctrl-C: leaving; press it again to quit without waiting)", file=out)
            out.flush()
        _stop(runner, sim, out)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        print("\n! quit without waiting for the bot to stop", file=out)
        out.flush()
        os._exit(130)
    return 0


async def _start(sim: Simulator, number: str, name: str) -> SimulatedUser:
    await sim.start()
    return sim.user(number, name)


def _stop(runner: _LoopThread, sim: Simulator, out: TextIO) -> None:
    """Stop the bot and the loop (a Ctrl-C meanwhile propagates at once: no waiting)."""
    try:
        runner.run(sim.stop(), STOP_TIMEOUT)
    except TimeoutError:
        print(f"! the bot did not stop within {STOP_TIMEOUT:g} s", file=out)
    except Exception as exc:  # noqa: BLE001 - shown to the user as one line
        print(f"! stopping the bot failed: {strip_control(str(exc))}", file=out)
    runner.close()


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    if interactive:
        try:
            return input("you> ")
        except EOFError:
            return None
    line = stdin.readline()
    return line if line else None


def _chat(
    runner: _LoopThread,
    sim: Simulator,
    user: SimulatedUser,
    *,
    commands: tuple[str | None, str | None],
    timeout: float,
    interactive: bool,
    stdin: TextIO,
    out: TextIO,
) -> None:
    offered: Reply | None = None  # the last reply with choices: its numbers are taps
    handed_off = False
    while True:
        for reply in runner.run(_take(user)):  # unprompted messages (a heartbeat)
            print(f"bot> {_describe(reply)}", file=out)
            offered = reply if reply.buttons else offered
        out.flush()
        line = _read_line(stdin, interactive)
        if line is None:
            return
        action = parse_line(line, reset_command=commands[0], handoff_command=commands[1])
        if action is None:
            continue
        if isinstance(action, str):
            print(f"! {action}", file=out)
            continue
        if action.kind == "quit":
            return
        if action.kind == "help":
            print(help_text(*commands), file=out)
            continue
        if action.kind in ("takeover", "operator", "back"):
            result = runner.run(_operate(sim, user, action, timeout))
            who = "operator"
        else:
            result = runner.run(
                _exchange(sim, user, tap_or_text(action, offered), timeout, offered)
            )
            who = "bot"
        if isinstance(result, str):
            print(f"! {result}", file=out)
        else:
            for reply in result:
                print(f"{who}> {_describe(reply)}", file=out)
                offered = reply if reply.buttons else offered
        now = runner.run(sim.interface.is_handed_off(user.number))
        if now != handed_off:
            handed_off = now
            print(HANDED_OFF if now else "(the bot answers again)", file=out)


HANDED_OFF = (
    "(a person has the conversation now: the bot stays silent; /operator TEXT "
    "writes as them, /back hands it back to the bot)"
)


async def _operate(
    sim: Simulator, user: SimulatedUser, action: Action, timeout: float
) -> list[Reply] | str:
    """The operator's side: take over, write to the user, hand back; the operator's
    messages as the user received them, or a problem to show."""
    interface = sim.interface
    if action.kind == "takeover":
        await interface.handoff(user.number, note="taken over from the terminal")
    elif action.kind == "back":
        if not await interface.resume(user.number):
            return "the conversation is not handed off (/takeover first)"
    else:
        from .exceptions import WhatsAppAPIError

        try:
            await interface.send(user.number, action.text)
        except WhatsAppAPIError as exc:
            return f"the operator's message was not sent: {strip_control(str(exc))}"
    return await _settled(sim, user, timeout)


async def _settled(sim: Simulator, user: SimulatedUser, timeout: float) -> list[Reply]:
    """What ``user`` received once the bot is done (or ``timeout`` passed: what has
    arrived; the rest is printed before the next prompt)."""
    try:
        await sim.settle(timeout)
    except TimeoutError:
        pass
    return user.take_replies()


async def _take(user: SimulatedUser) -> list[Reply]:
    return user.take_replies()


async def _exchange(
    sim: Simulator,
    user: SimulatedUser,
    action: Action,
    timeout: float,
    offered: Reply | None = None,
) -> list[Reply] | str:
    """Send what ``action`` says and wait for the bot's answer; a ``str`` is a problem to
    show the user."""
    if action.kind == "tap":
        assert offered is not None
        await user.tap(offered.buttons[int(action.text) - 1].id, on=offered)
    elif action.kind in ("image", "document"):
        assert action.path is not None
        path = action.path.expanduser()
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            return f"cannot read {strip_control(str(path))}: {exc.strerror or exc}"
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if action.kind == "image":
            await user.send_image(data, mime)
        else:
            await user.send_document(data, path.name, mime)
    elif action.kind == "location":
        await user.send_location(action.latitude, action.longitude, name=action.text or None)
    else:
        await user.send_text(action.text)
    replies = await _settled(sim, user, timeout)
    if not replies and not await sim.interface.is_handed_off(user.number):
        return f"no answer within {timeout:g} s"
    return replies  # none while a person has the conversation
