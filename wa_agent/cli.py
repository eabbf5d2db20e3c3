"""The ``wa-agent`` command (also ``python -m wa_agent``).

* ``wa-agent demo [--agent module:attr] [--mode chat|task]`` — a bot on the local simulator,
  chatted with in this terminal as a WhatsApp user. No account, no key.
* ``wa-agent serve module:attr [--mode chat] [--host] [--port] [--tunnel]`` — a real bot from
  the ``WHATSAPP_*`` environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_object", "main", "strip_control"]

REQUIRED_ENV = ("WHATSAPP_VERIFY_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN",
                "WHATSAPP_PHONE_NUMBER_ID")

# CSI/OSC/other escape sequences and C0/C1 control characters except newline and tab.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -~]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def strip_control(text: str) -> str:
    """Remove ANSI escape sequences and control characters (user text shown in a terminal)."""
    return _CONTROL.sub("", text)


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (or ``path/to/file.py:attribute``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"wa-agent: expected module:attribute, got {spec!r}")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name).resolve()
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
    else:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"wa-agent: cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"wa-agent: {module_name!r} has no attribute {attr!r}") from None
    return obj


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-agent", description="Host AI agents as WhatsApp bots.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="chat with a bot on the local simulator (no account)")
    demo.add_argument("--agent", help="your agent as module:attribute (default: the demo "
                                      "agent)")
    demo.add_argument("--mode", choices=["task", "chat"], default="chat")
    demo.add_argument("--name", default="You", help="your profile name in the chat")
    demo.add_argument("--number", default="15551230001", help="your simulated phone number")
    demo.add_argument("--timeout", type=float, default=120.0,
                      help="seconds to wait for each reply")

    serve = sub.add_parser("serve", help="serve a real bot from the WHATSAPP_* environment")
    serve.add_argument("agent", help="your agent as module:attribute")
    serve.add_argument("--mode", choices=["task", "chat"], default="task")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--prefix", default="/whatsapp")
    serve.add_argument("--storage", help="SQLite file for the durable inbox and history "
                                         "(default: wa_agent.db)", default="wa_agent.db")
    serve.add_argument("--allow", action="append", default=None, metavar="NUMBER",
                       help="only answer this number (repeatable)")
    serve.add_argument("--tunnel", action="store_true",
                       help="open an ngrok tunnel and print the webhook URL")
    serve.add_argument("--max-header-bytes", type=int, default=64 * 1024, metavar="BYTES",
                       help="cap on a request's line and headers together (default 65536; "
                            "431 over it)")
    serve.add_argument("--head-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="time a client may take to send the headers (default 10)")
    serve.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="time a client may take to send the body (default 30)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wa-agent`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from .terminal import run_demo

        return asyncio.run(run_demo(
            agent_spec=args.agent, mode=args.mode, name=args.name, number=args.number,
            timeout=args.timeout))
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print("wa-agent serve: missing environment variable(s): " + ", ".join(missing)
              + "\nSet them from Meta's dashboard (WhatsApp > API Setup, App settings > "
              "Basic) or try the bot offline with `wa-agent demo`.", file=sys.stderr)
        return 2
    from .interface import WhatsAppInterface
    from .manager import InterfaceManager
    from .server import ServerLimits

    try:
        limits = ServerLimits(max_header_bytes=args.max_header_bytes,
                              head_timeout=args.head_timeout, body_timeout=args.body_timeout)
    except ValueError as exc:
        print(f"wa-agent serve: {exc}", file=sys.stderr)
        return 2
    agent = load_object(args.agent)
    interface = WhatsAppInterface(agent, mode=args.mode, storage=args.storage,
                                  allowed_numbers=args.allow, prefix=args.prefix,
                                  require_signature=True)
    manager = InterfaceManager([interface])
    if not args.tunnel:
        manager.serve(host=args.host, port=args.port, limits=limits)
        return 0

    async def run_with_tunnel() -> None:
        await manager.start(args.host, args.port, log_level="info", limits=limits)
        try:
            await manager.atunnel()
            while True:
                await asyncio.sleep(3600)
        finally:
            await manager.stop()

    try:
        asyncio.run(run_with_tunnel())
    except KeyboardInterrupt:
        pass
    return 0
