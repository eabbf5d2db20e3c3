"""Agent adapters: every accepted agent shape ends up answering an AgentRequest."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from wa_agent import AgentReply, AgentRequest, as_agent
from wa_agent.agents import Attachment, Turn, agent_attribute

REQUEST = AgentRequest(
    text="hello", sender="15550001", history=(Turn("user", "hi"), Turn("assistant", "hey"))
)


async def test_async_function_returning_str() -> None:
    """An async function's str result becomes the reply text."""

    async def agent(request: AgentRequest) -> str:
        return f"echo {request.text} from {request.sender}"

    reply = await as_agent(agent).answer(REQUEST)
    assert reply == AgentReply(text="echo hello from 15550001")


async def test_plain_function_runs_in_a_thread() -> None:
    """A plain function is run off the event loop thread and may return an AgentReply."""
    main = threading.get_ident()
    seen: list[int] = []

    def agent(request: AgentRequest) -> AgentReply:
        seen.append(threading.get_ident())
        return AgentReply(text=request.text.upper(), images=[b"\x89PNG"])

    reply = await as_agent(agent).answer(REQUEST)
    assert reply.text == "HELLO"
    assert list(reply.images) == [b"\x89PNG"]
    assert seen and seen[0] != main


async def test_callable_object_with_async_call() -> None:
    """An object whose __call__ is async is treated as an async function."""

    class Agent:
        async def __call__(self, request: AgentRequest) -> str:
            return "called"

    assert (await as_agent(Agent()).answer(REQUEST)).text == "called"


async def test_do_async_framework_object() -> None:
    """An object with do_async(task) (CAMEL-style) gets the prompt and its result's text."""

    class Result:
        content = "done"

    class Framework:
        def __init__(self) -> None:
            self.tasks: list[str] = []

        async def do_async(self, task: str) -> Result:
            self.tasks.append(task)
            return Result()

    fw = Framework()
    reply = await as_agent(fw).answer(REQUEST)
    assert reply.text == "done"
    assert fw.tasks == ["user: hi\nassistant: hey\nuser: hello"]


async def test_arun_framework_object() -> None:
    """An object with arun(prompt) (agno/phidata-style) returns RunResponse-like .content."""

    class Response:
        def __init__(self, content: str) -> None:
            self.content = content

    class Framework:
        async def arun(self, prompt: str) -> Response:
            return Response(prompt[-5:])

    assert (
        await as_agent(Framework()).answer(AgentRequest(text="x hello", sender="1"))
    ).text == "hello"


async def test_ainvoke_framework_object() -> None:
    """An object with ainvoke(input) (LangChain-style) gets a dict and may return a dict."""

    class Chain:
        def __init__(self) -> None:
            self.inputs: list[Any] = []

        async def ainvoke(self, value: dict[str, Any]) -> dict[str, str]:
            self.inputs.append(value)
            return {"output": "chained"}

    chain = Chain()
    assert (await as_agent(chain).answer(AgentRequest(text="q", sender="1"))).text == "chained"
    assert chain.inputs[0]["input"] == "q"


async def test_sync_run_framework_object() -> None:
    """An object with a sync run(prompt) is called in a thread; its str result is used."""

    class Framework:
        def run(self, prompt: str) -> str:
            return prompt[::-1]

    assert (await as_agent(Framework()).answer(AgentRequest(text="abc", sender="1"))).text == "cba"


async def test_answer_method_is_used_as_is() -> None:
    """An object with async answer(request) (like LLMAgent) is used without wrapping."""

    class Native:
        greeting = "hi there"

        async def answer(self, request: AgentRequest) -> AgentReply:
            return AgentReply(text="native")

    native = Native()
    assert as_agent(native) is native
    assert agent_attribute(as_agent(native), "greeting") == "hi there"


async def test_none_result_is_an_empty_reply() -> None:
    """An agent returning None gives an empty reply (nothing is sent)."""

    async def agent(request: AgentRequest) -> None:
        return None

    assert (await as_agent(agent).answer(REQUEST)) == AgentReply()


def test_not_an_agent() -> None:
    """Something with no callable shape is refused with a TypeError naming the shapes."""
    with pytest.raises(TypeError, match="answer\\(\\), do_async\\(\\)"):
        as_agent(42)


def test_agent_attribute_reads_the_wrapped_object() -> None:
    """Configuration (heartbeat, greeting) is read through the adapter from the object."""

    class Framework:
        heartbeat = True
        heartbeat_period = 5

        def run(self, prompt: str) -> str:
            return prompt

    agent = as_agent(Framework())
    assert agent_attribute(agent, "heartbeat") is True
    assert agent_attribute(agent, "heartbeat_period") == 5
    assert agent_attribute(agent, "missing", "default") == "default"


def test_attachment_repr_hides_bytes() -> None:
    """An attachment's repr shows its size, not its content."""
    text = repr(Attachment(kind="image", data=b"secret-bytes" * 100, mime_type="image/png"))
    assert "size=1200" in text and "secret-bytes" not in text


class _Bot:
    async def answer(self, request: AgentRequest) -> str:
        return "ok"


def test_what_cannot_take_a_request_is_refused_when_the_interface_is_built() -> None:
    """Mistakes are caught at construction, naming the object: a class instead of an
    instance, a function with the wrong signature, a string, an interface or manager in the
    agent's place."""
    from wa_agent import InterfaceManager, WhatsAppInterface

    def two_args(request: AgentRequest, extra: str) -> str:
        return "x"

    def no_args() -> str:
        return "x"

    cases: list[tuple[object, str]] = [
        (_Bot, "_Bot is a class, not an agent: pass an instance"),
        (two_args, "must take the AgentRequest as its one argument"),
        (no_args, "must take the AgentRequest as its one argument"),
        ("my agent", "'my agent' is not an agent"),
    ]
    for obj, message in cases:
        with pytest.raises(TypeError, match=message):
            WhatsAppInterface(obj, access_token="t", phone_number_id="1")
    interface = WhatsAppInterface(_Bot(), access_token="t", phone_number_id="1")
    for host in (interface, InterfaceManager([interface])):
        with pytest.raises(TypeError, match="is not an agent: pass the agent itself"):
            WhatsAppInterface(host, access_token="t", phone_number_id="1")


async def test_an_agent_returning_none_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A forgotten ``return`` (the agent answers None) is logged at WARNING, once per agent,
    naming it; nothing is sent."""

    def forgetful(request: AgentRequest) -> None:
        request.text.upper()

    agent = as_agent(forgetful)
    request = AgentRequest(text="hi", sender="1")
    with caplog.at_level(logging.WARNING, logger="wa_agent.agents"):
        for _ in range(3):
            assert (await agent.answer(request)) == AgentReply()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "forgetful" in warnings[0] and "return" in warnings[0]
