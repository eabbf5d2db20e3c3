"""Scale out: webhook receivers that only record, and workers that answer, sharing Redis.

Two kinds of process share one ``RedisSessionStore``:

* **receivers** (``worker.py receive``): a ``WebhookApp`` (signature check, parsing, the HTTP
  contract) whose consumer only records each new message in the store's durable inbox, then
  answers 200. Meta's redeliveries are deduplicated by wamid on the Redis server, so a copy
  that reaches another receiver process is ``ignored`` there.
* **workers** (``worker.py work``): take each user's inbox items in order (``pending``),
  answer through the ``Sender`` and remove them (``complete``). A per-user lease in the
  store keeps one worker per user at a time, so answers stay in order and nothing is
  answered twice; a worker that dies loses its lease after ``LEASE_TTL`` seconds.

Add receivers behind your load balancer for more webhooks per second, and workers for more
replies per second; they scale independently.

Offline demo: two receivers and two workers as separate processes, a local Cloud API
emulator playing Meta, and every webhook delivered to both receivers at once::

    python examples/worker.py                          # starts a throwaway redis-server
    python examples/worker.py --redis-url redis://127.0.0.1:6379/0

For real (``WHATSAPP_APP_SECRET`` and ``WHATSAPP_VERIFY_TOKEN`` for receivers,
``WHATSAPP_ACCESS_TOKEN`` and ``WHATSAPP_PHONE_NUMBER_ID`` for workers, ``REDIS_URL``)::

    uvicorn --factory worker:receiver_from_env --app-dir examples --workers 4 --port 8000
    python examples/worker.py work --redis-url "$REDIS_URL"   # as many as you like, anywhere
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from wa_agent import (
    BackgroundServer,
    Event,
    InboxItem,
    Message,
    Sender,
    SessionStore,
    Turn,
    WebhookApp,
    WhatsAppAPIError,
)
from wa_agent.stores.redis import RedisSessionStore

logger = logging.getLogger("worker")

BOT = "scaled"  # the store namespace shared by receivers and workers
LEASE_TTL = 60.0  # seconds a worker may hold a user before another may take over
POLL = 0.05  # seconds between looks at the inbox when it is empty


# --------------------------------------------------------------------------- receiver


class InboxRecorder:
    """A ``WebhookConsumer`` that records messages and leaves the answering to workers."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.received = 0
        self.duplicates = 0

    async def accept_body(self, body: bytes) -> str | None:
        return None  # no fast path: every body is parsed and given to accept()

    async def accept(self, events: list[Event]) -> str:
        """Record new messages (deduplicated by wamid across every process); a
        ``StoreError`` raised here makes the webhook answer 500, so Meta redelivers."""
        messages = [e for e in events if isinstance(e, Message)]
        if not messages:
            return "ignored"
        now = time.time()
        fresh = await self.store.add_inbound(
            BOT, [InboxItem(m.id, m.sender, m.model_dump_json(), now) for m in messages]
        )
        for message in messages:
            await self.store.touch_inbound(BOT, message.sender, message.timestamp)
        self.received += sum(fresh)
        self.duplicates += len(fresh) - sum(fresh)
        return "processing" if any(fresh) else "ignored"

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` shows for this receiver process."""
        return {
            "status": "ok",
            "pid": os.getpid(),
            "received": self.received,
            "duplicates": self.duplicates,
        }


def receiver_app(store: SessionStore, *, app_secret: str, verify_token: str) -> WebhookApp:
    """The receiver: wa_agent's webhook HTTP contract around an :class:`InboxRecorder`."""
    return WebhookApp(
        InboxRecorder(store),
        app_secret=app_secret,
        verify_token=verify_token,
        on_startup=store.open,
        on_shutdown=store.aclose,
    )


def receiver_from_env() -> WebhookApp:
    """For ``uvicorn --factory worker:receiver_from_env``."""
    return receiver_app(
        RedisSessionStore(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")),
        app_secret=os.environ["WHATSAPP_APP_SECRET"],
        verify_token=os.environ["WHATSAPP_VERIFY_TOKEN"],
    )


# --------------------------------------------------------------------------- worker


def answer(text: str, count: int) -> str:
    """The bot's logic (put your agent here)."""
    return f"#{count}: {text.upper()}"


async def answer_item(store: SessionStore, sender: Sender, item: InboxItem) -> None:
    """Answer one inbox item and take it out of the inbox."""
    message = Message.model_validate_json(item.payload)
    text = message.text or f"[{message.type}]"
    progress = json.loads(item.progress) if item.progress else {}
    if "reply" not in progress:  # not already sent by a worker that died before complete()
        history = await store.get_history(BOT, item.sender)
        progress["reply"] = answer(text, 1 + sum(t.role == "user" for t in history))
        await sender.send_text(item.sender, progress["reply"], reply_to=message.id)
        await store.save_progress(BOT, item.id, json.dumps(progress))
    await store.complete(
        BOT,
        item.id,
        item.sender,
        [Turn("user", text, message_id=message.id), Turn("assistant", progress["reply"])],
    )


async def work(
    store: SessionStore, sender: Sender, stop: asyncio.Event, *, owner: str | None = None
) -> int:
    """Answer the inbox until ``stop`` is set; return how many items this worker answered."""
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    answered = 0
    while not stop.is_set():
        busy = False
        for user in await store.pending_senders(BOT):
            lease = f"{BOT}:user:{user}"
            if not await store.acquire_lease(lease, owner, LEASE_TTL):
                continue  # another worker is answering this user
            busy = True
            try:
                for item in await store.pending(BOT, user):
                    if stop.is_set() or not await store.acquire_lease(lease, owner, LEASE_TTL):
                        break  # renewed per item; lost only if we stalled past the TTL
                    try:
                        await answer_item(store, sender, item)
                        answered += 1
                    except WhatsAppAPIError as exc:  # already retried per Meta's codes
                        logger.warning(
                            "could not answer %s (code %s); it stays in the inbox",
                            item.id,
                            exc.code,
                        )
                        break  # keep this user's order: try again on the next round
            finally:
                await store.release_lease(lease, owner)
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)
    return answered


# --------------------------------------------------------------------------- processes


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_receiver(redis_url: str, prefix: str, port: int) -> None:
    """A receiver process: serve until SIGTERM/SIGINT."""
    stop = _stop_on_signals()
    app = receiver_app(
        RedisSessionStore(redis_url, prefix=prefix),
        app_secret=os.environ["WHATSAPP_APP_SECRET"],
        verify_token=os.environ["WHATSAPP_VERIFY_TOKEN"],
    )
    async with BackgroundServer(app, port=port) as server:
        print(f"READY {server.url}", flush=True)
        await stop.wait()


async def run_worker(redis_url: str, prefix: str, graph_url: str, name: str) -> None:
    """A worker process: answer until SIGTERM/SIGINT."""
    stop = _stop_on_signals()
    store = RedisSessionStore(redis_url, prefix=prefix)
    async with (
        store,
        Sender(
            os.environ["WHATSAPP_ACCESS_TOKEN"],
            os.environ["WHATSAPP_PHONE_NUMBER_ID"],
            base_url=graph_url,
        ) as sender,
    ):
        print("READY", flush=True)
        answered = await work(store, sender, stop)
    print(f"{name} answered {answered} message(s)", flush=True)


# --------------------------------------------------------------------------- offline demo


async def _spawn(*args: str, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not line.startswith("READY"):
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{args[0]} process did not start (exit code {proc.returncode})")
    return proc, line.removeprefix("READY").strip()


async def demo(redis_url: str) -> None:
    """Two receivers, two workers, an emulator; every webhook delivered to both receivers."""
    import httpx

    from wa_agent import SignatureVerifier
    from wa_agent.testing import CloudAPIEmulator, webhooks

    prefix = f"demo-{uuid.uuid4().hex[:8]}"  # a fresh namespace on a shared server
    secret = "demo-app-secret"
    emulator = CloudAPIEmulator(access_token="demo-token")
    async with emulator.serve() as graph_url:
        env = os.environ | {
            "WHATSAPP_APP_SECRET": secret,
            "WHATSAPP_VERIFY_TOKEN": "demo-verify-token",
            "WHATSAPP_ACCESS_TOKEN": "demo-token",
            "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
        }
        shared = ("--redis-url", redis_url, "--prefix", prefix)
        work = ("work", *shared, "--graph-url", graph_url)
        procs: list[asyncio.subprocess.Process] = []
        try:
            started = await asyncio.gather(
                _spawn("receive", *shared, env=env),
                _spawn("receive", *shared, env=env),
                _spawn(*work, "--name", "worker-1", env=env),
                _spawn(*work, "--name", "worker-2", env=env),
            )
            procs = [proc for proc, _ in started]
            receivers = [url for _, url in started[:2]]
            print(f"2 receivers ({', '.join(receivers)}) and 2 workers share {prefix!r}")

            signer = SignatureVerifier(secret)
            users = {"15551230001": "Ana", "15551230002": "Ben", "15551230003": "Cai"}
            async with httpx.AsyncClient() as http:
                for n in range(1, 3):
                    for number, name in users.items():
                        body = webhooks.encode(
                            webhooks.envelope(
                                messages=[webhooks.text_message(number, f"{name} says {n}")]
                            )
                        )
                        headers = {
                            "content-type": "application/json",
                            "x-hub-signature-256": signer.sign(body),
                        }
                        answers = await asyncio.gather(
                            *(
                                http.post(f"{url}/webhook", content=body, headers=headers)
                                for url in receivers
                            )
                        )
                        statuses = sorted(r.json()["status"] for r in answers)
                        print(f"{name} message {n}, delivered to both receivers: {statuses}")
                health = [(await http.get(f"{url}/health")).json() for url in receivers]
            print(
                f"receivers recorded {sum(h['received'] for h in health)} message(s), "
                f"ignored {sum(h['duplicates'] for h in health)} duplicate(s)"
            )

            async with RedisSessionStore(redis_url, prefix=prefix) as store:
                for _ in range(1000):  # until the workers emptied the inbox (at most ~10 s)
                    if not await store.pending_senders(BOT):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise TimeoutError("the workers did not empty the inbox")
            for number, name in users.items():
                print(f"replies to {name}: {emulator.texts_to(number)}")
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            for proc in procs:
                out, _ = await asyncio.wait_for(proc.communicate(), 15)
                if out.strip():
                    print(out.decode().strip())


async def demo_with_own_redis() -> None:
    """Run :func:`demo` on a throwaway ``redis-server`` (loopback, nothing on disk)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: install it, or pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
            "--logfile",
            str(Path(tmp) / "redis.log"),
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(500):
                with contextlib.suppress(Exception):
                    async with RedisSessionStore(url) as probe:
                        await probe.pending_senders(BOT)
                    break
                await asyncio.sleep(0.02)
            await demo(url)
        finally:
            server.terminate()
            await server.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``[demo] | receive | work``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", nargs="?", choices=["demo", "receive", "work"], default="demo")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--prefix", default="wa_agent", help="the store's key prefix")
    parser.add_argument("--port", type=int, default=0, help="receiver port (0: any free one)")
    parser.add_argument(
        "--graph-url", default="https://graph.facebook.com", help="worker: the Cloud API base URL"
    )
    parser.add_argument("--name", default="worker", help="worker: its name in the output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    redis_url = args.redis_url or "redis://127.0.0.1:6379/0"
    if args.role == "receive":
        asyncio.run(run_receiver(redis_url, args.prefix, args.port))
    elif args.role == "work":
        asyncio.run(run_worker(redis_url, args.prefix, args.graph_url, args.name))
    elif args.redis_url:
        asyncio.run(demo(args.redis_url))
    else:
        asyncio.run(demo_with_own_redis())


if __name__ == "__main__":
    main()
