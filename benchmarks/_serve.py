"""Servers under test, each run by the benchmarks in its own process with the same uvicorn
settings: 1 worker, ``--http httptools``, asyncio loop, no access log, log level warning.

Targets:

* ``bare``      — :mod:`bare_receiver` (HMAC check + 200), the ceiling.
* ``wa``        — wa_agent: ``InterfaceManager([WhatsAppInterface(...)]).app`` with an agent
  that waits ``--agent-delay`` seconds and answers ``ok <wamid>``; ``--store memory`` or
  ``--store sqlite --db PATH`` or ``--store redis --redis-url URL``; replies go through
  wa_agent's ``Sender`` to ``--graph URL``. ``--receive-only`` makes it a receiver; a second
  ``wa`` server on the same store that gets no webhooks (short ``--sweep-interval``) is then
  its worker.
* ``sink``      — an accept-everything Graph API stub (counts messages and reads).
* ``emulator``  — wa_agent's ``CloudAPIEmulator`` plus ``GET /__bench/stats``.
* ``fastapi``   — the baseline: a FastAPI app that verifies the HMAC, runs the same agent in a
  background task and sends each reply with a fresh ``httpx.AsyncClient`` (how the existing
  framework integrations send).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, os.environ.get("WA_BENCH_SRC", str(HERE.parent)))

from _common import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _json(send: Send, data: Any, status: int = 200) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def make_agent(delay: float) -> Callable[[Any], Awaitable[str]]:
    """The agent every target runs: wait ``delay`` s, answer ``ok <wamid>`` (``ok
    <wamid>,<wamid>,...`` for a coalesced CHAT turn answering several messages)."""

    async def agent(request: Any) -> str:
        if delay:
            await asyncio.sleep(delay)
        messages = getattr(request, "messages", ())  # absent before coalesced turns
        if len(messages) > 1:
            return "ok " + ",".join(m.id for m in messages)
        return f"ok {request.message.id}"

    return agent


# -- targets ------------------------------------------------------------------------------------
def bare_app(args: argparse.Namespace) -> ASGIApp:
    from bare_receiver import make_app

    return make_app(APP_SECRET)


def wa_app(args: argparse.Namespace) -> ASGIApp:
    from wa_agent.interface import WhatsAppInterface
    from wa_agent.manager import InterfaceManager
    from wa_agent.sender import Sender

    # No throughput cap: the benchmarks measure the SDK, not Meta's per-number tier.
    options: dict[str, Any] = {}
    if args.max_in_flight is not None:
        options["max_in_flight"] = args.max_in_flight
    sender = Sender(ACCESS_TOKEN, PHONE_NUMBER_ID, base_url=args.graph, rate_limit=None, **options)
    storage: Any = None if args.store == "memory" else args.db
    if args.store == "redis":
        from wa_agent.stores.redis import RedisSessionStore

        storage = RedisSessionStore(args.redis_url)
    tuning: dict[str, Any] = {}
    if args.max_queued_senders is not None:
        tuning["max_queued_senders"] = args.max_queued_senders
    if args.max_pending is not None:
        tuning["max_pending"] = args.max_pending
        tuning["max_pending_per_sender"] = args.max_pending
    if args.sweep_interval is not None:
        tuning["sweep_interval"] = args.sweep_interval
    if args.receive_only:
        tuning["receive_only"] = True
    if args.max_concurrency is not None:
        tuning["max_concurrency"] = args.max_concurrency
    if args.mode != "task":
        tuning["mode"] = args.mode
    if args.retry_scale is not None:
        from wa_agent.sender import RetryPolicy

        sender = Sender(
            ACCESS_TOKEN,
            PHONE_NUMBER_ID,
            base_url=args.graph,
            rate_limit=None,
            retry=RetryPolicy(scale=args.retry_scale),
            **options,
        )
    interface = WhatsAppInterface(
        make_agent(args.agent_delay),
        verify_token=VERIFY_TOKEN,
        app_secret=APP_SECRET,
        storage=storage,
        sender=sender,
        phone_number_id=PHONE_NUMBER_ID,
        shutdown_timeout=1.0,
        **tuning,
    )
    return InterfaceManager([interface]).app


def sink_app(args: argparse.Namespace) -> ASGIApp:
    """Accepts every Graph call; counts sends (by text, for lost/duplicate checks) and reads."""
    texts: Counter[str] = Counter()
    counts = {"messages": 0, "reads": 0, "other": 0}
    seq = iter(range(10**12))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read(receive)
        path: str = scope["path"]
        if path == "/__bench/stats":
            data: dict[str, Any] = dict(counts)
            if "texts" in scope.get("query_string", b"").decode():
                data["texts"] = texts
            await _json(send, data)
            return
        if path.endswith("/messages") and scope["method"] == "POST":
            payload = json.loads(body)
            if payload.get("status") == "read":
                counts["reads"] += 1
                await _json(send, {"success": True})
                return
            counts["messages"] += 1
            text = (payload.get("text") or {}).get("body")
            if text is not None:
                texts[text] += 1
            await _json(
                send,
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": payload.get("to"), "wa_id": payload.get("to")}],
                    "messages": [{"id": f"wamid.SINK{next(seq):012d}"}],
                },
            )
            return
        counts["other"] += 1
        await _json(send, {"success": True})

    return app


def stub_app(args: argparse.Namespace) -> ASGIApp:
    """A Graph API stub for the conversational benchmarks: accepts every call (no
    throughput tier) except for the injected faults (``--fail-429``/``--fail-500``: that
    share of message sends answered with Meta's 130429 / 131000 errors), and records each
    accepted reply: when it arrived, to whom, and which wamids it answers (``ok <ids>``)."""
    import random
    import time

    rng = random.Random(args.seed)
    replies: list[tuple[float, str, str]] = []
    counts = {"messages": 0, "reads": 0, "faults": 0}
    seq = iter(range(10**12))
    faults = [
        (args.fail_429, 429, 130429, "Rate limit hit"),
        (args.fail_500, 500, 131000, "Something went wrong"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read(receive)
        path: str = scope["path"]
        if path == "/__bench/stats":
            data: dict[str, Any] = dict(counts)
            if "replies" in scope.get("query_string", b"").decode():
                data["replies"] = replies
            await _json(send, data)
            return
        if not (path.endswith("/messages") and scope["method"] == "POST"):
            await _json(send, {"success": True})
            return
        payload = json.loads(body)
        if payload.get("status") == "read":
            counts["reads"] += 1
            await _json(send, {"success": True})
            return
        roll = rng.random()
        for share, status, code, message in faults:
            if roll < share:
                counts["faults"] += 1
                await _json(
                    send,
                    {
                        "error": {
                            "message": message,
                            "type": "OAuthException",
                            "code": code,
                            "fbtrace_id": "bench",
                        }
                    },
                    status,
                )
                return
            roll -= share
        counts["messages"] += 1
        text = (payload.get("text") or {}).get("body") or ""
        replies.append((time.time(), str(payload.get("to")), text.removeprefix("ok ")))
        await _json(
            send,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": payload.get("to"), "wa_id": payload.get("to")}],
                "messages": [{"id": f"wamid.STUB{next(seq):012d}"}],
            },
        )

    return app


def lean_app(args: argparse.Namespace) -> ASGIApp:
    from lean_bot import make_app

    return make_app(
        APP_SECRET,
        args.graph,
        ACCESS_TOKEN,
        PHONE_NUMBER_ID,
        args.agent_delay,
        read_receipt=args.read_receipt,
    )  # type: ignore[no-any-return]


def emulator_app(args: argparse.Namespace) -> ASGIApp:
    from wa_agent.testing.emulator import CloudAPIEmulator

    emulator = CloudAPIEmulator(access_token=ACCESS_TOKEN)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/__bench/stats":
            await _read(receive)
            sent = emulator.messages
            data: dict[str, Any] = {
                "messages": len(sent),
                "reads": len(emulator.reads),
                "errors": sum(1 for c in emulator.calls if c.status >= 400),
                "first": sent[0].time if sent else None,
                "last": sent[-1].time if sent else None,
            }
            if "texts" in scope.get("query_string", b"").decode():
                data["texts"] = Counter(m.text for m in emulator.messages)
            await _json(send, data)
            return
        await emulator(scope, receive, send)

    return app


def fastapi_app(args: argparse.Namespace) -> ASGIApp:
    from baseline_fastapi import make_app

    return make_app(APP_SECRET, args.graph, ACCESS_TOKEN, PHONE_NUMBER_ID, args.agent_delay)


TARGETS: dict[str, Callable[[argparse.Namespace], ASGIApp]] = {
    "bare": bare_app,
    "wa": wa_app,
    "sink": sink_app,
    "emulator": emulator_app,
    "fastapi": fastapi_app,
    "stub": stub_app,
    "lean": lean_app,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", choices=["memory", "sqlite", "redis"], default="memory")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--db", default="bench.sqlite3")
    parser.add_argument("--agent-delay", type=float, default=0.0)
    parser.add_argument("--graph", default="http://127.0.0.1:9", help="Graph API base URL")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="WhatsAppInterface max_concurrency (default: its own)",
    )
    parser.add_argument("--mode", choices=["task", "chat"], default="task")
    parser.add_argument(
        "--retry-scale",
        type=float,
        default=None,
        help="scale of the Sender's retry waits (default: real waits)",
    )
    parser.add_argument(
        "--read-receipt",
        action="store_true",
        help="lean: mark each message read (with typing) before answering",
    )
    parser.add_argument(
        "--fail-429", type=float, default=0.0, help="stub: share of sends answered 429/130429"
    )
    parser.add_argument(
        "--fail-500", type=float, default=0.0, help="stub: share of sends answered 500/131000"
    )
    parser.add_argument("--seed", type=int, default=1, help="stub: fault RNG seed")
    parser.add_argument(
        "--max-queued-senders",
        type=int,
        default=None,
        help="WhatsAppInterface max_queued_senders (default: its own)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=None,
        help="WhatsAppInterface max_pending (default: its own)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="Sender's bound on concurrent HTTP requests (default: Sender's)",
    )
    parser.add_argument(
        "--receive-only",
        action="store_true",
        help="WhatsAppInterface(receive_only=True): acknowledge and record "
        "only; another wa server on the same store answers",
    )
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=None,
        help="WhatsAppInterface sweep_interval (a worker's polling period)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=None,
        help="experiment: gc.set_threshold(N, 10, 10) before serving",
    )
    parser.add_argument(
        "--http",
        default="httptools",
        choices=["httptools", "h11", "limited", "limited-h11"],
        help="uvicorn's parser; limited: with wa_agent's ServerLimits "
        "(what wa-agent serve and InterfaceManager.serve() run)",
    )
    args = parser.parse_args(argv)
    app = TARGETS[args.target](args)
    if args.gc_threshold:
        import gc

        gc.collect()
        gc.freeze()
        gc.set_threshold(args.gc_threshold, 10, 10)

    import uvicorn

    http: dict[str, Any] = {"http": args.http}
    if args.http.startswith("limited"):
        from wa_agent.server import ServerLimits, uvicorn_options

        base = "h11" if args.http == "limited-h11" else "httptools"
        http = uvicorn_options(ServerLimits(), base)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="asyncio",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_graceful_shutdown=2,
        **http,
    )


if __name__ == "__main__":
    main()
