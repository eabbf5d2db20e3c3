"""One bot server process for the delivery tests: ``python -m tests.bot_process --port ...``.

It serves a :class:`~wa_agent.WhatsAppInterface` with uvicorn on ``127.0.0.1:<port>`` until it
is killed (``SIGKILL`` in the crash tests) or stopped (``SIGTERM``: uvicorn's graceful shutdown
runs the interface's ``aclose``). Replies go to the Cloud API emulator at ``--emulator``.

The agent echoes the inbound wamid (``re <wamid> <text>``) so a test can map every reply in the
emulator's record to the message it answers. ``--delay`` makes it slow; a text starting with
``MULTI`` gets a three-part reply (``PART1 <wamid> …``, ``PART2 …``, ``PART3 …``, each part about
3000 characters, so the splitter sends three messages). With ``--log`` every agent call appends
``{"e": "start"|"end", "id": wamid, "s": sender, "pid": pid}`` lines to that file (one
``write`` per line on an ``O_APPEND`` file, so lines of several processes interleave whole and
the file order is the order of the calls; ``h`` is the request's history as ``[role, text]``
pairs). A text starting with ``HANDOFF`` is answered ``HANDOFF-OK <wamid>`` with
``handoff=True``.

``--store`` is ``sqlite:<path>`` or ``redis://…`` (with ``--prefix``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import uvicorn

from wa_agent.agents import AgentReply, AgentRequest
from wa_agent.interface import WhatsAppInterface
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.stores.base import SessionStore

PHONE_NUMBER_ID = "100000000000001"
ACCESS_TOKEN = "test-token"
INTERFACE_NAME = "bot"


def multi_part_reply(wamid: str) -> str:
    """The three-paragraph reply the agent gives to a ``MULTI`` message."""
    return "\n\n".join(f"PART{n} {wamid} " + ("x" * 3000) for n in (1, 2, 3))


def _store(spec: str, prefix: str) -> SessionStore:
    if spec.startswith("sqlite:"):
        from wa_agent.stores.sqlite import SQLiteSessionStore

        return SQLiteSessionStore(spec[len("sqlite:") :])
    if spec.startswith("redis://"):
        from wa_agent.stores.redis import RedisSessionStore

        return RedisSessionStore(spec, prefix=prefix)
    raise SystemExit(f"unknown store {spec!r}")


class _LeaseLog:
    """The store, with every sender-lease attempt written to the agent log
    (``{"e": "lease", "ok": ..., "pid": ...}``): tests count the attempts a process needs
    to take over a dead process's sender."""

    def __init__(self, store: SessionStore, write: Any) -> None:
        self._store = store
        self._write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        ok = await self._store.acquire_lease(name, owner, ttl)
        if name.startswith("sender:"):
            self._write({"e": "lease", "ok": ok, "name": name})
        return ok


class _Outage:
    """The store, with ``complete()`` failing while the file ``marker`` exists (a store that
    cannot record that a reply went out: a full disk, an unreachable Redis)."""

    def __init__(self, store: SessionStore, marker: str) -> None:
        self._store = store
        self._marker = marker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def complete(self, *args: Any, **kwargs: Any) -> None:
        if await asyncio.to_thread(os.path.exists, self._marker):
            from wa_agent.exceptions import StoreError

            raise StoreError("injected: the store cannot write")
        await self._store.complete(*args, **kwargs)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--emulator", required=True, help="base URL of the Cloud API emulator")
    p.add_argument("--store", required=True, help="sqlite:<path> or redis://host:port/db")
    p.add_argument("--prefix", default="wa_agent")
    p.add_argument("--secret", default="test-secret")
    p.add_argument("--delay", type=float, default=0.0, help="agent delay in seconds")
    p.add_argument("--mode", default="task")
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=1.0,
        help="sender lease TTL in seconds (0: the interface's default)",
    )
    p.add_argument("--sweep", type=float, default=0.2)
    p.add_argument("--max-concurrency", type=int, default=64)
    p.add_argument(
        "--per-sender",
        type=int,
        default=16,
        help="max_concurrency_per_sender (TASK mode pipelining)",
    )
    p.add_argument("--shutdown-timeout", type=float, default=2.0)
    p.add_argument("--retry-scale", type=float, default=0.01)
    p.add_argument(
        "--retry-attempts",
        type=int,
        default=None,
        help="attempts per send for every retryable error (default: the policy's)",
    )
    p.add_argument("--log", default=None, help="file to append agent start/end lines to")
    p.add_argument(
        "--outage",
        default=None,
        help="a path: while that file exists, the store cannot record replies",
    )
    return p.parse_args(argv)


def _ids(request: AgentRequest) -> str:
    """The wamids a request answers: one, or several joined by commas (a coalesced CHAT
    turn)."""
    if request.messages:
        return ",".join(m.id for m in request.messages)
    return request.message.id if request.message is not None else ""


def build(args: argparse.Namespace) -> WhatsAppInterface:
    """The interface this process serves, configured from the command line."""
    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.log else None
    pid = os.getpid()

    def write(event: dict[str, Any]) -> None:
        if log_fd is not None:
            os.write(log_fd, (json.dumps({**event, "pid": pid}) + "\n").encode())

    def record(event: str, request: AgentRequest) -> None:
        write(
            {
                "e": event,
                "id": _ids(request),
                "s": request.sender,
                "h": [[t.role, t.text] for t in request.history],
            }
        )

    store: Any = _store(args.store, args.prefix)
    if log_fd is not None:
        store = _LeaseLog(store, write)
    if args.outage:
        store = _Outage(store, args.outage)

    async def agent(request: AgentRequest) -> str | AgentReply:
        assert request.message is not None
        record("start", request)
        if args.delay:
            await asyncio.sleep(args.delay)
        record("end", request)
        text = request.text
        if text.startswith("MULTI"):
            return multi_part_reply(request.message.id)
        if text.startswith("HANDOFF"):
            return AgentReply(text=f"HANDOFF-OK {_ids(request)}", handoff=True)
        return f"re {_ids(request)} {text}"

    retry = RetryPolicy(scale=args.retry_scale)
    if args.retry_attempts is not None:
        n = args.retry_attempts
        retry = RetryPolicy(
            max_attempts=n, transient_attempts=n, pair_rate_attempts=n, scale=args.retry_scale
        )
    sender = Sender(ACCESS_TOKEN, PHONE_NUMBER_ID, base_url=args.emulator, retry=retry)
    return WhatsAppInterface(
        agent,
        name=INTERFACE_NAME,
        app_secret=args.secret,
        mode=args.mode,
        storage=store,
        sender=sender,
        phone_number_id=PHONE_NUMBER_ID,
        **({"lease_ttl": args.lease_ttl} if args.lease_ttl else {}),
        sweep_interval=args.sweep,
        max_concurrency=args.max_concurrency,
        max_concurrency_per_sender=args.per_sender,
        shutdown_timeout=args.shutdown_timeout,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve until killed or stopped."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"[bot {os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    interface = build(args)
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": args.port,
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
    }
    uvicorn.Server(uvicorn.Config(interface.attach_routes(), **config)).run()


if __name__ == "__main__":
    main()
