"""The ``wa-agent`` command (also ``python -m wa_agent``).

* ``wa-agent demo [--agent module:attr]`` — a bot on the local simulator, chatted with in
  this terminal as a WhatsApp user. No account, no key.
* ``wa-agent serve module:attr [--host] [--port] [--tunnel]`` — a real bot from the
  ``WHATSAPP_*`` environment variables.

``module:attr`` (or ``path/to/file.py:attr``) names what you built: an agent, a
:class:`~wa_agent.WhatsAppInterface` or an :class:`~wa_agent.InterfaceManager`. Both commands
treat it the same way:

* an interface or a manager runs **as configured** (mode, store, whitelist, heartbeat,
  prefix); ``--mode`` may only repeat its mode, and ``--storage``, ``--allow`` and
  ``--prefix`` are refused (set them in your code);
* a bare agent is wrapped like ``WhatsAppInterface(agent)``: **task mode** unless
  ``--mode chat``; ``serve`` keeps its inbox and history in ``--storage`` (default
  ``wa_agent.db``), ``demo`` in memory;
* without ``--agent``, ``demo`` runs the built-in demo bot, in chat mode.

At start both commands print what runs: each interface's mode, store and webhook path.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._console import strip_control

if TYPE_CHECKING:
    from .interface import WhatsAppInterface
    from .manager import InterfaceManager

__all__ = ["CLIError", "build_manager", "describe", "load_object", "main", "strip_control"]

REQUIRED_ENV = (
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
)
#: Where ``serve`` keeps a bare agent's inbox and history.
DEFAULT_STORAGE = "wa_agent.db"
#: Options that configure the interface built around a bare agent.
_INTERFACE_OPTIONS = ("storage", "allow", "prefix")


class CLIError(Exception):
    """A mistake the user can fix: printed as one ``wa-agent: ...`` line, exit status 2."""


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


def build_manager(
    obj: Any, spec: str, *, mode: str | None = None, default_mode: str = "task", **options: Any
) -> InterfaceManager:
    """What the command runs for ``obj`` (loaded from ``spec``): a manager as is, an
    interface in a new manager, an agent in a new interface built with ``options``
    (``WhatsAppInterface`` keyword arguments) in ``mode`` (default ``default_mode``).

    Raises :class:`CLIError` when an option conflicts with an interface's own configuration
    or when ``obj`` is none of the three.
    """
    from .agents import as_agent
    from .exceptions import WAAgentError
    from .interface import WhatsAppInterface
    from .manager import InterfaceManager

    if isinstance(obj, (InterfaceManager, WhatsAppInterface)):
        kind = type(obj).__name__
        given = [f"--{name}" for name in _INTERFACE_OPTIONS if options.get(name) is not None]
        if given:
            raise CLIError(
                f"{spec} is a {kind}, configured in your code: "
                f"{', '.join(given)} only apply to a bare agent (set them there)"
            )
        manager = obj if isinstance(obj, InterfaceManager) else InterfaceManager([obj])
        for interface in manager.interfaces:
            if mode is not None and interface.mode.value != mode:
                raise CLIError(
                    f"--mode {mode} conflicts with {spec}: interface {interface.name!r} is "
                    f"configured with mode={interface.mode.value!r} (change it in your code, "
                    "or drop --mode)"
                )
        return manager
    if isinstance(obj, type):
        raise CLIError(
            f"{spec} is the class {obj.__name__}, not an agent, a "
            f"WhatsAppInterface or an InterfaceManager: name an instance "
            f"(e.g. agent = {obj.__name__}() in your module)"
        )
    try:
        as_agent(obj)
    except TypeError:
        raise CLIError(
            f"{spec} is not an agent, a WhatsAppInterface or an InterfaceManager "
            f"(it is {type(obj).__name__!r}; an agent is a function taking an "
            "AgentRequest, or an object with answer(), do_async(), arun(), ainvoke() "
            "or run())"
        ) from None
    kwargs = {
        ("allowed_numbers" if name == "allow" else name): value
        for name, value in options.items()
        if value is not None
    }
    try:
        interface = WhatsAppInterface(obj, mode=mode or default_mode, **kwargs)
    except (TypeError, ValueError, WAAgentError) as exc:
        raise CLIError(f"{spec}: {exc}") from None
    return InterfaceManager([interface])


def describe_store(interface: WhatsAppInterface) -> str:
    """The interface's store in a few words: kind and where its data lives."""
    from .stores.memory import MemorySessionStore
    from .stores.sqlite import SQLiteSessionStore

    store = interface.store
    if isinstance(store, SQLiteSessionStore):
        path = store.path
        where = (
            path if path == ":memory:" or path.startswith("file:") else str(Path(path).resolve())
        )
        return f"SQLite {where}"
    if isinstance(store, MemorySessionStore):
        return "in memory (forgotten when the program ends)"
    return repr(store)  # a Redis store masks its password in its repr


def describe(manager: InterfaceManager) -> list[str]:
    """One line per interface: name, mode, store, webhook path, whitelist, heartbeat."""
    lines = []
    for interface in manager.interfaces:
        line = (
            f"interface {interface.name!r}: {interface.mode.value} mode, store: "
            f"{describe_store(interface)}, webhook path: {interface.prefix}/webhook"
        )
        if interface.allowed_numbers is not None:
            numbers = sorted(interface.allowed_numbers)
            line += f", answers only {', '.join('+' + n for n in numbers[:3])}"
            line += f" and {len(numbers) - 3} more" if len(numbers) > 3 else ""
        if interface.heartbeat is not None:
            minutes = interface.heartbeat.period.total_seconds() / 60
            line += f", heartbeat every {minutes:g} min"
        lines.append(strip_control(line))
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-agent",
        description="Host AI agents as WhatsApp bots.",
        epilog="module:attribute names an agent, a WhatsAppInterface or an InterfaceManager. "
        "An interface or a manager runs as configured in your code; a bare agent "
        "runs in task mode unless --mode chat.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    mode_help = (
        "task (each message alone) or chat (with the user's history); default: the "
        "interface's own mode, task for a bare agent, chat for the built-in demo bot"
    )
    demo = sub.add_parser("demo", help="chat with a bot on the local simulator (no account)")
    demo.add_argument(
        "--agent",
        metavar="MODULE:ATTR",
        help="your agent, WhatsAppInterface or InterfaceManager (default: the built-in demo bot)",
    )
    demo.add_argument("--mode", choices=["task", "chat"], help=mode_help)
    demo.add_argument("--name", default="You", help="your profile name in the chat")
    demo.add_argument(
        "--number",
        help="your simulated phone number (default: 15551230001, "
        "or the first allowed number of a whitelist)",
    )
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each reply")

    serve = sub.add_parser("serve", help="serve a real bot from the WHATSAPP_* environment")
    serve.add_argument(
        "agent", metavar="MODULE:ATTR", help="your agent, WhatsAppInterface or InterfaceManager"
    )
    serve.add_argument("--mode", choices=["task", "chat"], help=mode_help)
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--prefix", help="where a bare agent's routes live (default /whatsapp)")
    serve.add_argument(
        "--storage",
        help="SQLite file for a bare agent's durable inbox and "
        f"history (default: {DEFAULT_STORAGE})",
    )
    serve.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="NUMBER",
        help="only answer this number (repeatable; bare agent only)",
    )
    serve.add_argument(
        "--tunnel", action="store_true", help="open an ngrok tunnel and print the webhook URL"
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        default=64 * 1024,
        metavar="BYTES",
        help="cap on a request's line and headers together (default 65536; 431 over it)",
    )
    serve.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time a client may take to send the headers (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time a client may take to send the body (default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wa-agent`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            return _demo(args)
        # An operator watches handoffs (taken over, resumed, timed out) without --verbose.
        logging.getLogger("wa_agent.handoff").setLevel(logging.INFO)
        return _serve(args)
    except CLIError as exc:
        print(f"wa-agent {args.command}: {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    if args.agent:
        spec = args.agent
        manager = build_manager(load_object(spec), spec, mode=args.mode, name="demo")
    else:
        from .demo import DemoAgent

        spec = "the built-in demo bot"
        manager = build_manager(DemoAgent(), spec, mode=args.mode, default_mode="chat", name="demo")
    for interface in manager.interfaces:
        if interface.sender is not None:
            raise CLIError(
                f"interface {interface.name!r} of {spec} was given its own "
                "sender=, which talks to the real Cloud API: the demo needs one it "
                "can point at the simulator"
            )
    first = manager.interfaces[0]
    number = args.number
    if number is None:
        allowed = sorted(first.allowed_numbers or ())
        number = allowed[0] if allowed else "15551230001"
    print(f"wa-agent demo: {spec} on the local WhatsApp simulator", flush=True)
    for line in describe(manager):
        print("  " + line)
    if len(manager.interfaces) > 1:
        print(f"  you write to the first interface, {first.name!r}")
    if not first.is_user_allowed(number):
        print(
            f"  note: +{number} is not in {first.name!r}'s allowed numbers: the bot will "
            "refuse it (try --number with an allowed one)"
        )
    sys.stdout.flush()

    from .terminal import run_demo

    return run_demo(manager, name=args.name, number=number, timeout=args.timeout)


def _serve(args: argparse.Namespace) -> int:
    from .interface import WhatsAppInterface
    from .manager import InterfaceManager
    from .server import ServerLimits

    try:
        limits = ServerLimits(
            max_header_bytes=args.max_header_bytes,
            head_timeout=args.head_timeout,
            body_timeout=args.body_timeout,
        )
    except ValueError as exc:
        print(f"wa-agent serve: {exc}", file=sys.stderr)
        return 2
    obj = load_object(args.agent)
    bare = not isinstance(obj, (WhatsAppInterface, InterfaceManager))
    if bare:
        missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
        if missing:
            print(
                "wa-agent serve: missing environment variable(s): "
                + ", ".join(missing)
                + "\nSet them from Meta's dashboard (WhatsApp > API Setup, App settings > "
                "Basic) or try the bot offline with `wa-agent demo`.",
                file=sys.stderr,
            )
            return 2
        manager = build_manager(
            obj,
            args.agent,
            mode=args.mode,
            require_signature=True,
            storage=args.storage or DEFAULT_STORAGE,
            allow=args.allow,
            prefix=args.prefix,
        )
    else:
        manager = build_manager(
            obj,
            args.agent,
            mode=args.mode,
            storage=args.storage,
            allow=args.allow,
            prefix=args.prefix,
        )
    problems = []
    for interface in manager.interfaces:
        missing = interface.missing_configuration()
        if interface.app_secret is None:
            missing.append("WHATSAPP_APP_SECRET (serve verifies every webhook's signature)")
        if missing:
            problems.append(f"interface {interface.name!r} is missing {', '.join(missing)}")
    if problems:
        print(
            "wa-agent serve: " + "; ".join(problems) + "\nExport them before starting, or "
            "pass them to WhatsAppInterface(...) in your code.",
            file=sys.stderr,
        )
        return 2
    print(f"wa-agent serve: {args.agent}")
    for line in describe(manager):
        print("  " + line)
    base = f"http://{args.host}:{args.port}"
    for interface in manager.interfaces:
        print(
            f"  listening on {base}{interface.prefix}/webhook — Meta's callback URL: "
            f"https://<your public host>{interface.prefix}/webhook"
            + (" (the tunnel's is printed below)" if args.tunnel else "")
        )
    sys.stdout.flush()
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
