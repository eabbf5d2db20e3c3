"""``wa-agent demo``: chat with a bot on the simulator from this terminal.

Interactive use has line editing and history (``readline``); piped input works too: each
line is sent, the bot's answers are printed, and the program ends at end of input.
Commands: ``/image PATH``, ``/doc PATH``, ``/location LAT LON [NAME]``, ``/reset`` (sent to
the bot), ``/help``, ``/quit``. Choices the bot offers are printed numbered; typing a number
taps that choice. Everything the bot sends is stripped of terminal control
sequences before it is printed.
"""

from __future__ import annotations

import asyncio
import mimetypes
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from .cli import load_object, strip_control
from .interface import WhatsAppInterface

__all__ = ["run_demo"]

HELP = """Type a message and press Enter. Commands:
  /image PATH            send a photo          /doc PATH     send a document
  /location LAT LON [NAME]  share a location   /reset        clear the conversation
  /help                  this text             /quit         leave
  1, 2, ...              tap a numbered choice the bot offered"""


def _describe(reply: Any) -> str:
    """One printable line for a reply; every field the bot (or a user) controls, type and
    MIME type included, is stripped of control sequences. Choices are listed numbered (type
    the number to tap one)."""
    if reply.type == "text":
        return strip_control(reply.text or "")
    rich = _describe_rich(reply)
    if rich is not None:
        return strip_control(rich)
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


def _describe_rich(reply: Any) -> str | None:
    """Choices (numbered), a link button, a reaction, a location, contact cards or a voice
    note, readably; ``None`` for anything else."""
    buttons = getattr(reply, "buttons", ())
    if buttons:
        lines = [reply.text or ""]
        if getattr(reply, "list_button", None):
            lines.append(f"  [{reply.list_button}]")
        lines += [f"  {n}. {c.title}" + (f" ({c.description})" if c.description else "")
                  for n, c in enumerate(buttons, 1)]
        return "\n".join(lines)
    link = getattr(reply, "link_button", None)
    if link is not None:
        return f"{reply.text or ''}\n  [{link.label}: {link.url}]"
    if getattr(reply, "reaction", None):
        return f"[reacted {reply.reaction}]"
    location = getattr(reply, "location", None)
    if location is not None:
        place = ", ".join(p for p in (location.name, location.address) if p)
        return f"[location {location.latitude}, {location.longitude}" + \
            (f": {place}]" if place else "]")
    contacts = getattr(reply, "contacts", ())
    if contacts:
        return "\n".join(f"[contact {c.name}" + (f": {', '.join(c.phones)}]" if c.phones
                                                 else "]") for c in contacts)
    if getattr(reply, "voice", False):
        return f"[voice note, {reply.size} bytes]"
    return None


async def _read_line(prompt: str, interactive: bool) -> str | None:
    def read() -> str | None:
        try:
            if interactive:
                return input(prompt)
            line = sys.stdin.readline()
            return line.rstrip("\n") if line else None
        except EOFError:
            return None

    return await asyncio.to_thread(read)


async def run_demo(*, agent_spec: str | None = None, mode: str = "chat", name: str = "You",
                   number: str = "15551230001", timeout: float = 120.0,
                   out: TextIO | None = None) -> int:
    """Start the simulator with the demo agent (or ``agent_spec``) and chat with it."""
    from .testing.simulator import Simulator

    out = out or sys.stdout
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    if agent_spec:
        agent = load_object(agent_spec)
    else:
        from .demo import DemoAgent

        agent = DemoAgent()
    interface = WhatsAppInterface(agent, mode=mode, name="demo")
    async with Simulator(interface, statuses=True) as sim:
        user = sim.user(number, name)
        if interactive:
            print(f"wa_agent demo: you are {name} (+{number}) chatting with the bot on a local "
                  "WhatsApp simulator.\n" + HELP, file=out)
        offered: Any = None  # the last reply with choices: its numbers are taps
        while True:
            line = await _read_line("you> ", interactive)
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            try:
                sent = await _send_line(user, line, out, offered)
            except (OSError, ValueError, LookupError) as exc:
                print(f"! {exc}", file=out)
                continue
            if sent is None:
                if line in ("/quit", "/exit"):
                    break
                continue
            try:
                first = await user.next_reply(timeout)
            except TimeoutError:
                print(f"! no answer within {timeout:.0f} s", file=out)
                continue
            await sim.settle(timeout)
            for reply in [first, *user.take_replies()]:
                print(f"bot> {_describe(reply)}", file=out)
                offered = reply if getattr(reply, "buttons", ()) else offered
            out.flush()
    return 0


async def _send_line(user: Any, line: str, out: TextIO, offered: Any = None) -> str | None:
    if line in ("/quit", "/exit"):
        return None
    if line.isdigit() and offered is not None and 1 <= int(line) <= len(offered.buttons):
        return str(await user.tap(offered.buttons[int(line) - 1].id, on=offered))
    if line == "/help":
        print(HELP, file=out)
        return None
    if line.startswith(("/image ", "/doc ")):
        command, _, raw = line.partition(" ")
        path = Path(raw.strip())
        data = await asyncio.to_thread(lambda: path.expanduser().read_bytes())
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if command == "/image":
            return str(await user.send_image(data, mime))
        return str(await user.send_document(data, path.name, mime))
    if line.startswith("/location "):
        args = shlex.split(line)[1:]
        if len(args) < 2:
            raise ValueError("usage: /location LAT LON [NAME]")
        return str(await user.send_location(float(args[0]), float(args[1]),
                                            name=" ".join(args[2:]) or None))
    return str(await user.send_text(line))
