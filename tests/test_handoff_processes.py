"""Handoff across processes (issue 21): the state is in the store, so it survives a SIGKILL
on SQLite and holds for every worker sharing Redis at once; messages that arrive while a
handoff or a resume happens are neither lost nor answered twice.

Bot servers are real processes (``tests/bot_process.py``: the agent answers ``HANDOFF…``
with ``handoff=True``); the operator is a ``receive_only`` interface on the same store in
this process, as an operator's console next to a deployment would be. Replies go to the
Cloud API emulator, whose record proves each claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from tests import bot_process, test_delivery
from tests.test_delivery import (
    NAME,
    PNID,
    BotProcess,
    Cloud,
    message_body,
    open_store,
    post,
    read_log,
    wait_inbox_empty,
)
from wa_agent.interface import WhatsAppInterface
from wa_agent.sender import RetryPolicy, Sender

CONTACT = "15557300001"

# The delivery tests' fixtures: the emulator with its fault layer, bot processes, a client.
cloud = test_delivery.cloud
bots = test_delivery.bots
client = test_delivery.client


@contextlib.asynccontextmanager
async def operator_console(
    api: Cloud, spec: str, prefix: str, mode: str
) -> AsyncIterator[WhatsAppInterface]:
    """A receive-only interface on the bots' store: the operator's side."""
    sender = Sender(bot_process.ACCESS_TOKEN, PNID, base_url=api.url, retry=RetryPolicy(scale=0.01))
    storage = open_store(spec, prefix)
    interface = WhatsAppInterface(
        lambda r: "unused",
        name=NAME,
        storage=storage,
        app_secret="operator-console-secret",
        sender=sender,
        phone_number_id=PNID,
        mode=mode,
        receive_only=True,
    )
    try:
        async with interface:
            yield interface
    finally:
        await sender.aclose()


def answered(api: Cloud) -> dict[str, int]:
    """Agent replies per answered wamid (the operator's messages name none)."""
    return {k: n for k, n in api.replies().items() if k.startswith("wamid.")}


async def history_of(spec: str, prefix: str, contact: str) -> list[tuple[str, str]]:
    store = open_store(spec, prefix)
    await store.open()
    try:
        return [(t.role, t.text) for t in await store.get_history(NAME, contact)]
    finally:
        await store.aclose()


async def test_sigkill_during_the_agents_handoff_on_sqlite(
    cloud: Cloud, bots: Callable[..., BotProcess], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """SQLite, CHAT: the bot is SIGKILLed while the reply that hands over
    (``handoff=True``) is on the wire. The next process sends that reply once, without
    asking the agent again, and then hands off; a message after it is recorded, not
    answered, and still not after another SIGKILL and restart; the operator (another
    process on the file) resumes, and the agent's next request carries the handed-off
    exchange."""
    spec = f"sqlite:{tmp_path / 'bot.db'}"
    log = tmp_path / "agent.log"
    cloud.faults.hold = lambda body: str(body.get("text", {}).get("body", "")).startswith(
        "HANDOFF-OK"
    )
    bot = bots(cloud.url, spec, mode="chat", log=log)
    await bot.ready(client)
    m0, body = message_body(CONTACT, "HANDOFF please")
    assert await post(client, bot.url, body) == (200, "processing")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not cloud.faults.held:
        assert loop.time() < deadline, "the handoff reply never came"
        await asyncio.sleep(0.02)
    bot.kill()
    cloud.faults.hold = None
    async with operator_console(cloud, spec, "", "chat") as console:
        assert not await console.is_handed_off(CONTACT)  # the reply was not out yet
    second = bots(cloud.url, spec, mode="chat", log=log)
    await second.ready(client)
    await cloud.wait_answered([m0])
    await wait_inbox_empty(spec, "")
    async with operator_console(cloud, spec, "", "chat") as console:
        assert (await console.handoffs())[CONTACT].by == "agent"
    _, body = message_body(CONTACT, "hello? anyone?")
    assert await post(client, second.url, body) == (200, "processing")
    await wait_inbox_empty(spec, "")
    second.kill()
    third = bots(cloud.url, spec, mode="chat", log=log)
    await third.ready(client)
    _, body = message_body(CONTACT, "still waiting")
    assert await post(client, third.url, body) == (200, "processing")
    await wait_inbox_empty(spec, "")
    async with operator_console(cloud, spec, "", "chat") as console:
        assert await console.is_handed_off(CONTACT)
        await console.send(CONTACT, "Sam here, sorted.")
        assert await console.resume(CONTACT)
    m3, body = message_body(CONTACT, "thanks")
    assert await post(client, third.url, body) == (200, "processing")
    await cloud.wait_answered([m3])
    assert answered(cloud) == {m0: 1, m3: 1}
    starts = [e for e in read_log(log) if e["e"] == "start"]
    assert [e["id"] for e in starts] == [m0, m3]
    assert starts[-1]["h"] == [
        ["user", "HANDOFF please"],
        ["assistant", f"HANDOFF-OK {m0}"],
        ["user", "hello? anyone?"],
        ["user", "still waiting"],
        ["operator", "Sam here, sorted."],
    ]
    texts = [m.text for m in cloud.emulator.sent_to(CONTACT)]
    assert texts == [f"HANDOFF-OK {m0}", "Sam here, sorted.", f"re {m3} thanks"]


async def test_two_workers_on_redis_honour_a_handoff_at_once(
    cloud: Cloud,
    bots: Callable[..., BotProcess],
    client: httpx.AsyncClient,
    tmp_path: Path,
    redis_url: str,
) -> None:
    """TASK, two processes on one Redis: after the operator (a third process's interface)
    hands a contact off, neither worker answers them; a burst sent to both workers while
    the operator resumes is neither lost nor answered twice (each message is answered once
    or recorded for the operator); afterwards every message is answered, the first with
    the handed-off exchange in its history."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    log = tmp_path / "agent.log"
    common = {"prefix": prefix, "mode": "task", "lease_ttl": 3.0, "sweep": 0.2, "log": log}
    a, b = bots(cloud.url, redis_url, **common), bots(cloud.url, redis_url, **common)
    await asyncio.gather(a.ready(client), b.ready(client))
    async with operator_console(cloud, redis_url, prefix, "task") as console:
        await console.handoff(CONTACT, note="complaint")
        held = [message_body(CONTACT, f"held {n}") for n in range(6)]
        for n, (_, body) in enumerate(held):
            assert await post(client, (a, b)[n % 2].url, body) == (200, "processing")
        await wait_inbox_empty(redis_url, prefix)
        assert answered(cloud) == {}
        await console.send(CONTACT, "Operator here.")
        burst = [message_body(CONTACT, f"burst {n}") for n in range(6)]
        posts = [post(client, (a, b)[n % 2].url, body) for n, (_, body) in enumerate(burst)]
        results = await asyncio.gather(console.resume(CONTACT), *posts)
        assert results[0] is True
        assert all(r == (200, "processing") for r in results[1:])
        await wait_inbox_empty(redis_url, prefix)
        later = [message_body(CONTACT, f"later {n}") for n in range(3)]
        for n, (_, body) in enumerate(later):
            assert await post(client, (a, b)[n % 2].url, body) == (200, "processing")
        await cloud.wait_answered([wamid for wamid, _ in later])
        await wait_inbox_empty(redis_url, prefix)
    replies = answered(cloud)
    held_ids = [wamid for wamid, _ in held]
    burst_ids = [wamid for wamid, _ in burst]
    assert not any(wamid in replies for wamid in held_ids)
    assert all(replies.get(wamid, 0) <= 1 for wamid in burst_ids)
    history = await history_of(redis_url, prefix, CONTACT)
    recorded = {text for role, text in history if role == "user"}
    for n, wamid in enumerate(burst_ids):  # answered, or recorded for the operator
        assert replies.get(wamid, 0) == 1 or f"burst {n}" in recorded
    assert all(replies[wamid] == 1 for wamid, _ in later)
    starts = [e for e in read_log(log) if e["e"] == "start"]
    assert len(starts) == sum(replies.values())
    first = starts[0]["h"]
    assert [r for r, _ in first[:6]] == ["user"] * 6
    assert ["operator", "Operator here."] in first
