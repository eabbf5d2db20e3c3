"""The model chooses, end to end: an LLMAgent hosted by a real WhatsAppInterface (Simulator:
uvicorn, signed webhooks, the Cloud API emulator) talks to a fake model API on 127.0.0.1
(tests/test_llm.py's FakeAPI) answering with the providers' real tool-call shapes (Anthropic
``tool_use`` blocks, OpenAI ``tool_calls`` with JSON-string arguments). The model's
``offer_choices`` call reaches the user as one interactive message, the user's tap reaches
the model's next request, and a call with bad arguments still ends in a text reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.test_llm import ANTHROPIC_KEY, OPENAI_KEY, FakeAPI, anthropic_message, openai_completion
from tests.test_llm_tools import anthropic_tool_use, openai_tool_calls
from wa_agent import LLMAgent
from wa_agent.server import BackgroundServer
from wa_agent.testing import Simulator

USER = "15551230001"
PROVIDERS = ["anthropic/claude-sonnet-4-6", "openai/gpt-4o-mini"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def _server() -> AsyncIterator[FakeAPI]:
    fake = FakeAPI()
    async with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
def llm(_server: FakeAPI) -> FakeAPI:
    """The fake model API with an empty script and no recorded requests."""
    _server.script.clear()
    _server.requests.clear()
    return _server


async def no_sleep(seconds: float) -> None:
    pass


def agent(llm: FakeAPI, model: str) -> LLMAgent:
    anthropic = model.startswith("anthropic/")
    return LLMAgent(
        model,
        base_url=llm.url if anthropic else llm.url + "/v1",
        api_key=ANTHROPIC_KEY if anthropic else OPENAI_KEY,
        sleep=no_sleep,
    )


def offer_choices(model: str, choices: list[str]) -> dict[str, Any]:
    """The model's answer calling offer_choices, in the provider's shape."""
    if model.startswith("anthropic/"):
        return anthropic_tool_use(("offer_choices", {"choices": choices}))
    return openai_tool_calls(("offer_choices", json.dumps({"choices": choices})))


def final(model: str, text: str) -> dict[str, Any]:
    """The model's final text answer, in the provider's shape."""
    return anthropic_message(text) if model.startswith("anthropic/") else openai_completion(text)


def text_of(message: dict[str, Any]) -> str:
    """The text of a chat message as sent to either API (a string or text blocks)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(b["text"] for b in content if b.get("type") == "text")


@pytest.mark.parametrize("model", PROVIDERS)
async def test_the_model_offers_buttons_and_hears_the_tap(llm: FakeAPI, model: str) -> None:
    """The model calls offer_choices, then writes its question: the user gets ONE
    interactive message (the question as body, the choices as reply buttons). The user taps
    "Tomorrow": the model's next request ends with the user's "Tomorrow", after the history
    of the question with its choices, and its answer reaches the user."""
    llm.reply(200, offer_choices(model, ["Tonight", "Tomorrow"]))
    llm.reply(200, final(model, "When would you like to come?"))
    llm.reply(200, final(model, "Tomorrow it is: table for two at 8."))
    async with agent(llm, model) as bot, Simulator(bot, mode="chat") as sim:
        user = sim.user(USER, "Ada")
        offer = await user.ask("Can I book a table?")
        await sim.settle()
        assert len(sim.emulator.messages) == 1
        await user.tap("Tomorrow")
        answer = await user.next_reply()
        await sim.settle()
    assert offer.raw == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "When would you like to come?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "Tonight", "title": "Tonight"}},
                    {"type": "reply", "reply": {"id": "Tomorrow", "title": "Tomorrow"}},
                ]
            },
        },
    }
    assert answer.text == "Tomorrow it is: table for two at 8." and answer.type == "text"
    assert len(llm.requests) == 3
    messages = [m for m in llm.requests[2].body["messages"] if m["role"] != "system"]
    assert [(m["role"], text_of(m)) for m in messages] == [
        ("user", "Can I book a table?"),
        ("assistant", "When would you like to come?\n[choices: Tonight | Tomorrow]"),
        ("user", "Tomorrow"),
    ]


@pytest.mark.parametrize("model", PROVIDERS)
async def test_a_tool_call_with_bad_arguments_still_gets_a_text_reply(
    llm: FakeAPI, model: str
) -> None:
    """The model calls offer_choices with arguments WhatsApp cannot take (eleven choices;
    for OpenAI also arguments that are not JSON): the call is answered with an error result,
    the model writes text, and the user gets exactly that text, no interactive message."""
    eleven = [f"Slot {n}" for n in range(11)]
    if model.startswith("anthropic/"):
        llm.reply(200, anthropic_tool_use(("offer_choices", {"choices": eleven})))
    else:
        llm.reply(
            200,
            openai_tool_calls(
                ("offer_choices", '{"choices": ["Slot 0", "Slo'),
                ("offer_choices", json.dumps({"choices": eleven})),
            ),
        )
    llm.reply(200, final(model, "Which time suits you? Just type it."))
    async with agent(llm, model) as bot, Simulator(bot, mode="chat") as sim:
        reply = await sim.user(USER).ask("When can I come?")
        await sim.settle()
    assert [m.body for m in sim.emulator.messages] == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": USER,
            "type": "text",
            "text": {"body": "Which time suits you? Just type it."},
        }
    ]
    assert reply.buttons == ()
    second = llm.requests[1].body["messages"]
    if model.startswith("anthropic/"):
        [result] = second[-1]["content"]
        assert result["is_error"] is True and "11 choices" in result["content"]
    else:
        bad_json, too_many = second[-2:]
        assert bad_json["role"] == too_many["role"] == "tool"
        assert bad_json["content"].startswith("Error: the arguments are not valid JSON")
        assert "11 choices" in too_many["content"]


async def test_the_model_reacts_and_sends_a_location(llm: FakeAPI) -> None:
    """The model's react and send_location calls become a reaction on the user's message
    and a map pin, sent with its text."""
    model = PROVIDERS[0]
    llm.reply(
        200,
        anthropic_tool_use(
            ("react", {"emoji": "☕"}),
            ("send_location", {"latitude": 38.7139, "longitude": -9.1394, "name": "Café Nicola"}),
        ),
    )
    llm.reply(200, final(model, "Here we are, see you soon!"))
    async with agent(llm, model) as bot, Simulator(bot, mode="chat") as sim:
        user = sim.user(USER)
        wamid = await user.send_text("Where is the café?")
        await sim.settle()
    reaction, text, pin = sim.emulator.messages
    assert reaction.body["reaction"] == {"message_id": wamid, "emoji": "☕"}
    assert text.text == "Here we are, see you soon!"
    assert pin.body["location"] == {
        "latitude": 38.7139,
        "longitude": -9.1394,
        "name": "Café Nicola",
    }
