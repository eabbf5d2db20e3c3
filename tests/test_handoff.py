"""Human handoff (issue 21): a person takes a conversation over from the agent and gives it
back, from Python (``interface.handoff/send/resume``), from the agent
(``AgentReply(handoff=True)``), from the user (``/human``) and by a timeout.

Everything runs through the simulator (a real server, signed webhooks, the Cloud API
emulator). Crashes and workers sharing Redis are in ``test_handoff_processes.py``; the
widget console in ``test_widget_console.py``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_turns import Recorder as TurnsRecorder
from wa_agent import (
    AgentReply,
    AgentRequest,
    ConfigurationError,
    Handoff,
    OutsideServiceWindow,
    Turn,
    WhatsAppInterface,
)
from wa_agent._llm_prompt import conversation
from wa_agent.testing import Simulator

ALICE = "15551230001"
BOB = "15551230002"


class Recorder(TurnsRecorder):
    """The turn tests' recording agent (``gate``, if set, blocks the first call); a text
    starting ``HUMAN`` asks for a person."""

    async def answer(self, request: AgentRequest) -> AgentReply:
        reply = await super().answer(request)
        if request.text.startswith("HUMAN"):
            return AgentReply(text="Let me get a colleague.", handoff=True)
        return reply


def roles(history: Any) -> list[tuple[str, str]]:
    return [(t.role, t.text) for t in history]


async def test_operator_takes_over_writes_and_hands_back_in_chat_mode() -> None:
    """CHAT: after ``handoff()`` the user's messages are acknowledged and recorded but the
    agent is not asked and nothing is sent; ``send()`` reaches the user and is recorded as
    an ``operator`` turn; after ``resume()`` the agent answers again and its request's
    history holds the whole handed-off exchange in order, each turn marked by role."""
    agent = Recorder()
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        assert (await alice.ask("hello")).text == "re: hello"
        handoff = await sim.interface.handoff(ALICE, note="refund question")
        assert isinstance(handoff, Handoff)
        assert (handoff.by, handoff.note, handoff.until) == ("operator", "refund question", None)
        assert await sim.interface.is_handed_off("+1 555 123 0001")
        await alice.send_text("I want my money back")
        await alice.send_image(b"\x89PNG fake", "image/png", caption="the receipt")
        await sim.settle()
        assert alice.take_replies() == []
        assert agent.texts() == ["hello"]
        wamids = await sim.interface.send(ALICE, "Hi, I am Sam. Refund done.")
        assert len(wamids) == 1
        assert (await alice.next_reply()).text == "Hi, I am Sam. Refund done."
        assert await sim.interface.resume(ALICE) is True
        assert await sim.interface.resume(ALICE) is False
        assert not await sim.interface.is_handed_off(ALICE)
        assert (await alice.ask("thanks")).text == "re: thanks"
    history = roles(agent.requests[-1].history)
    assert history == [
        ("user", "hello"),
        ("assistant", "re: hello"),
        ("user", "I want my money back"),
        ("user", "[image] the receipt"),
        ("operator", "Hi, I am Sam. Refund done."),
    ]


async def test_task_mode_resume_carries_the_handed_off_exchange_once() -> None:
    """TASK: the agent normally gets no history; the first request after a resume carries
    the handed-off exchange (user and operator turns), the one after it none again."""
    agent = Recorder()
    async with Simulator(agent, mode="task") as sim:
        alice = sim.user(ALICE)
        await sim.interface.handoff(ALICE)
        await alice.send_text("where is my parcel?")
        await sim.settle()
        await sim.interface.send(ALICE, "It ships today.")
        await alice.next_reply()
        await sim.interface.resume(ALICE)
        assert (await alice.ask("ok")).text == "re: ok"
        assert (await alice.ask("and now?")).text == "re: and now?"
    first, second = agent.requests
    assert roles(first.history) == [
        ("user", "where is my parcel?"),
        ("operator", "It ships today."),
    ]
    assert second.history == ()


async def test_the_agent_hands_over_after_its_reply() -> None:
    """``AgentReply(handoff=True)``: its text is sent, then the conversation is handed off
    (by ``"agent"``): the next message is recorded, not answered; listeners get the
    handoff event."""
    agent = Recorder()
    async with Simulator(agent, mode="chat") as sim:
        events = sim.operator.events
        alice = sim.user(ALICE)
        assert (await alice.ask("HUMAN please")).text == "Let me get a colleague."
        await sim.settle()
        handoffs = await sim.interface.handoffs()
        assert list(handoffs) == [ALICE]
        assert handoffs[ALICE].by == "agent"
        await alice.send_text("hello?")
        await sim.settle()
        assert alice.take_replies() == []
        assert agent.texts() == ["HUMAN please"]
        history = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert roles(history)[-1] == ("user", "hello?")
    assert [(e.kind, e.by) for e in events] == [("handoff", "agent")]


async def test_the_user_asks_for_a_person_with_the_handoff_command() -> None:
    """The ``handoff_command`` (``/human`` by default, any case) is answered with
    ``handoff_message`` without asking the agent, then the conversation is handed off
    (by ``"user"``); with ``handoff_command=None`` the agent gets ``/human`` as text."""
    agent = Recorder()
    async with Simulator(agent, mode="task", handoff_message="A person will write.") as sim:
        alice = sim.user(ALICE)
        assert (await alice.ask(" /HUMAN ")).text == "A person will write."
        await sim.settle()
        assert (await sim.interface.handoffs())[ALICE].by == "user"
        await alice.send_text("/human")  # already handed off: recorded, not answered
        await sim.settle()
        assert alice.take_replies() == []
    assert agent.requests == []
    off = Recorder()
    async with Simulator(off, mode="chat", handoff_command=None) as sim:
        assert (await sim.user(ALICE).ask("/human")).text == "re: /human"
        assert not await sim.interface.is_handed_off(ALICE)


async def test_an_unattended_handoff_times_out_and_tells_the_user() -> None:
    """``handoff_timeout``: once it runs out the agent answers again by itself, the user
    gets ``resume_message`` and listeners a ``resume`` event by ``"timeout"``."""
    agent = Recorder()
    async with Simulator(
        agent,
        mode="chat",
        handoff_timeout=timedelta(seconds=0.4),
        sweep_interval=0.1,
        resume_message="The bot is back.",
    ) as sim:
        events = sim.operator.events
        alice = sim.user(ALICE)
        await alice.send_text("hi")
        await alice.next_reply()
        handoff = await sim.interface.handoff(ALICE)
        assert handoff.until is not None
        assert abs((handoff.until - handoff.since).total_seconds() - 0.4) < 0.001
        assert (await alice.next_reply(timeout=5)).text == "The bot is back."
        assert not await sim.interface.is_handed_off(ALICE)
        assert (await alice.ask("still there?")).text == "re: still there?"
    assert [(e.kind, e.by) for e in events] == [("handoff", "operator"), ("resume", "timeout")]


async def test_a_message_after_the_timeout_is_answered_by_the_agent() -> None:
    """A message arriving after the handoff ran out (before the expirer's round) resumes
    the conversation first: the user gets ``resume_message`` once, then the agent's reply
    to that message."""
    agent = Recorder()
    async with Simulator(agent, mode="chat", handoff_timeout=0.2, sweep_interval=60) as sim:
        alice = sim.user(ALICE)
        await alice.ask("hi")
        await sim.interface.handoff(ALICE)
        await asyncio.sleep(0.3)
        await alice.send_text("hello?")
        await sim.settle()
        texts = [r.text for r in alice.take_replies()]
    assert texts == ["You are chatting with the assistant again.", "re: hello?"]


async def test_operator_messages_need_the_24_hour_window() -> None:
    """``send()`` to a contact who has not written in 24 hours raises OutsideServiceWindow
    (nothing is sent); with ``template=`` the template goes out instead (and the history
    records the template, not the text); ``send()`` with nothing to send is a
    ValueError."""
    async with Simulator(Recorder(), mode="chat") as sim:
        with pytest.raises(OutsideServiceWindow, match="24 hours"):
            await sim.interface.send(BOB, "hello")
        await sim.interface.store.touch_inbound(
            sim.interface.name, BOB, datetime.now(UTC) - timedelta(hours=25)
        )
        with pytest.raises(OutsideServiceWindow):
            await sim.interface.send(BOB, "hello")
        assert sim.emulator.sent_to(BOB) == []
        wamids = await sim.interface.send(
            BOB, "hello", template={"name": "follow_up", "language": "en_US"}
        )
        sent = sim.emulator.sent_to(BOB)
        assert [m.type for m in sent] == ["template"] and len(wamids) == 1
        history = await sim.interface.store.get_history(sim.interface.name, BOB)
        assert roles(history) == [("operator", "[template follow_up]")]
        with pytest.raises(ValueError, match="needs text"):
            await sim.interface.send(BOB, "  ")


async def test_operator_media_and_history(tmp_path: Path) -> None:
    """An operator message with a file (a Path built by code) is uploaded and sent after
    the text, and the history names it."""
    doc = tmp_path / "invoice.pdf"
    doc.write_bytes(b"%PDF-1.4 fake")
    async with Simulator(Recorder(), mode="chat") as sim:
        alice = sim.user(ALICE)
        await alice.ask("hi")
        await sim.interface.handoff(ALICE)
        await sim.interface.send(ALICE, "Here it is.", media=doc)
        first, second = await alice.next_reply(), await alice.next_reply()
        history = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert (first.type, first.text) == ("text", "Here it is.")
    assert (second.type, second.filename, second.data) == (
        "document",
        "invoice.pdf",
        b"%PDF-1.4 fake",
    )
    assert roles(history)[-1] == ("operator", "Here it is.\n[file: invoice.pdf]")


async def test_a_takeover_while_the_agent_runs_drops_its_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operator takes over while the agent is answering: the agent's reply is not
    sent (the operator answers), the user's message stays in the history, and the inbox is
    empty."""
    agent = Recorder()
    agent.gate = asyncio.Event()
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        await alice.send_text("tricky question")
        await asyncio.wait_for(agent.started.wait(), 5)
        await sim.interface.handoff(ALICE)
        with caplog.at_level(logging.INFO, logger="wa_agent.interface"):
            agent.gate.set()
            await sim.settle()
        assert alice.take_replies() == []
        assert await sim.interface.store.pending(sim.interface.name) == []
        history = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert roles(history) == [("user", "tricky question")]
    assert "a person took the conversation over" in caplog.text


async def test_handoffs_lists_only_active_ones_and_survive_a_restart(tmp_path: Path) -> None:
    """``handoffs()`` lists every handed-off contact (not resumed ones); on SQLite the
    state survives the interface's restart, and the user is still not answered."""
    db = tmp_path / "bot.db"
    agent = Recorder()
    async with Simulator(agent, mode="task", storage=db) as sim:
        await sim.interface.handoff(ALICE, note="vip")
        await sim.interface.handoff(BOB)
        await sim.interface.resume(BOB)
        assert list(await sim.interface.handoffs()) == [ALICE]
    again = Recorder()
    async with Simulator(again, mode="task", storage=db) as sim:
        handoffs = await sim.interface.handoffs()
        assert list(handoffs) == [ALICE] and handoffs[ALICE].note == "vip"
        await sim.user(ALICE).send_text("anyone?")
        await sim.settle()
        assert sim.users[ALICE].take_replies() == []
    assert again.requests == []


async def test_the_simulated_operator_drives_the_operator_side() -> None:
    """``sim.operator`` takes over, writes and hands back like a person at the console,
    and records the events (handoff, operator message, resume) in order."""
    async with Simulator(Recorder(), mode="chat") as sim:
        operator = sim.operator
        alice = sim.user(ALICE)
        await alice.ask("hi")
        await operator.take_over(alice, note="escalated")
        assert await operator.is_handed_off(alice)
        await operator.send(alice, "Sam here.")
        assert (await alice.next_reply()).text == "Sam here."
        assert list(await operator.handoffs()) == [ALICE]
        assert await operator.hand_back(ALICE)
    assert [(e.kind, e.by, e.note, e.text) for e in operator.events] == [
        ("handoff", "operator", "escalated", None),
        ("operator", None, None, "Sam here."),
        ("resume", "operator", None, None),
    ]


def test_handoff_settings_are_checked_at_construction() -> None:
    """A non-positive ``handoff_timeout`` and a handoff command equal to the reset command
    are refused when the interface is built."""
    with pytest.raises(ValueError, match="handoff_timeout"):
        WhatsAppInterface(Recorder(), handoff_timeout=0)
    with pytest.raises(ConfigurationError, match="cannot be the same"):
        WhatsAppInterface(Recorder(), handoff_command="/reset")


def test_operator_turns_reach_the_model_as_the_business_side_marked() -> None:
    """LLMAgent's conversation: an ``operator`` history turn is sent as an assistant
    message saying a human operator wrote it (the model speaks for the business)."""
    request = AgentRequest(
        text="thanks",
        sender=ALICE,
        history=(Turn(role="user", text="refund?"), Turn(role="operator", text="Done, Sam.")),
    )
    msgs = conversation(request, provider="openai", greeting=None, heartbeat_message="")
    assert [m.role for m in msgs] == ["user", "assistant", "user"]
    said = msgs[1].parts[0]
    assert "human operator" in said.text and said.text.endswith("Done, Sam.")  # type: ignore[union-attr]


async def test_a_damaged_handoff_record_does_not_stop_the_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A record in the store that cannot be read (not JSON, or missing fields) is ignored
    with a warning: the contact is answered by the agent and is not listed as handed
    off."""
    agent = Recorder()
    async with Simulator(agent, mode="chat") as sim:
        store, name = sim.interface.store, sim.interface.name
        await store.set_handoff(name, ALICE, "{not json")
        await store.set_handoff(name, BOB, '{"by": "operator"}')
        with caplog.at_level(logging.WARNING, logger="wa_agent.handoff"):
            assert (await sim.user(ALICE).ask("hello")).text == "re: hello"
            assert await sim.interface.handoffs() == {}
            assert not await sim.interface.is_handed_off(BOB)
    assert "handoff record of 155…01 cannot be read" in caplog.text


async def test_a_store_failure_when_handing_over_never_resends_the_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``AgentReply(handoff=True)``: the reply is out, then the store fails twice to record
    the handoff. The step is retried in place: the user gets the reply exactly once, the
    agent is asked once, and the conversation ends up handed off."""
    from wa_agent import MemorySessionStore, StoreError

    class Flaky(MemorySessionStore):
        failures = 2

        async def set_handoff(self, interface: str, contact: str, record: str | None) -> None:
            if self.failures:
                self.failures -= 1
                raise StoreError("injected: the store cannot write")
            await super().set_handoff(interface, contact, record)

    agent = Recorder()
    async with Simulator(agent, mode="chat", storage=Flaky()) as sim:
        alice = sim.user(ALICE)
        with caplog.at_level(logging.WARNING, logger="wa_agent.interface"):
            await alice.send_text("HUMAN now")
            await sim.settle()
        assert [r.text for r in alice.take_replies()] == ["Let me get a colleague."]
        assert await sim.interface.is_handed_off(ALICE)
    assert agent.texts() == ["HUMAN now"]
    assert caplog.text.count("the store could not hand it off (StoreError)") == 2


async def test_listeners_without_operator_get_operator_messages_as_outbound() -> None:
    """A conversation listener that has no ``operator()`` still sees the operator's
    messages, as ``outbound``; one that has it gets ``operator()`` and no ``outbound``."""
    from wa_agent.hosting.observers import QuietListener

    class Plain(QuietListener):
        def __init__(self) -> None:
            self.out: list[str] = []

        def outbound(self, to: str, text: str, **_: Any) -> None:
            self.out.append(text)

    class Console(Plain):
        def __init__(self) -> None:
            super().__init__()
            self.said: list[str] = []

        def operator(self, contact: str, text: str, wamid: str | None) -> None:
            self.said.append(text)

    plain, console = Plain(), Console()
    async with Simulator(Recorder(), mode="chat") as sim:
        sim.interface.listeners.extend([plain, console])
        await sim.user(ALICE).ask("hi")
        await sim.interface.send(ALICE, "Sam here.")
    assert plain.out == ["re: hi", "Sam here."]
    assert (console.out, console.said) == (["re: hi"], ["Sam here."])


async def test_the_handoff_command_is_a_turn_of_its_own_in_a_burst() -> None:
    """CHAT: ``/human`` sent right after other messages, while the agent answers the first,
    is not coalesced into the agent's next turn (like the reset command): the messages
    before it are answered by the agent, then ``/human`` gets the handoff message and the
    conversation is handed off; the agent never sees ``/human``."""
    agent = Recorder()
    agent.gate = asyncio.Event()
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        await alice.send_text("hi")
        await asyncio.wait_for(agent.started.wait(), 5)
        await alice.send_text("my order is late")
        await alice.send_text("/human")
        agent.gate.set()
        await sim.settle()
        texts = [r.text for r in alice.take_replies()]
        assert await sim.interface.is_handed_off(ALICE)
    assert agent.texts() == ["hi", "my order is late"]
    assert texts == [
        "re: hi",
        "re: my order is late",
        "I have asked a person to take over. They will answer you here.",
    ]


async def test_task_mode_keeps_the_carried_exchange_until_the_next_handoff() -> None:
    """TASK: after the first request has carried the handed-off exchange, the history still
    holds it (a message recorded for the operator while the resume happened is never
    erased unseen); the next handoff starts it afresh, so its resume carries only the new
    exchange."""
    agent = Recorder()
    async with Simulator(agent, mode="task") as sim:
        alice, name = sim.user(ALICE), sim.interface.name
        await sim.interface.handoff(ALICE)
        await alice.send_text("first problem")
        await sim.settle()
        await sim.interface.resume(ALICE)
        await alice.ask("ok")
        kept = await sim.interface.store.get_history(name, ALICE)
        await sim.interface.handoff(ALICE)
        await alice.send_text("second problem")
        await sim.settle()
        await sim.interface.resume(ALICE)
        await alice.ask("ok again")
    assert roles(kept) == [("user", "first problem")]
    assert [roles(r.history) for r in agent.requests] == [
        [("user", "first problem")],
        [("user", "second problem")],
    ]
