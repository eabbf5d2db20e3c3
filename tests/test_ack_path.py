"""The ack path's shortcuts keep behaviour: the parsed message reaches the agent, repeated
wamids in one body under the backlog bound, one lease keeper for every sender."""

from __future__ import annotations

import asyncio

import pytest

from wa_agent.agents import AgentRequest
from wa_agent.asgi import Overloaded
from wa_agent.interface import WhatsAppInterface
from wa_agent.parser import MessageParser
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.stores.memory import MemorySessionStore
from wa_agent.testing import webhooks

PNID = "100000000000001"


def _interface(agent: object, **options: object) -> WhatsAppInterface:
    # Port 9 (discard) refuses: read receipts fail fast and are ignored; nothing is sent.
    sender = Sender("token", PNID, base_url="http://127.0.0.1:9", retry=RetryPolicy(
        scale=0.01))
    return WhatsAppInterface(agent, sender=sender, phone_number_id=PNID,
                             storage=MemorySessionStore(), shutdown_timeout=0.2,
                             **options)  # type: ignore[arg-type]


async def test_repeated_wamid_in_one_body_under_the_backlog_bound() -> None:
    """A body carrying the same message twice from a sender at its backlog bound records the
    first copy and answers 503 for the rest (no internal error); the agent gets the message
    as parsed from the webhook."""
    seen: list[AgentRequest] = []
    release = asyncio.Event()

    async def agent(request: AgentRequest) -> str:
        seen.append(request)
        await release.wait()
        return "ok"

    item = webhooks.text_message("15550001111", "hello there")
    body = webhooks.encode(webhooks.envelope(messages=[item, item], phone_number_id=PNID))
    events = MessageParser().parse(body)
    interface = _interface(agent, max_pending_per_sender=1)
    async with interface:
        with pytest.raises(Overloaded):
            await interface.accept(events)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert interface.stats.received == 1
        assert [r.message.id for r in seen if r.message] == [item["id"]]
        assert seen[0].text == "hello there"
        release.set()


async def test_one_lease_keeper_for_many_senders() -> None:
    """While many senders' agents run, the interface holds one lease per sender but runs a
    single lease-renewal task (not one per sender)."""
    release = asyncio.Event()
    started = 0

    async def agent(request: AgentRequest) -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "ok"

    parser = MessageParser()
    interface = _interface(agent)
    async with interface:
        for n in range(20):
            item = webhooks.text_message(f"1555000{n:04d}", f"m{n}")
            body = webhooks.encode(webhooks.envelope(messages=[item], phone_number_id=PNID))
            assert await interface.accept(parser.parse(body)) == "processing"
        for _ in range(300):
            if started == 20:
                break
            await asyncio.sleep(0.01)
        assert started == 20
        assert len(interface._held) == 20
        names = [t.get_name() for t in asyncio.all_tasks()]
        assert sum(name.endswith(":leases") for name in names) == 1
        assert not any(name.endswith((":lease", ":typing")) for name in names)
        release.set()
