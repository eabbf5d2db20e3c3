"""The ack path's shortcuts keep behaviour: the parsed message reaches the agent, repeated
wamids in one body under the backlog bound, one lease keeper for every sender, one lease
round per drain."""

from __future__ import annotations

import asyncio
from typing import Any

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
    sender = Sender("token", PNID, base_url="http://127.0.0.1:9", retry=RetryPolicy(scale=0.01))
    options.setdefault("storage", MemorySessionStore())
    return WhatsAppInterface(
        agent, sender=sender, phone_number_id=PNID, shutdown_timeout=0.2, **options
    )  # type: ignore[arg-type]


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
    single lease-renewal task and a single typing keeper (not one task per sender)."""
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
        assert len(interface._scheduler.held) == 20
        names = [t.get_name() for t in asyncio.all_tasks()]
        assert sum(name.endswith(":leases") for name in names) == 1
        assert sum(name.endswith(":typing-keeper") for name in names) == 1
        assert not any(name.endswith((":lease", ":typing")) for name in names)
        release.set()


async def test_typing_indicator_renewed_while_the_agent_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one typing keeper renews the typing indicator of a long-running agent every
    ``TYPING_REFRESH`` seconds, and stops (task gone) once no agent runs."""
    import wa_agent.hosting.runner as module

    monkeypatch.setattr(module, "TYPING_REFRESH", 0.05)
    monkeypatch.setattr(module, "TYPING_TICK", 0.01)
    reads: list[tuple[str, bool]] = []
    done = asyncio.Event()

    async def agent(request: AgentRequest) -> str:
        await asyncio.sleep(0.3)
        done.set()
        return "ok"

    interface = _interface(agent)
    async with interface:
        assert interface.sender is not None

        async def mark_read(message_id: str, *, typing: bool = False) -> None:
            reads.append((message_id, typing))

        monkeypatch.setattr(interface.sender, "mark_read", mark_read)
        item = webhooks.text_message("15550001111", "slow one")
        body = webhooks.encode(webhooks.envelope(messages=[item], phone_number_id=PNID))
        assert await interface.accept_body(body) == "processing"
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.1)  # the keeper notices that no agent runs any more
        renewals = [r for r in reads if r == (item["id"], True)]
        assert len(renewals) >= 3  # the first one, then renewals every 0.05 s for 0.3 s
        assert interface._typing.task is None and not interface._typing.active


# -- the fast path for one-text-message bodies -------------------------------------------
def _parsed_lone_text(body: bytes) -> tuple[str, str, str | None] | None:
    """What the full parser says the fast path may answer: the one text message and nothing
    else, or None."""
    from wa_agent.events import Message
    from wa_agent.exceptions import InvalidPayload

    try:
        events = MessageParser().parse(body)
    except InvalidPayload:
        return None
    if len(events) != 1 or not isinstance(events[0], Message) or events[0].type != "text":
        return None
    return events[0].id, events[0].sender, events[0].phone_number_id


def _variants() -> list[bytes]:
    base = webhooks.envelope(
        messages=[webhooks.text_message("15550001111", "hi")], phone_number_id=PNID
    )
    body = webhooks.encode(base)
    status = webhooks.envelope(
        statuses=[webhooks.status_item("wamid.X", "read", "1555")], phone_number_id=PNID
    )
    two = webhooks.envelope(
        messages=[
            webhooks.text_message("15550001111", "a"),
            webhooks.text_message("15550001111", "b"),
        ],
        phone_number_id=PNID,
    )
    image = webhooks.envelope(
        messages=[webhooks.media_message("15550001111", "image", "MEDIA1", "image/jpeg")],
        phone_number_id=PNID,
    )
    return [
        body,
        body.replace(b"{", b"{ ").replace(b",", b" ,\n"),  # whitespace: still the same JSON
        body.replace(b'"hi"', b'"h\\u00e9 \\ud83d\\ude00"'),  # escapes and a surrogate pair
        body.replace(b'"hi"', b'"cut \\ud83d"'),  # a lone surrogate
        body.replace(b'"hi"', b'"' + "é".encode("latin-1") + b'"'),  # not UTF-8
        body.replace(b'"hi"', b"[" * 70 + b"]" * 70),  # too deep
        body.replace(b'"hi"', b'"hi", "n": ' + b"9" * 5000),  # a number json refuses
        body.replace(b'"hi"', b"NaN"),
        body.replace(b'"text","text"', b'"text","x":1,"text"'),
        body.replace(b'"timestamp":"', b'"timestamp":"x'),
        body.replace(b'"from":"15550001111"', b'"from":""'),
        body.replace(b'"from":"15550001111"', b'"from":15550001111'),
        body.replace(b'"id":"wamid.', b'"id":"', 1),
        body.replace(b'"field":"messages"', b'"field":"statuses"'),
        body.replace(b'"object":"whatsapp_business_account"', b'"object":"page"'),
        body[:-3],  # truncated
        webhooks.encode(status),
        webhooks.encode(two),
        webhooks.encode(image),
        webhooks.encode({**base, "entry": base["entry"] * 2}),
        b"[]",
        b"",
    ]


@pytest.mark.parametrize("index", range(len(_variants())))
def test_fast_path_agrees_with_the_full_parser(index: int) -> None:
    """The fast path answers only for bodies the full parser reads as exactly one valid
    text message (and then with the same wamid, sender and phone number id); for every
    other body — whitespace aside — it declines, so the full parse decides."""
    from wa_agent.hosting.payload import lone_text_message

    body = _variants()[index]
    fast = lone_text_message(body, MessageParser().max_depth)
    if fast is not None:
        assert fast == _parsed_lone_text(body)
    if index == 0:
        assert fast is not None  # the common body does take the fast path


def test_fast_path_agrees_on_every_sample_payload() -> None:
    """Over every sample payload of the test suite: whenever the fast path answers, the
    full parser reads the body as that one text message."""
    from tests.helpers import PAYLOADS
    from wa_agent.hosting.payload import lone_text_message

    taken = 0
    for path in sorted(PAYLOADS.glob("*.json")):
        body = path.read_bytes()
        fast = lone_text_message(body, MessageParser().max_depth)
        if fast is not None:
            taken += 1
            assert fast == _parsed_lone_text(body), body[:200]
    assert taken >= 1


async def test_fast_path_records_the_body_and_the_agent_gets_the_message() -> None:
    """A one-text-message body goes through ``accept_body``: it is recorded with the body as
    its payload, a duplicate answers ``ignored``, and the agent gets the parsed message
    (sender, text, profile name) read back from the stored body."""
    seen: list[AgentRequest] = []

    async def agent(request: AgentRequest) -> str:
        seen.append(request)
        return "ok"

    store = MemorySessionStore()
    item = webhooks.text_message("15550001111", "hello fast")
    body = webhooks.encode(
        webhooks.envelope(messages=[item], phone_number_id=PNID, profiles={"15550001111": "Ada"})
    )
    release = asyncio.Event()

    async def slow_agent(request: AgentRequest) -> str:
        await release.wait()
        return await agent(request)

    interface = _interface(slow_agent, storage=store)
    async with interface:
        assert await interface.accept_body(body) == "processing"
        stored = await store.pending(interface.name)
        assert [s.payload for s in stored] == [body.decode()]
        assert await interface.accept_body(body) == "ignored"
        assert interface.stats.duplicates == 1
        release.set()
        for _ in range(300):
            if seen:
                break
            await asyncio.sleep(0.01)
    assert len(seen) == 1
    message = seen[0].message
    assert message is not None
    assert (message.id, message.sender, message.text, message.profile_name) == (
        item["id"],
        "15550001111",
        "hello fast",
        "Ada",
    )


async def test_fast_path_declines_what_the_full_path_must_decide() -> None:
    """``accept_body`` does nothing and answers None for a stranger (the refusal is the full
    path's), a listener attached (it wants the event), another number, and a status body."""

    async def agent(request: AgentRequest) -> str:
        return "ok"

    def text_from(sender: str, pnid: str = PNID) -> bytes:
        return webhooks.encode(
            webhooks.envelope(messages=[webhooks.text_message(sender, "hi")], phone_number_id=pnid)
        )

    interface = _interface(agent, allowed_numbers=["15550001111"])
    async with interface:
        assert await interface.accept_body(text_from("15559999999")) is None
        assert await interface.accept_body(text_from("15550001111", "999")) is None
        status = webhooks.envelope(
            statuses=[webhooks.status_item("wamid.X", "read", "1555")], phone_number_id=PNID
        )
        assert await interface.accept_body(webhooks.encode(status)) is None
        interface.listeners.append(object())  # type: ignore[arg-type]
        assert await interface.accept_body(text_from("15550001111")) is None
        interface.listeners.clear()
        assert interface.stats.received == 0
        assert await interface.store.pending(interface.name) == []
        assert await interface.accept_body(text_from("15550001111")) == "processing"


# -- receivers and workers ---------------------------------------------------------------
async def test_a_receiver_only_records_and_a_worker_on_the_same_store_answers(
    tmp_path: object,
) -> None:
    """``receive_only=True``: the receiver acknowledges and records every message (never
    running the agent, no backlog counting) and a worker interface on the same store,
    started without a server, answers them all, each exactly once and in order per user."""
    from pathlib import Path

    from wa_agent.manager import InterfaceManager
    from wa_agent.stores.sqlite import SQLiteSessionStore
    from wa_agent.testing.simulator import Simulator

    assert isinstance(tmp_path, Path)
    ran_in: list[str] = []

    def agent_for(role: str) -> object:
        async def agent(request: AgentRequest) -> str:
            ran_in.append(role)
            return f"echo {request.text}"

        return agent

    db = tmp_path / "shared.db"
    receiver = WhatsAppInterface(
        agent_for("receiver"),
        storage=SQLiteSessionStore(db),
        receive_only=True,
        max_pending_per_sender=1,
    )
    async with Simulator(InterfaceManager([receiver])) as sim:
        assert sim._emulator_server is not None
        worker_sender = Sender(
            sim.access_token, sim.phone_number_id, base_url=sim._emulator_server.url
        )
        worker = WhatsAppInterface(
            agent_for("worker"),
            storage=SQLiteSessionStore(db),
            sender=worker_sender,
            phone_number_id=sim.phone_number_id,
            sweep_interval=0.05,
        )
        alice, bob = sim.user("15551230001"), sim.user("15551230002")
        for n in range(3):  # three each: over max_pending_per_sender, no 503 here
            await alice.send_text(f"a{n}")
            await bob.send_text(f"b{n}")
        assert receiver.stats.received == 6 and receiver.stats.overloaded == 0
        assert not receiver._scheduler.drains and not receiver._scheduler.starting and ran_in == []
        async with worker:
            for _ in range(500):
                if len(sim.emulator.messages) >= 6:
                    break
                await asyncio.sleep(0.01)
            await worker.drain(5)
        await worker_sender.aclose()
        assert sim.emulator.texts_to("15551230001") == ["echo a0", "echo a1", "echo a2"]
        assert sim.emulator.texts_to("15551230002") == ["echo b0", "echo b1", "echo b2"]
        assert ran_in == ["worker"] * 6
        assert await receiver.store.pending(receiver.name) == []


class _CountingStore(MemorySessionStore):
    """Counts the sender-lease acquisitions and inbox reads (the drain's store round trips)."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired: list[str] = []
        self.reads = 0

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        if name.startswith("sender:"):
            self.acquired.append(name)
        return await super().acquire_lease(name, owner, ttl)

    async def pending(self, interface: str, sender: str | None = None) -> list[Any]:
        self.reads += sender is not None
        return await super().pending(interface, sender)


async def test_one_lease_round_per_drain_follow_ups_included() -> None:
    """A drain holds the sender's lease until the inbox has nothing more for the sender:
    one message costs one lease acquisition and two inbox reads (the second finds it
    empty), not a second lease round; a follow-up recorded while the agent runs is handed
    to the running drain without another inbox read and answered after the first."""
    from wa_agent.testing import Simulator

    store = _CountingStore()
    answered: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def agent(request: AgentRequest) -> str:
        answered.append(request.text)
        started.set()
        if request.text == "first":
            await release.wait()
        return f"re: {request.text}"

    async with Simulator(agent, storage=store) as sim:
        user = sim.user("15550002222")
        assert (await user.ask("alone")).text == "re: alone"
        await sim.settle()
        assert answered == ["alone"]
        assert (len(store.acquired), store.reads) == (1, 2)

        store.acquired.clear()
        store.reads = 0
        started.clear()
        await user.send_text("first")
        await asyncio.wait_for(started.wait(), 5)
        await user.send_text("second")  # recorded while the agent answers "first"
        release.set()
        await sim.settle()
        assert answered == ["alone", "first", "second"]
        assert [r.text for r in user.take_replies()] == ["re: first", "re: second"]
        assert len(store.acquired) == 1 and store.reads == 2
