"""Delivery guarantees (SPEC §4 and §7, issue 5), end to end.

Real parts only: bot servers are real processes (``tests/bot_process.py``, uvicorn on
127.0.0.1) or real uvicorn servers in this process; stores are real SQLite files and a real
``redis-server``; replies go to the Cloud API emulator on loopback, which outlives the bot
processes and whose record proves every claim (each reply names the wamid it answers).

Faults are injected by :class:`CloudFaults`, a thin ASGI layer in front of the emulator: random
130429/5xx answers to sends (never accepted, so a resend is safe) and holding chosen sends
until the client goes away (to kill a bot between two parts of a reply).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import bot_process
from tests.redis_server import free_port
from wa_agent.agents import AgentRequest
from wa_agent.exceptions import StoreError
from wa_agent.interface import WhatsAppInterface
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.server import BackgroundServer
from wa_agent.signature import SignatureVerifier
from wa_agent.stores.base import InboxItem, SessionStore
from wa_agent.stores.memory import MemorySessionStore
from wa_agent.stores.sqlite import SQLiteSessionStore
from wa_agent.testing import webhooks
from wa_agent.testing.emulator import CloudAPIEmulator, SentMessage, graph_error

SECRET = "test-secret"
PNID = bot_process.PHONE_NUMBER_ID
NAME = bot_process.INTERFACE_NAME
ROOT = Path(__file__).resolve().parent.parent
_SIGNER = SignatureVerifier(SECRET)


# -- the emulator, with faults in front of it -------------------------------------------------
class CloudFaults:
    """ASGI layer in front of a :class:`CloudAPIEmulator`.

    ``throttle``/``errors``: fraction of sends answered 429 (code 130429) / 5xx (half
    ``131000`` with HTTP 500, half a proxy's HTML 502) *before* the emulator sees them, so
    the message was never accepted. ``hold``: sends for which it returns true are never
    forwarded nor answered; they end when the client disconnects (or :meth:`release`).
    Mark-as-read calls always pass.
    """

    def __init__(self, emulator: CloudAPIEmulator, *, seed: int = 5) -> None:
        self.emulator = emulator
        self.throttle = 0.0
        self.errors = 0.0
        self.hold: Callable[[dict[str, Any]], bool] | None = None
        self.held: list[dict[str, Any]] = []
        self.injected: collections.Counter[str] = collections.Counter()
        self._rng = random.Random(seed)
        self._release = asyncio.Event()

    def release(self) -> None:
        """Let every held call end (answered 503, never accepted)."""
        self._release.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith("/messages")
        ):
            await self.emulator(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and "type" in data:  # a send, not a mark-as-read
            if self.hold is not None and self.hold(data):
                self.held.append(data)
                await self._wait_disconnect_or_release(receive)
                await _answer(send, 503, graph_error(2))
                return
            draw = self._rng.random()
            if draw < self.throttle:
                self.injected["130429"] += 1
                await _answer(send, 429, graph_error(130429))
                return
            if draw < self.throttle + self.errors / 2:
                self.injected["131000"] += 1
                await _answer(send, 500, graph_error(131000))
                return
            if draw < self.throttle + self.errors:
                self.injected["502"] += 1
                await _answer(send, 502, None)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            result: dict[str, Any] = await receive()
            return result

        await self.emulator(scope, replay, send)

    async def _wait_disconnect_or_release(self, receive: Any) -> None:
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        waiters = [
            asyncio.ensure_future(disconnected()),
            asyncio.ensure_future(self._release.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


async def _answer(send: Any, status: int, body: dict[str, Any] | None) -> None:
    if body is None:
        payload, ctype = b"<html><body>502 Bad Gateway</body></html>", b"text/html"
    else:
        payload, ctype = json.dumps(body).encode(), b"application/json"
    with contextlib.suppress(Exception):  # the client may be gone (a killed bot)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@dataclass
class Cloud:
    """The emulator, its fault layer and its base URL."""

    emulator: CloudAPIEmulator
    faults: CloudFaults
    url: str

    def replies(self) -> collections.Counter[str]:
        """Accepted text replies per answered wamid (the agent's replies name it, or every
        wamid of a coalesced turn, comma-separated)."""
        return collections.Counter(
            wamid
            for m in self.emulator.messages
            if m.type == "text"
            for wamid in _answered(m).split(",")
        )

    async def wait_answered(self, wamids: Iterable[str], timeout: float = 20.0) -> None:
        """Wait until every wamid in ``wamids`` has at least one reply."""
        wanted = set(wamids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while missing := wanted - set(self.replies()):
            if loop.time() > deadline:
                raise AssertionError(
                    f"{len(missing)} message(s) never answered: {sorted(missing)[:5]}"
                )
            await asyncio.sleep(0.05)


def _answered(message: SentMessage) -> str:
    words = (message.text or "").split(maxsplit=2)
    return words[1] if len(words) > 1 else ""


@pytest.fixture
async def cloud() -> AsyncIterator[Cloud]:
    """The Cloud API emulator (with the fault layer) on a loopback port."""
    emulator = CloudAPIEmulator(access_token=bot_process.ACCESS_TOKEN)
    faults = CloudFaults(emulator)
    try:
        async with BackgroundServer(faults) as server:
            yield Cloud(emulator, faults, server.url)
            faults.release()
    finally:
        await emulator.aclose()


# -- bot processes ------------------------------------------------------------------------------
class BotProcess:
    """One ``tests/bot_process.py`` server; stderr goes to a file shown on failure."""

    def __init__(self, tmp_path: Path, cloud_url: str, store: str, **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp_path / f"bot-{self.port}.err"
        args = [
            sys.executable,
            "-m",
            "tests.bot_process",
            "--port",
            str(self.port),
            "--emulator",
            cloud_url,
            "--store",
            store,
            "--secret",
            SECRET,
        ]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    async def ready(self, client: httpx.AsyncClient, timeout: float = 20.0) -> None:
        """Wait until ``/health`` answers (the interface has started and resumed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited with {self.proc.returncode}:\n{self.stderr()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(self.url + "/health", timeout=1.0)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"bot did not start:\n{self.stderr()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM: uvicorn's graceful shutdown (the interface's ``aclose``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def bots(tmp_path: Path) -> Iterable[Callable[..., BotProcess]]:
    """Start bot processes; every one is killed at the end of the test, whatever happens."""
    started: list[BotProcess] = []

    def start(cloud_url: str, store: str, **options: Any) -> BotProcess:
        bot = BotProcess(tmp_path, cloud_url, store, **options)
        started.append(bot)
        return bot

    try:
        yield start
    finally:
        for bot in started:
            with contextlib.suppress(Exception):
                bot.kill()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as c:
        yield c


def message_body(sender: str, text: str, wamid: str | None = None) -> tuple[str, bytes]:
    """(wamid, signed-able body) of a one-message webhook."""
    item = webhooks.text_message(sender, text, wamid=wamid)
    return item["id"], webhooks.encode(webhooks.envelope(messages=[item], phone_number_id=PNID))


async def post(client: httpx.AsyncClient, url: str, body: bytes) -> tuple[int, str]:
    """POST a signed webhook like Meta; (status, body status) or (0, "") if it did not land."""
    try:
        response = await client.post(
            url + "/webhook",
            content=body,
            headers={"content-type": "application/json", "x-hub-signature-256": _SIGNER.sign(body)},
        )
    except httpx.TransportError:
        return 0, ""
    try:
        status = str(response.json().get("status", ""))
    except ValueError:
        status = ""
    return response.status_code, status


def store_spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    """(``--store`` value, ``--prefix``) for a fresh SQLite file or Redis key prefix."""
    if kind == "sqlite":
        return f"sqlite:{tmp_path / 'bot.db'}", "wa_agent"
    url: str = request.getfixturevalue("redis_url")
    return url, f"t{uuid.uuid4().hex[:10]}"


def open_store(spec: str, prefix: str) -> SessionStore:
    if spec.startswith("sqlite:"):
        return SQLiteSessionStore(spec[len("sqlite:") :])
    from wa_agent.stores.redis import RedisSessionStore

    return RedisSessionStore(spec, prefix=prefix)


async def inbox(spec: str, prefix: str) -> list[InboxItem]:
    """What is left in the bot's durable inbox (read by this process)."""
    store = open_store(spec, prefix)
    await store.open()
    try:
        return await store.pending(NAME)
    finally:
        await store.aclose()


async def wait_inbox_empty(spec: str, prefix: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while left := await inbox(spec, prefix):
        if loop.time() > deadline:
            raise AssertionError(f"{len(left)} item(s) still in the inbox")
        await asyncio.sleep(0.1)


def read_log(path: Path, kinds: tuple[str, ...] = ("start", "end")) -> list[dict[str, Any]]:
    """The bot processes' log events of ``kinds`` (agent ``start``/``end`` by default;
    ``lease`` for sender-lease attempts), in file order."""
    if not path.exists():
        return []
    events = (json.loads(line) for line in path.read_text().splitlines() if line)
    return [e for e in events if e["e"] in kinds]


# -- crash -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_crash_answers_every_acknowledged_message_exactly_once(
    kind: str,
    cloud: Cloud,
    bots: Callable[..., BotProcess],
    client: httpx.AsyncClient,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A bot process is SIGKILLed while answering 30 messages of 6 senders (slow agent); a new
    process on the same store answers every acknowledged message, and Meta's redeliveries of
    the ones not acknowledged; each exactly once. The only tolerated duplicate is a reply the
    emulator had accepted while its item was still in the inbox at the kill (the known window
    between Meta's acceptance and ``complete()``), and it is counted."""
    spec, prefix = store_spec(kind, tmp_path, request)
    senders = [f"1555000{n:04d}" for n in range(6)]
    bodies = {s: [message_body(s, f"m{j}") for j in range(5)] for s in senders}
    every = {w for msgs in bodies.values() for w, _ in msgs}
    acked: set[str] = set()
    bot = bots(cloud.url, spec, prefix=prefix, delay=0.3, lease_ttl=1.0, sweep=0.2)
    await bot.ready(client)

    async def send_all(sender: str, first: int, last: int, gap: float = 0.0) -> None:
        for wamid, body in bodies[sender][first:last]:
            await asyncio.sleep(gap)
            status, what = await post(client, bot.url, body)
            if status == 200:
                assert what == "processing"
                acked.add(wamid)

    await asyncio.gather(*(send_all(s, 0, 2) for s in senders))
    late = asyncio.gather(*(send_all(s, 2, 5, gap=0.3) for s in senders))
    await cloud.emulator.wait_for_messages(8, timeout=15)
    await asyncio.sleep(random.uniform(0.0, 0.3))  # a random moment, not just after a reply
    bot.kill()
    await late

    left = await inbox(spec, prefix)
    replied = cloud.replies()
    in_window = {item.id for item in left if replied[item.id]}
    assert left, "the kill came too late: nothing was left to recover"
    assert acked - set(replied), "no acknowledged message was waiting at the kill"

    second = bots(cloud.url, spec, prefix=prefix, delay=0.05, lease_ttl=1.0, sweep=0.2)
    await second.ready(client)
    for wamid, body in (m for msgs in bodies.values() for m in msgs):
        status, what = await post(client, second.url, body)  # Meta redelivers (some) of them
        assert status == 200
        if wamid in acked:  # recorded before the crash: the store's dedupe survived it
            assert what == "ignored"
    await cloud.wait_answered(every)
    await wait_inbox_empty(spec, prefix)

    counts = cloud.replies()
    duplicates = {w: n for w, n in counts.items() if n > 1}
    print(
        f"\n[{kind}] acknowledged before the kill: {len(acked)}/30, left in the inbox: "
        f"{len(left)}, replies in the window at the kill: {len(in_window)}, "
        f"duplicates: {len(duplicates)}"
    )
    assert set(counts) == every
    assert set(duplicates) <= in_window, f"duplicates outside the known window: {duplicates}"
    assert all(n == 2 for n in duplicates.values())


# -- duplicates across two processes ------------------------------------------------------------
async def test_duplicate_storm_across_two_processes_sharing_redis(
    cloud: Cloud,
    bots: Callable[..., BotProcess],
    client: httpx.AsyncClient,
    tmp_path: Path,
    redis_url: str,
) -> None:
    """Every message is delivered 3 times at once, split across two processes sharing Redis:
    exactly one delivery is recorded, the agent runs once, one reply is sent, a sender's
    agent calls never run in two processes at once (per-sender lease across processes; in
    TASK mode one process may run several of them)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    log = tmp_path / "agent.log"
    common: dict[str, Any] = {
        "prefix": prefix,
        "delay": 0.1,
        "lease_ttl": 2.0,
        "sweep": 0.2,
        "log": log,
    }
    a = bots(cloud.url, redis_url, **common)
    b = bots(cloud.url, redis_url, **common)
    await asyncio.gather(a.ready(client), b.ready(client))
    senders = [f"1555100{n:04d}" for n in range(8)]
    messages = [message_body(s, f"m{j}") for j in range(4) for s in senders]
    rng = random.Random(7)

    async def storm(body: bytes) -> list[tuple[int, str]]:
        targets = [a.url, b.url, rng.choice([a.url, b.url])]
        return list(await asyncio.gather(*(post(client, url, body) for url in targets)))

    results = await asyncio.gather(*(storm(body) for _, body in messages))
    for outcome in results:
        assert all(status == 200 for status, _ in outcome), outcome
        assert sorted(what for _, what in outcome) == ["ignored", "ignored", "processing"]
    wamids = {w for w, _ in messages}
    await cloud.wait_answered(wamids)
    await wait_inbox_empty(redis_url, prefix)
    counts = cloud.replies()
    assert set(counts) == wamids
    assert max(counts.values()) == 1
    events = read_log(log)
    assert collections.Counter(e["id"] for e in events if e["e"] == "start") == dict.fromkeys(
        wamids, 1
    )
    busy: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for event in events:  # file order is call order
        running = busy[event["s"]]
        if event["e"] == "start":
            others = [pid for pid, n in running.items() if n and pid != event["pid"]]
            assert not others, f"agent calls of {event['s']} ran in two processes at once"
            running[event["pid"]] += 1
        else:
            running[event["pid"]] -= 1
    assert len({e["pid"] for e in events}) == 2, "one process did all the work"


# -- faults from the Cloud API -----------------------------------------------------------------
async def test_fault_storm_loses_and_duplicates_nothing(
    cloud: Cloud, bots: Callable[..., BotProcess], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The Cloud API answers ~10% of sends 429/130429 and ~2% 5xx, and the Sender does not
    retry by itself (every fault reaches the inbox retry): every message is answered once."""
    cloud.faults.throttle, cloud.faults.errors = 0.10, 0.02
    bot = bots(
        cloud.url, f"sqlite:{tmp_path / 'bot.db'}", sweep=0.05, retry_scale=0, retry_attempts=1
    )
    await bot.ready(client)
    senders = [f"1555200{n:04d}" for n in range(8)]
    messages = [message_body(s, f"m{j}") for j in range(10) for s in senders]
    for chunk in range(0, len(messages), 20):
        outcome = await asyncio.gather(
            *(post(client, bot.url, body) for _, body in messages[chunk : chunk + 20])
        )
        assert all(r == (200, "processing") for r in outcome)
    wamids = {w for w, _ in messages}
    await cloud.wait_answered(wamids, timeout=30)
    await wait_inbox_empty(f"sqlite:{tmp_path / 'bot.db'}", "")
    counts = cloud.replies()
    print(
        f"\ninjected faults: {dict(cloud.faults.injected)} over "
        f"{sum(cloud.faults.injected.values()) + len(cloud.emulator.messages)} sends"
    )
    assert sum(cloud.faults.injected.values()) >= 5
    assert set(counts) == wamids
    assert max(counts.values()) == 1


# -- multi-part progress --------------------------------------------------------------------------
async def test_crash_between_parts_resumes_with_the_remaining_parts(
    cloud: Cloud, bots: Callable[..., BotProcess], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A three-part reply: the bot is killed while its second part is on the wire (never
    accepted). The next process sends parts 2 and 3 only, without asking the agent again."""
    spec = f"sqlite:{tmp_path / 'bot.db'}"
    log = tmp_path / "agent.log"
    cloud.faults.hold = lambda body: str(body.get("text", {}).get("body", "")).startswith("PART2")
    bot = bots(cloud.url, spec, log=log)
    await bot.ready(client)
    wamid, body = message_body("15553000001", "MULTI please")
    assert await post(client, bot.url, body) == (200, "processing")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not cloud.faults.held:
        assert loop.time() < deadline, "the second part never came"
        await asyncio.sleep(0.02)
    bot.kill()
    cloud.faults.hold = None
    second = bots(cloud.url, spec, log=log)
    await second.ready(client)
    await cloud.emulator.wait_for_messages(3, timeout=15)
    await wait_inbox_empty(spec, "")
    parts = [(m.text or "").split()[0] for m in cloud.emulator.messages]
    assert parts == ["PART1", "PART2", "PART3"]
    assert all(_answered(m) == wamid for m in cloud.emulator.messages)
    assert [e["e"] for e in read_log(log)] == ["start", "end"]


# -- in-process servers ------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def served(
    cloud: Cloud, agent: Any, storage: SessionStore, **options: Any
) -> AsyncIterator[tuple[WhatsAppInterface, str]]:
    """An interface on a real uvicorn server in this process; (interface, base URL)."""
    options = {"sweep_interval": 0.1, "lease_ttl": 1.0, **options}
    sender = Sender(
        bot_process.ACCESS_TOKEN, PNID, base_url=cloud.url, retry=RetryPolicy(scale=0.01)
    )
    interface = WhatsAppInterface(
        agent,
        name=NAME,
        app_secret=SECRET,
        storage=storage,
        sender=sender,
        phone_number_id=PNID,
        **options,
    )
    try:
        async with BackgroundServer(interface.attach_routes()) as server:
            yield interface, server.url
    finally:
        await interface.aclose()
        await sender.aclose()


def echo(request: AgentRequest) -> str:
    assert request.message is not None
    return f"re {request.message.id} {request.text}"


async def test_one_sender_at_a_time_in_order_and_senders_concurrently_up_to_the_bound(
    cloud: Cloud, client: httpx.AsyncClient
) -> None:
    """Six senders, four messages each, ``max_concurrency=3`` and
    ``max_concurrency_per_sender=1``: a sender's messages reach the agent one at a time in
    arrival order (and are answered in that order), while exactly three senders are served
    at once (counted, not timed)."""
    per_sender: collections.Counter[str] = collections.Counter()
    worst_per_sender = 0
    running = peak = 0
    three = asyncio.Event()
    seen: dict[str, list[str]] = collections.defaultdict(list)

    async def agent(request: AgentRequest) -> str:
        nonlocal worst_per_sender, running, peak
        per_sender[request.sender] += 1
        running += 1
        worst_per_sender = max(worst_per_sender, per_sender[request.sender])
        peak = max(peak, running)
        seen[request.sender].append(request.text)
        if running >= 3:
            three.set()
        try:
            await asyncio.wait_for(three.wait(), 10)  # the first three wait for each other
            await asyncio.sleep(0.005)
        finally:
            per_sender[request.sender] -= 1
            running -= 1
        return echo(request)

    senders = [f"1555400{n:04d}" for n in range(6)]
    posted: dict[str, list[str]] = {}
    async with served(
        cloud, agent, MemorySessionStore(), max_concurrency=3, max_concurrency_per_sender=1
    ) as (_, url):

        async def send(sender: str) -> None:
            posted[sender] = []
            for j in range(4):
                wamid, body = message_body(sender, f"m{j}")
                assert await post(client, url, body) == (200, "processing")
                posted[sender].append(wamid)

        await asyncio.gather(*(send(s) for s in senders))
        await cloud.wait_answered(w for ws in posted.values() for w in ws)
    assert worst_per_sender == 1
    assert peak == 3
    for sender in senders:
        assert seen[sender] == ["m0", "m1", "m2", "m3"]
        assert [_answered(m) for m in cloud.emulator.sent_to(sender)] == posted[sender]
    assert max(cloud.replies().values()) == 1


async def test_beyond_the_queue_bound_messages_wait_in_the_inbox_and_are_answered(
    cloud: Cloud, client: httpx.AsyncClient
) -> None:
    """Twenty messages of ten senders at once with room for three queued senders (two
    running): every webhook is acknowledged 200 (recorded, so never 503), at most three
    senders are held in memory, the rest wait in the inbox, and all are answered once, in
    order per sender."""
    queued_peak = 0
    holder: list[WhatsAppInterface] = []

    async def agent(request: AgentRequest) -> str:
        nonlocal queued_peak
        queued_peak = max(queued_peak, holder[0].health()["queued_senders"])
        await asyncio.sleep(0.01)
        return echo(request)

    messages = [message_body(f"1555500{n:04d}", f"m{j}") for j in range(2) for n in range(10)]
    async with served(
        cloud,
        agent,
        MemorySessionStore(),
        max_concurrency=2,
        max_queued_senders=3,
        sweep_interval=0.05,
    ) as (interface, url):
        holder.append(interface)
        outcome = await asyncio.gather(*(post(client, url, body) for _, body in messages))
        assert all(r == (200, "processing") for r in outcome)
        await cloud.wait_answered(w for w, _ in messages)
        await interface.drain()
        assert interface.stats.deferred > 0
    assert 2 <= queued_peak <= 3
    assert max(cloud.replies().values()) == 1
    for n in range(10):
        sender = f"1555500{n:04d}"
        assert [(m.text or "").split()[2] for m in cloud.emulator.sent_to(sender)] == ["m0", "m1"]


async def test_graceful_shutdown_finishes_in_flight_work_and_leaves_the_rest(
    cloud: Cloud, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """At shutdown (two slots, ``shutdown_timeout`` 1.5 s): the reply in progress is
    finished; a message queued behind it, one waiting for a slot and one arriving during the
    shutdown stay in the inbox; an agent slower than the bound is cancelled. After a restart
    on the same SQLite file each of them is answered, each message exactly once."""
    path = tmp_path / "bot.db"
    started: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
    finish_first = asyncio.Event()
    calls: list[tuple[str, str]] = []

    async def agent(request: AgentRequest) -> str:
        calls.append(("start", request.text))
        started[request.text].set()
        try:
            if request.text == "a1":
                await finish_first.wait()
            elif request.text == "b1":
                await asyncio.sleep(60)
        except asyncio.CancelledError:
            calls.append(("cancelled", request.text))
            raise
        return echo(request)

    a1, a2, b1, c1, d1 = (
        message_body(f"155560000{n}", t)
        for n, t in ((1, "a1"), (1, "a2"), (2, "b1"), (3, "c1"), (4, "d1"))
    )
    async with served(
        cloud, agent, SQLiteSessionStore(path), max_concurrency=2, shutdown_timeout=1.5
    ) as (interface, url):
        for _, body in (a1, b1):
            assert await post(client, url, body) == (200, "processing")
        await asyncio.wait_for(asyncio.gather(started["a1"].wait(), started["b1"].wait()), 10)
        for _, body in (a2, c1):  # a2 queues behind a1; c1 waits for a slot
            assert await post(client, url, body) == (200, "processing")
        closing = asyncio.ensure_future(interface.aclose())
        await asyncio.sleep(0)
        assert await post(client, url, d1[1]) == (200, "processing")  # recorded, not started
        finish_first.set()
        await closing
    assert calls == [("start", "a1"), ("start", "b1"), ("cancelled", "b1")]
    assert set(cloud.replies()) == {a1[0]}
    left = await inbox(f"sqlite:{path}", "")
    assert {item.id for item in left} == {a2[0], b1[0], c1[0], d1[0]}

    async with served(cloud, echo, SQLiteSessionStore(path)) as (interface, _):
        await cloud.wait_answered(w for w, _ in (a1, a2, b1, c1, d1))
        await interface.drain()
    assert cloud.replies() == dict.fromkeys((w for w, _ in (a1, a2, b1, c1, d1)), 1)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_redelivery_within_the_dedupe_ttl_is_ignored_and_after_it_processed(
    kind: str, cloud: Cloud, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """With an injected store clock and a 60 s dedupe TTL: a redelivery 59 s later is
    acknowledged as ignored (no second reply); one 61 s later is a new message again."""
    clock = _Clock()
    store: SessionStore = (
        MemorySessionStore(dedupe_ttl=60, clock=clock)
        if kind == "memory"
        else SQLiteSessionStore(tmp_path / "bot.db", dedupe_ttl=60, clock=clock)
    )
    wamid, body = message_body("15557000001", "hello")
    async with served(cloud, echo, store) as (interface, url):
        assert await post(client, url, body) == (200, "processing")
        await cloud.wait_answered([wamid])
        await interface.drain()
        clock.now += 59
        assert await post(client, url, body) == (200, "ignored")
        assert interface.stats.duplicates == 1
        clock.now += 2
        assert await post(client, url, body) == (200, "processing")
        await cloud.emulator.wait_for_messages(2, timeout=10)
        await interface.drain()
    assert cloud.replies() == {wamid: 2}


class FlakyStore(SQLiteSessionStore):
    """A real SQLite store whose ``complete`` fails the next ``fail_complete`` times."""

    fail_complete = 0

    async def complete(self, interface: str, item_id: str, sender: str, turns: Any = ()) -> None:
        if self.fail_complete > 0:
            self.fail_complete -= 1
            raise StoreError("injected: the store is unreachable")
        await super().complete(interface, item_id, sender, turns)


async def test_store_that_cannot_write_answers_500_and_the_redelivery_is_answered(
    cloud: Cloud, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """While another connection holds the SQLite file's write lock, the webhook answers 500
    (Meta will redeliver) and nothing reaches the agent; once the lock is gone, the
    redelivery is recorded and answered exactly once."""
    path = tmp_path / "bot.db"
    calls: list[str] = []

    def agent(request: AgentRequest) -> str:
        calls.append(request.text)
        return echo(request)

    wamid, body = message_body("15558000001", "hello")
    async with served(cloud, agent, SQLiteSessionStore(path, busy_timeout=0.2)) as (i, url):
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            assert (await post(client, url, body))[0] == 500
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert calls == []
        assert await post(client, url, body) == (200, "processing")
        await cloud.wait_answered([wamid])
        await i.drain()
    assert cloud.replies() == {wamid: 1}
    assert calls == ["hello"]


async def test_store_failure_after_the_send_never_resends(
    cloud: Cloud, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The reply was accepted but the store fails to record it (twice): the interface retries
    the bookkeeping, not the send; one reply, and the inbox ends empty."""
    store = FlakyStore(tmp_path / "bot.db")
    store.fail_complete = 2
    wamid, body = message_body("15558000002", "hello")
    async with served(cloud, echo, store) as (interface, url):
        assert await post(client, url, body) == (200, "processing")
        await cloud.wait_answered([wamid])
        await interface.drain()
        assert store.fail_complete == 0
        assert await store.pending(NAME) == []
    assert cloud.replies() == {wamid: 1}


async def test_slow_agent_keeps_its_sender_lease(cloud: Cloud, client: httpx.AsyncClient) -> None:
    """Two interfaces share one store (as two workers share Redis) with a 0.3 s lease and an
    agent that takes 1 s: the holder renews the lease, so the other worker, which sweeps the
    inbox every 50 ms, never answers the same message a second time."""
    store = MemorySessionStore()
    calls: list[str] = []

    async def agent(request: AgentRequest) -> str:
        calls.append(request.text)
        await asyncio.sleep(1.0)
        return echo(request)

    wamid, body = message_body("15559000001", "hello")
    async with (
        served(cloud, agent, store, lease_ttl=0.3, sweep_interval=0.05) as (a, url),
        served(cloud, agent, store, lease_ttl=0.3, sweep_interval=0.05) as (b, _),
    ):
        await b.start()
        assert await post(client, url, body) == (200, "processing")
        await cloud.wait_answered([wamid])
        await a.drain()
        await b.drain()
    assert calls == ["hello"]
    assert cloud.replies() == {wamid: 1}


async def test_sigterm_lets_the_reply_in_progress_finish_and_keeps_the_rest(
    cloud: Cloud, bots: Callable[..., BotProcess], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A real process gets SIGTERM while its agent answers the first of two messages of one
    sender (one at a time: ``max_concurrency_per_sender=1``): uvicorn's graceful shutdown
    runs the interface's, the first reply is sent, the process exits and the second message
    waits in the inbox; the next process answers it. Each message is answered once."""
    spec = f"sqlite:{tmp_path / 'bot.db'}"
    log = tmp_path / "agent.log"
    bot = bots(cloud.url, spec, delay=0.5, shutdown_timeout=10, log=log, per_sender=1)
    await bot.ready(client)
    first, second = message_body("15556100001", "m0"), message_body("15556100001", "m1")
    for _, body in (first, second):
        assert await post(client, bot.url, body) == (200, "processing")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not read_log(log):
        assert loop.time() < deadline, "the agent never started"
        await asyncio.sleep(0.02)
    # uvicorn re-raises the signal after its graceful shutdown: exit status -SIGTERM.
    assert await asyncio.to_thread(bot.terminate) in (0, -signal.SIGTERM)
    assert "Traceback" not in bot.stderr()
    assert set(cloud.replies()) == {first[0]}
    assert [item.id for item in await inbox(spec, "")] == [second[0]]
    again = bots(cloud.url, spec, log=log)
    await again.ready(client)
    await cloud.wait_answered([first[0], second[0]])
    await wait_inbox_empty(spec, "")
    assert cloud.replies() == {first[0]: 1, second[0]: 1}


class ReceiverOnly:
    """A view of a shared store for a worker that never wins a sender's lease (so another
    worker answers everything it records)."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        return False


async def test_backlog_bound_counts_messages_answered_by_another_worker(
    cloud: Cloud, client: httpx.AsyncClient
) -> None:
    """Worker A records a sender's messages, worker B (same store) answers them. With a
    backlog bound of two per sender, A keeps accepting that sender's messages one after
    another: what B answered no longer counts against the sender on A."""
    store = MemorySessionStore()
    wamids = []
    async with (
        served(cloud, echo, ReceiverOnly(store), lease_ttl=0.4, max_pending_per_sender=2) as (
            a,
            url,
        ),
        served(cloud, echo, store, lease_ttl=0.4, sweep_interval=0.05) as (b, _),
    ):
        await b.start()
        for n in range(5):
            wamid, body = message_body("15559100001", f"m{n}")
            assert await post(client, url, body) == (200, "processing")
            wamids.append(wamid)
            await cloud.wait_answered([wamid])
            await a.drain()
        assert a.stats.processed == 0
        assert b.stats.processed == 5
    assert cloud.replies() == dict.fromkeys(wamids, 1)


# -- coalesced CHAT turns across crashes and workers ---------------------------------------------
async def _wait_log(
    log: Path, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate(events := read_log(log)):
        assert loop.time() < deadline, f"log never matched: {events}"
        await asyncio.sleep(0.02)
    return events


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_crash_mid_coalesced_turn_redoes_the_whole_turn(
    kind: str,
    cloud: Cloud,
    bots: Callable[..., BotProcess],
    client: httpx.AsyncClient,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """CHAT: two follow-ups recorded while the first message is answered form one turn;
    the process is SIGKILLed while that turn's agent runs. The next process on the same
    store answers the two follow-ups again as ONE turn: each message gets exactly one
    reply, and the history holds each user message once, in order."""
    if kind == "redis":
        spec, prefix = request.getfixturevalue("redis_url"), f"t{uuid.uuid4().hex[:10]}"
    else:
        spec, prefix = f"sqlite:{tmp_path / 'bot.db'}", ""
    log = tmp_path / "agent.log"
    options: dict[str, Any] = {"mode": "chat", "log": log, "prefix": prefix or "wa_agent"}
    bot = bots(cloud.url, spec, delay=0.6, **options)
    await bot.ready(client)
    contact = "15557100001"
    messages = [message_body(contact, f"m{n}") for n in range(3)]
    ids = [wamid for wamid, _ in messages]
    assert await post(client, bot.url, messages[0][1]) == (200, "processing")
    await _wait_log(log, lambda ev: any(e["e"] == "start" for e in ev))
    for _, body in messages[1:]:
        assert await post(client, bot.url, body) == (200, "processing")
    turn = f"{ids[1]},{ids[2]}"
    await _wait_log(log, lambda ev: any(e["e"] == "start" and e["id"] == turn for e in ev))
    bot.kill()  # mid-turn: the coalesced turn's agent is running
    assert cloud.replies() == {ids[0]: 1}
    left = await inbox(spec, options["prefix"] if kind == "redis" else "")
    assert [item.id for item in left] == ids[1:]
    again = bots(cloud.url, spec, **options)
    await again.ready(client)
    await cloud.wait_answered(ids)
    await wait_inbox_empty(spec, options["prefix"] if kind == "redis" else "")
    assert cloud.replies() == dict.fromkeys(ids, 1)
    texts = [m.text or "" for m in cloud.emulator.sent_to(contact)]
    assert texts == [f"re {ids[0]} m0", f"re {turn} m1\nm2"]
    store = open_store(spec, options["prefix"] if kind == "redis" else "")
    await store.open()
    try:
        history = await store.get_history(NAME, contact)
    finally:
        await store.aclose()
    assert [(t.role, t.message_id) for t in history] == [
        ("user", ids[0]),
        ("assistant", None),
        ("user", ids[1]),
        ("user", ids[2]),
        ("assistant", None),
    ]


async def test_two_workers_on_redis_coalesce_one_burst_once(
    cloud: Cloud,
    bots: Callable[..., BotProcess],
    client: httpx.AsyncClient,
    tmp_path: Path,
    redis_url: str,
) -> None:
    """CHAT, two processes sharing Redis: a burst of one contact's follow-ups, recorded half
    by each process while the first message is answered, is answered in one turn by the
    lease holder: two agent runs in all, every message answered exactly once."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    log = tmp_path / "agent.log"
    common: dict[str, Any] = {
        "prefix": prefix,
        "mode": "chat",
        "delay": 0.6,
        "lease_ttl": 3.0,
        "sweep": 0.2,
        "log": log,
    }
    a, b = bots(cloud.url, redis_url, **common), bots(cloud.url, redis_url, **common)
    await asyncio.gather(a.ready(client), b.ready(client))
    contact = "15557200001"
    messages = [message_body(contact, f"m{n}") for n in range(6)]
    ids = [wamid for wamid, _ in messages]
    assert await post(client, a.url, messages[0][1]) == (200, "processing")
    await _wait_log(log, lambda ev: any(e["e"] == "start" for e in ev))
    for n, (_, body) in enumerate(messages[1:]):
        assert await post(client, (a, b)[n % 2].url, body) == (200, "processing")
    await cloud.wait_answered(ids)
    await wait_inbox_empty(redis_url, prefix)
    assert cloud.replies() == dict.fromkeys(ids, 1)
    starts = [e["id"] for e in read_log(log) if e["e"] == "start"]
    assert starts == [ids[0], ",".join(ids[1:])]


async def test_a_dead_workers_senders_are_taken_over_within_the_lease_ttl(
    cloud: Cloud, bots: Callable[..., BotProcess], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A process is SIGKILLed while its agent answers a sender (its lease held, renewed
    while it lived); the process restarted on the same store takes the sender over once the
    dead lease lapses: with the default ``lease_ttl`` (6 s) and one attempt a second that
    is at most 8 failed lease attempts (counted, not timed; the old 30 s lease took ~30),
    and the message is answered once."""
    spec = f"sqlite:{tmp_path / 'bot.db'}"
    log = tmp_path / "agent.log"
    first = bots(cloud.url, spec, delay=60, lease_ttl=0, log=log)
    await first.ready(client)
    wamid, body = message_body("15558100001", "stuck")
    assert await post(client, first.url, body) == (200, "processing")
    await _wait_log(log, lambda ev: any(e["e"] == "start" for e in ev))
    first.kill()
    again = bots(cloud.url, spec, lease_ttl=0, log=log)
    await again.ready(client)
    await cloud.wait_answered([wamid], timeout=30)
    attempts = [e for e in read_log(log, ("lease",)) if e["pid"] == again.proc.pid]
    failed = [e for e in attempts if not e["ok"]]
    assert attempts and attempts[-1]["ok"]
    assert len(failed) <= 8, f"{len(failed)} failed attempts before the takeover"
    assert cloud.replies() == {wamid: 1}


async def test_the_duplicate_window_is_a_process_stopping_during_a_store_outage(
    cloud: Cloud, bots: Callable[..., BotProcess], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The real duplicate window, measured: replies go out while the store cannot record
    them (``complete`` fails). While the process runs it retries the record and never
    resends, however long the outage; only when it is killed during the outage are those
    replies (and only those) sent once more by the restarted process."""
    spec = f"sqlite:{tmp_path / 'bot.db'}"
    marker = tmp_path / "outage"
    marker.touch()
    bot = bots(cloud.url, spec, outage=marker, sweep=0.05)
    await bot.ready(client)
    messages = [message_body(f"155582000{n:02d}", "hi") for n in range(3)]
    for _, body in messages:
        assert await post(client, bot.url, body) == (200, "processing")
    ids = [wamid for wamid, _ in messages]
    await cloud.wait_answered(ids)
    await asyncio.sleep(1.0)  # the outage goes on: the records are retried, nothing resent
    assert cloud.replies() == dict.fromkeys(ids, 1)
    bot.kill()
    marker.unlink()  # the store recovers; the bot is restarted on it
    again = bots(cloud.url, spec, sweep=0.05)
    await again.ready(client)
    await wait_inbox_empty(spec, "")
    assert cloud.replies() == dict.fromkeys(ids, 2)
