"""LLMAgent's WhatsApp tools (offer_choices, react, send_location) through real tool-call
response shapes: Anthropic ``tool_use`` content blocks with ``stop_reason: "tool_use"``, OpenAI
``tool_calls`` with JSON-string arguments and ``finish_reason: "tool_calls"``. The fake API
of test_llm.py answers from a script and records every request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.test_llm import ANTHROPIC_KEY, OPENAI_KEY, FakeAPI, anthropic_message, openai_completion
from wa_agent import AgentReply, AgentRequest, LLMAgent, LLMError, Location, Message
from wa_agent.parser import MessageParser
from wa_agent.server import BackgroundServer
from wa_agent.testing import webhooks

USER = "15551234567"
MakeAgent = Callable[..., LLMAgent]


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
    """The fake model API (test_llm.py's), with an empty script and no requests."""
    _server.script.clear()
    _server.requests.clear()
    return _server


@pytest.fixture
async def agents(llm: FakeAPI) -> AsyncIterator[MakeAgent]:
    """Factory of LLMAgents pointed at the fake API; all closed at teardown."""
    made: list[LLMAgent] = []

    async def no_sleep(seconds: float) -> None:
        pass

    def factory(model: str = "anthropic/claude-sonnet-4-6", **kw: Any) -> LLMAgent:
        kw.setdefault("base_url", llm.url if model.startswith("anthropic/") else llm.url + "/v1")
        if not model.startswith("openai-compatible/"):
            kw.setdefault(
                "api_key", ANTHROPIC_KEY if model.startswith("anthropic/") else OPENAI_KEY
            )
        kw.setdefault("sleep", no_sleep)
        made.append(LLMAgent(model, **kw))
        return made[-1]

    yield factory
    for agent in made:
        await agent.aclose()


def anthropic_tool_use(*calls: tuple[str, Any], text: str | None = None) -> dict[str, Any]:
    """A Messages API answer that calls tools: optional text, then tool_use blocks."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for n, (name, args) in enumerate(calls):
        content.append(
            {"type": "tool_use", "id": f"toolu_01A09q90qw90lq91783{n}", "name": name, "input": args}
        )
    return {
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": content,
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 91},
    }


def openai_tool_calls(*calls: tuple[str, str], content: str | None = None) -> dict[str, Any]:
    """A Chat Completions answer that calls tools (arguments are JSON *strings*)."""
    body = openai_completion(content, finish_reason="tool_calls")
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": f"call_Dn2RJJSxzDm49vlVTehseJ0{n}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        for n, (name, arguments) in enumerate(calls)
    ]
    return body


def request(text: str = "Do you have coffee?") -> AgentRequest:
    """A request answering a real user message (so react is offered)."""
    [message] = MessageParser().parse(
        webhooks.envelope(messages=[webhooks.text_message(USER, text)])
    )
    assert isinstance(message, Message)
    return AgentRequest(text=text, sender=USER, message=message)


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t.get("name") or t["function"]["name"] for t in body.get("tools", [])]


# ------------------------------------------------------------------ Anthropic


async def test_anthropic_offer_choices_round_trip(llm: FakeAPI, agents: MakeAgent) -> None:
    """The tools go out in the Messages API shape; a tool_use call is answered with a
    tool_result for its id after the assistant's blocks, and the final text comes back with
    the choices as buttons."""
    call = anthropic_tool_use(
        ("offer_choices", {"choices": ["Espresso", "Latte", "Tea"]}), text="Let me show the menu."
    )
    llm.reply(200, call)
    llm.reply(200, anthropic_message("What would you like?"))
    reply = await agents().answer(request())
    assert reply == AgentReply(text="What would you like?", buttons=["Espresso", "Latte", "Tea"])
    first, second = (r.body for r in llm.requests)
    assert tool_names(first) == ["offer_choices", "react", "send_location"]
    offer = first["tools"][0]
    assert offer["input_schema"]["required"] == ["choices"]
    assert offer["input_schema"]["properties"]["choices"]["maxItems"] == 10
    assert "tool_choice" not in first
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": call["content"]}
    [result] = second["messages"][-1]["content"]
    assert second["messages"][-1]["role"] == "user"
    assert result["type"] == "tool_result" and result["tool_use_id"] == call["content"][1]["id"]
    assert result["content"].startswith("Done: the user will see buttons")
    assert "is_error" not in result


async def test_anthropic_parallel_react_and_location(llm: FakeAPI, agents: MakeAgent) -> None:
    """Two tool_use blocks in one answer each get a tool_result; the reply carries the
    reaction and the location."""
    llm.reply(
        200,
        anthropic_tool_use(
            ("react", {"emoji": "☕"}),
            ("send_location", {"latitude": 38.7139, "longitude": -9.1394, "name": "Café Nicola"}),
        ),
    )
    llm.reply(200, anthropic_message("Here is our café."))
    reply = await agents().answer(request("Where are you?"))
    assert reply.reaction == "☕" and reply.text == "Here is our café."
    assert reply.location == Location(latitude=38.7139, longitude=-9.1394, name="Café Nicola")
    results = llm.requests[1].body["messages"][-1]["content"]
    assert [r["tool_use_id"] for r in results] == [
        "toolu_01A09q90qw90lq917830",
        "toolu_01A09q90qw90lq917831",
    ]


async def test_anthropic_bad_arguments_get_error_results(llm: FakeAPI, agents: MakeAgent) -> None:
    """Eleven choices, a missing field and an unknown tool are answered with is_error tool
    results naming the problem; the model corrects itself and the agent still answers."""
    eleven = [f"Option {n}" for n in range(11)]
    llm.reply(
        200,
        anthropic_tool_use(
            ("offer_choices", {"choices": eleven}),
            ("send_location", {"latitude": 1.0}),
            ("launch_rockets", {}),
        ),
    )
    llm.reply(200, anthropic_tool_use(("offer_choices", {"choices": eleven[:4]})))
    llm.reply(200, anthropic_message("Pick one of these."))
    reply = await agents().answer(request())
    assert reply.text == "Pick one of these." and reply.choice_style == "list"
    assert [c.title for c in reply.choices] == eleven[:4] and reply.location is None
    errors = llm.requests[1].body["messages"][-1]["content"]
    assert all(r["is_error"] is True for r in errors)
    assert (
        "11 choices" in errors[0]["content"]
        and "at most 3 reply buttons or 10" in errors[0]["content"]
    )
    assert "missing required argument(s) ['longitude']" in errors[1]["content"]
    assert "no tool named 'launch_rockets'" in errors[2]["content"]


async def test_title_over_the_limit_is_an_error_result(llm: FakeAPI, agents: MakeAgent) -> None:
    """A button title over 20 characters is refused with Meta's limit in the tool result,
    and the final reply has no choices when the model gives up."""
    llm.reply(
        200, anthropic_tool_use(("offer_choices", {"choices": ["A very long button title", "No"]}))
    )
    llm.reply(200, anthropic_message("Just tell me what you want."))
    reply = await agents().answer(request())
    assert reply.choices == () and reply.text == "Just tell me what you want."
    [error] = llm.requests[1].body["messages"][-1]["content"]
    assert error["is_error"] and "at most 20" in error["content"]


async def test_rounds_are_bounded_and_the_last_forbids_tools(
    llm: FakeAPI, agents: MakeAgent
) -> None:
    """A model that keeps calling tools is asked at most max_tool_rounds + 1 times; the
    last request sets tool_choice none, and its text (or the text before the calls) is the
    reply."""
    llm.reply(
        200, anthropic_tool_use(("offer_choices", {"choices": ["Yes", "No"]}), text="Shall I?")
    )
    reply = await agents(max_tool_rounds=2).answer(request())
    assert len(llm.requests) == 3
    assert [r.body.get("tool_choice") for r in llm.requests] == [None, None, {"type": "none"}]
    assert reply.text == "Shall I?"
    assert [c.title for c in reply.choices] == ["Yes", "No"]


async def test_text_before_the_calls_is_kept_when_the_final_answer_is_empty(
    llm: FakeAPI, agents: MakeAgent
) -> None:
    """Text the model wrote next to its tool calls becomes the reply when its final answer
    has none (joined by a blank line across rounds)."""
    llm.reply(200, anthropic_tool_use(("react", {"emoji": "👍"}), text="Sure."))
    llm.reply(200, anthropic_tool_use(("offer_choices", {"choices": ["A", "B"]}), text="Pick one:"))
    llm.reply(200, anthropic_message(""))
    reply = await agents().answer(request())
    assert reply.text == "Sure.\n\nPick one:" and reply.reaction == "👍"


async def test_choices_text_is_used_when_the_model_writes_nothing(
    llm: FakeAPI, agents: MakeAgent
) -> None:
    """The optional text of offer_choices is the message when the final answer is empty,
    and is added under a final text that does not contain it."""
    llm.reply(
        200, anthropic_tool_use(("offer_choices", {"choices": ["Yes", "No"], "text": "Coffee?"}))
    )
    llm.reply(200, anthropic_message(""))
    reply = await agents().answer(request())
    assert reply.text == "Coffee?" and [c.id for c in reply.choices] == ["Yes", "No"]
    llm.script.clear()
    llm.reply(
        200, anthropic_tool_use(("offer_choices", {"choices": ["Yes", "No"], "text": "Coffee?"}))
    )
    llm.reply(200, anthropic_message("Good morning!"))
    reply = await agents().answer(request())
    assert reply.text == "Good morning!\n\nCoffee?"


async def test_no_text_and_no_effect_is_still_an_error(llm: FakeAPI, agents: MakeAgent) -> None:
    """A model that only makes failing calls and then writes nothing raises LLMError (the
    user gets the usual apology), not an empty reply."""
    llm.reply(200, anthropic_tool_use(("react", {"emoji": "not an emoji"})))
    llm.reply(200, anthropic_message(""))
    with pytest.raises(LLMError, match="returned no text"):
        await agents().answer(request())


# ------------------------------------------------------------------ OpenAI


async def test_openai_tool_calls_round_trip(llm: FakeAPI, agents: MakeAgent) -> None:
    """Tools go out as type function; tool_calls (JSON-string arguments) are answered with
    role tool messages after the assistant message that made them."""
    calls = openai_tool_calls(
        ("offer_choices", '{"choices": ["Small", "Medium", "Large"]}'), ("react", '{"emoji": "👍"}')
    )
    llm.reply(200, calls)
    llm.reply(200, openai_completion("Which size?"))
    reply = await agents("openai/gpt-4o-mini").answer(request())
    assert reply.text == "Which size?" and reply.reaction == "👍"
    assert [c.title for c in reply.choices] == ["Small", "Medium", "Large"]
    first, second = (r.body for r in llm.requests)
    assert [t["type"] for t in first["tools"]] == ["function"] * 3
    assert first["tools"][2]["function"]["parameters"]["required"] == ["latitude", "longitude"]
    message = calls["choices"][0]["message"]
    assert second["messages"][-3] == {
        "role": "assistant",
        "content": None,
        "tool_calls": message["tool_calls"],
    }
    assert [m["role"] for m in second["messages"][-2:]] == ["tool", "tool"]
    assert [m["tool_call_id"] for m in second["messages"][-2:]] == [
        c["id"] for c in message["tool_calls"]
    ]
    assert second["messages"][-1]["content"].startswith("Done: you reacted 👍")


async def test_openai_invalid_json_arguments(llm: FakeAPI, agents: MakeAgent) -> None:
    """Arguments that are not JSON, or not an object, get an error tool message; the agent
    still answers with the model's text and nothing else."""
    llm.reply(
        200,
        openai_tool_calls(
            ("offer_choices", '{"choices": ["Yes", "No"'), ("send_location", "[1, 2]")
        ),
    )
    llm.reply(200, openai_completion("Sorry, just type your answer."))
    reply = await agents("openai/gpt-4o-mini").answer(request())
    assert reply == AgentReply(text="Sorry, just type your answer.")
    tool_messages = llm.requests[1].body["messages"][-2:]
    assert tool_messages[0]["content"].startswith("Error: the arguments are not valid JSON")
    assert tool_messages[1]["content"] == "Error: the arguments must be a JSON object."


async def test_openai_location_out_of_range_and_last_round(llm: FakeAPI, agents: MakeAgent) -> None:
    """A latitude of 123 is an error result; with max_tool_rounds=1 the second request
    sets tool_choice "none"."""
    llm.reply(
        200, openai_tool_calls(("send_location", json.dumps({"latitude": 123, "longitude": 0})))
    )
    llm.reply(200, openai_completion("I could not find it."))
    reply = await agents("openai/gpt-4o-mini", max_tool_rounds=1).answer(request())
    assert reply.location is None and reply.text == "I could not find it."
    assert llm.requests[1].body["tool_choice"] == "none"
    assert "latitude 123.0 is outside" in llm.requests[1].body["messages"][-1]["content"]


# ------------------------------------------------------------------ which tools


async def test_tool_selection(llm: FakeAPI, agents: MakeAgent) -> None:
    """tools=False sends none; a list sends those; react is offered only when answering a
    user's message; openai-compatible servers get none unless asked (many local models
    reject tools); an unknown or future tool (handoff) is refused."""
    llm.reply(200, openai_completion("ok"))
    await agents("openai/gpt-4o-mini", tools=False).answer(request())
    await agents("openai/gpt-4o-mini", tools=["react"]).answer(request())
    await agents("openai/gpt-4o-mini").answer(
        AgentRequest(text="ping", sender=USER, purpose="heartbeat")
    )
    await agents("openai-compatible/llama3.2").answer(request())
    await agents("openai-compatible/llama3.2", tools=True).answer(request())
    assert [tool_names(r.body) for r in llm.requests] == [
        [],
        ["react"],
        ["offer_choices", "send_location"],
        [],
        ["offer_choices", "react", "send_location"],
    ]
    with pytest.raises(ValueError, match="unknown LLMAgent tool"):
        LLMAgent("openai/gpt-4o-mini", api_key="k", tools=["handoff"])
    with pytest.raises(ValueError, match="max_tool_rounds"):
        LLMAgent("openai/gpt-4o-mini", api_key="k", max_tool_rounds=-1)


async def test_text_only_answers_are_unchanged(llm: FakeAPI, agents: MakeAgent) -> None:
    """When the model just answers, there is one request and a plain text reply."""
    llm.reply(200, anthropic_message("Yes, we do."))
    reply = await agents().answer(request())
    assert reply == AgentReply(text="Yes, we do.") and len(llm.requests) == 1
    assert reply.choices == ()
