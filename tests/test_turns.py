"""How messages become turns (SPEC §2 "Conversations", §4): CHAT turns coalesce what a
contact sent while their previous turn ran (or within ``debounce``), the reset command is a
turn of its own, ``interrupt=True`` restarts a running turn with everything pending, and
TASK turns of one contact run at once while their replies keep the messages' order.

Everything runs through the simulator (a real server, signed webhooks, the Cloud API
emulator). Crashes mid-turn and workers sharing Redis are in ``test_delivery.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from wa_agent import ConfigurationError, LLMAgent, WhatsAppInterface
from wa_agent.agents import AgentReply, AgentRequest
from wa_agent.hosting.turns import ReplyOrder, next_chat_turn
from wa_agent.server import BackgroundServer
from wa_agent.stores.base import make_item
from wa_agent.testing.simulator import Simulator

ALICE = "15551230001"


class Recorder:
    """An agent recording every request; ``gate`` (if set) blocks the first call."""

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        self.started.set()
        if self.gate is not None and len(self.requests) == 1:
            await self.gate.wait()
        return AgentReply(text=f"re: {request.text}")

    def texts(self) -> list[str]:
        return [r.text for r in self.requests]


async def test_task_replies_keep_arrival_order_under_random_agent_delays() -> None:
    """TASK: 12 contacts x 6 quick messages with agents of random duration (later messages
    often finish first): every message is answered exactly once, each contact's replies
    arrive in the order the messages were sent, and a contact's agents did overlap."""
    rng = random.Random(11)
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def agent(request: AgentRequest) -> str:
        running[request.sender] = running.get(request.sender, 0) + 1
        peak[request.sender] = max(peak.get(request.sender, 0), running[request.sender])
        try:
            await asyncio.sleep(rng.uniform(0.0, 0.08))
        finally:
            running[request.sender] -= 1
        return f"re: {request.text}"

    contacts = [f"1555810{n:04d}" for n in range(12)]
    async with Simulator(agent, mode="task") as sim:
        users = [sim.user(c) for c in contacts]

        async def burst(user: Any) -> None:
            for n in range(6):
                await user.send_text(f"{user.number}-{n}")

        await asyncio.gather(*(burst(u) for u in users))
        await sim.settle(timeout=30)
        for user in users:
            texts = [r.text for r in user.take_replies()]
            assert texts == [f"re: {user.number}-{n}" for n in range(6)]
    assert max(peak.values()) > 1


async def test_chat_debounce_answers_a_burst_in_one_turn() -> None:
    """CHAT with ``debounce``: the first message of a burst waits for the user to stop
    typing, so three quick messages get one agent run and one reply that quotes nothing."""
    agent = Recorder()
    async with Simulator(agent, mode="chat", debounce=1.0) as sim:
        alice = sim.user(ALICE)
        sent = [await alice.send_text(t) for t in ("hi", "I have a question", "about my order")]
        await sim.settle()
        replies = alice.take_replies()
    assert agent.texts() == ["hi\nI have a question\nabout my order"]
    assert [m.id for m in agent.requests[0].messages] == sent
    assert [r.text for r in replies] == ["re: hi\nI have a question\nabout my order"]
    assert replies[0].reply_to is None


async def test_chat_reset_in_a_burst_is_a_turn_of_its_own() -> None:
    """CHAT: ``a, b, /reset, c`` arriving while a turn runs are answered as ``a+b``, then
    the reset (history cleared, confirmation), then ``c`` with an empty history."""
    agent = Recorder()
    agent.gate = asyncio.Event()
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        await alice.send_text("hold")
        await asyncio.wait_for(agent.started.wait(), 5)
        for text in ("a", "b", "/reset", "c"):
            await alice.send_text(text)
        agent.gate.set()
        await sim.settle()
        replies = [r.text for r in alice.take_replies()]
        history = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert agent.texts() == ["hold", "a\nb", "c"]
    assert replies == ["re: hold", "re: a\nb", sim.interface.settings.reset_message, "re: c"]
    assert agent.requests[2].history == ()
    assert [t.text for t in history] == ["c", "re: c"]


async def test_interrupt_restarts_the_running_turn_with_everything_pending() -> None:
    """CHAT with ``interrupt=True``: a message arriving while the agent answers the first
    cancels that run (nothing of it is sent) and one turn answers both; the history has
    both user messages and one reply."""
    agent = Recorder()
    agent.gate = asyncio.Event()  # the first run never finishes by itself
    async with Simulator(agent, mode="chat", interrupt=True) as sim:
        alice = sim.user(ALICE)
        first = await alice.send_text("first")
        await asyncio.wait_for(agent.started.wait(), 5)
        second = await alice.send_text("second")
        await sim.settle()
        replies = alice.take_replies()
        history = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert agent.texts() == ["first", "first\nsecond"]
    assert [r.text for r in replies] == ["re: first\nsecond"]
    assert [(t.role, t.message_id) for t in history] == [
        ("user", first),
        ("user", second),
        ("assistant", None),
    ]


def test_interrupt_is_a_chat_option() -> None:
    """``interrupt=True`` in TASK mode (where every message is answered on its own) is a
    configuration error naming the fix."""
    with pytest.raises(ConfigurationError, match="mode='chat'"):
        WhatsAppInterface(lambda r: "x", interrupt=True, access_token="t", phone_number_id="1")
    with pytest.raises(ValueError, match="debounce"):
        WhatsAppInterface(lambda r: "x", debounce=-1, access_token="t", phone_number_id="1")


class SlowModel:
    """An OpenAI-compatible chat completions endpoint: the first request hangs until the
    client goes away (and is counted as abandoned), later ones answer at once."""

    def __init__(self) -> None:
        self.requests = 0
        self.abandoned = 0
        self.open = 0
        self.first = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        if self.requests == 1:
            self.open += 1
            self.first.set()
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.abandoned += 1
            finally:
                self.open -= 1
            return
        prompt = json.loads(body)["messages"][-1]["content"]
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        answer = {
            "id": "c",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"model: {text}"},
                }
            ],
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


async def test_interrupt_cancels_the_llm_request_cleanly() -> None:
    """An interrupted LLMAgent turn abandons its model request (the server sees the client
    go away, nothing stays open) and sends nothing; the restarted turn's answer is the
    only reply."""
    model = SlowModel()
    async with BackgroundServer(model) as server:
        llm = LLMAgent("openai-compatible/m", base_url=server.url + "/v1")
        async with llm, Simulator(llm, mode="chat", interrupt=True) as sim:
            alice = sim.user(ALICE)
            await alice.send_text("first")
            await asyncio.wait_for(model.first.wait(), 5)
            await alice.send_text("second")
            await sim.settle()
            replies = [r.text for r in alice.take_replies()]
            for _ in range(200):
                if model.abandoned:
                    break
                await asyncio.sleep(0.01)
    assert model.requests == 2 and model.abandoned == 1 and model.open == 0
    assert len(replies) == 1 and "second" in (replies[0] or "")


def test_next_chat_turn_resumes_a_prepared_turn_as_it_was() -> None:
    """A turn whose reply was prepared before a crash (progress with parts, saved on its
    anchor, naming the ids it covers) comes back with exactly those items, even when more
    arrived meanwhile; without progress, the turn is the run of items up to a reset."""
    progress = json.dumps(
        {"parts": [{"type": "text", "text": "x"}], "sent": 0, "covers": ["w1", "w2"]}
    )
    items = [
        make_item("w1", ALICE, "{}", 1.0),
        make_item("w2", ALICE, "{}", 2.0, progress=progress),
        make_item("w3", ALICE, "{}", 3.0),
    ]
    texts = {"w1": "a", "w2": "b", "w3": "/reset", "w4": "d"}

    class Msg:
        def __init__(self, wamid: str) -> None:
            self.id, self.text = wamid, texts[wamid]

    def load(item: Any) -> Any:
        return Msg(item.id)

    def is_reset(message: Any) -> bool:
        return bool(message.text == "/reset")

    turn = next_chat_turn(items, load, is_reset, 50)
    assert turn.ids == ["w1", "w2"] and turn.progress["covers"] == ["w1", "w2"]
    fresh = [make_item(w, ALICE, "{}", n) for n, w in enumerate(["w1", "w2", "w3", "w4"])]
    assert next_chat_turn(fresh, load, is_reset, 50).ids == ["w1", "w2"]
    assert next_chat_turn(fresh[2:], load, is_reset, 50).ids == ["w3"]
    assert next_chat_turn(fresh, load, is_reset, 1).ids == ["w1"]


async def test_reply_order_passes_on_a_blocked_reply() -> None:
    """A reply waits for the one before it; when that one is blocked (its send will be
    retried later), the later one learns the delay instead of overtaking it."""
    first = ReplyOrder(None)
    second = ReplyOrder(first)
    third = ReplyOrder(second)
    assert await first.wait() is None
    waiting = asyncio.ensure_future(second.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    first.done(blocked=4.0)
    assert await waiting == 4.0
    second.done(4.0)
    assert await third.wait() == 4.0
