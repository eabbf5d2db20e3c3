"""``wa-agent demo``: chat with a bot on the simulator from this terminal.

Interactive use has line editing and history (``readline``); piped input works too: each
line is sent, the bot's answers are printed, and the program ends at end of input.
Commands: ``/image PATH``, ``/doc PATH``, ``/location LAT LON [NAME]``, ``/reset`` (sent to
the bot), ``/help``, ``/quit``. Everything the bot sends is stripped of terminal control
sequences before it is printed.
"""

from __future__ import annotations

import asyncio
import mimetypes
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from ._console import strip_control
from .interface import WhatsAppInterface

__all__ = ["run_demo"]

HELP = """Type a message and press Enter. Commands:
  /image PATH            send a photo          /doc PATH     send a document
  /location LAT LON [NAME]  share a location   /reset        clear the conversation
  /help                  this text             /quit         leave"""


def _describe(reply: Any) -> str:
    """One printable line for a reply; every field the bot (or a user) controls, type and
    MIME type included, is stripped of control sequences."""
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


async def run_demo(agent: Any = None, *, mode: str = "chat", name: str = "You",
                   number: str = "15551230001", timeout: float = 120.0,
                   out: TextIO | None = None) -> int:
    """Start the simulator with the demo agent (or ``agent``) and chat with it."""
    from .testing.simulator import Simulator

    out = out or sys.stdout
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    if agent is None:
        from .demo import DemoAgent

        agent = DemoAgent()
    interface = WhatsAppInterface(agent, mode=mode, name="demo")
    async with Simulator(interface, statuses=True) as sim:
        user = sim.user(number, name)
        if interactive:
            print(f"wa_agent demo: you are {name} (+{number}) chatting with the bot on a local "
                  "WhatsApp simulator.\n" + HELP, file=out)
        while True:
            line = await _read_line("you> ", interactive)
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            try:
                sent = await _send_line(user, line, out)
            except (OSError, ValueError) as exc:
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
            out.flush()
    return 0


async def _send_line(user: Any, line: str, out: TextIO) -> str | None:
    if line in ("/quit", "/exit"):
        return None
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
