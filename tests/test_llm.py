"""LLMAgent against fake Anthropic and OpenAI servers on 127.0.0.1.

The fake servers are tiny raw ASGI apps run by uvicorn (``BackgroundServer``). They record
every request (path, headers, JSON body) and answer from a script with the response shapes
the real APIs use, including their error bodies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.helpers import httpx_garbage
from wa_agent.agents import AgentRequest, Attachment, Turn
from wa_agent.events import MediaRef, Message
from wa_agent.exceptions import AgentError, ConfigurationError
from wa_agent.llm import LLMAgent, LLMAuthError, LLMError, describe_attachment
from wa_agent.secret import Secret
from wa_agent.server import BackgroundServer

ANTHROPIC_KEY = "sk-ant-api03-test-key-0123456789"
OPENAI_KEY = "sk-proj-test-key-0123456789"

# --- real response shapes -------------------------------------------------------------------


def anthropic_message(text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    """A Messages API success body (non-streamed)."""
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 12},
    }


def anthropic_error(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """A Messages API error body."""
    err: dict[str, Any] = {"type": error_type, "message": message, **extra}
    return {"type": "error", "error": err, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def openai_completion(
    text: str | None, finish_reason: str = "stop", refusal: str | None = None
) -> dict[str, Any]:
    """A Chat Completions success body (non-streamed)."""
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }


def openai_error(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    """A Chat Completions error body."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# --- the fake server -------------------------------------------------------------------------

HANG = object()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAPI:
    """A raw ASGI app that records requests and answers from ``script`` (the last entry
    repeats). An entry is ``(status, body, headers)`` or ``HANG`` (answer nothing until the
    client disconnects)."""

    script: list[Any] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.script.append((status, body, headers or {}))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append(
            Recorded(scope["method"], scope["path"], headers, json.loads(raw) if raw else None)
        )
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if entry is HANG:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        status, body, extra = entry
        if isinstance(body, (dict, list)):
            payload = json.dumps(body).encode()
            ctype = "application/json"
        else:
            payload = str(body).encode()
            ctype = "text/html; charset=utf-8"
        out = [(b"content-type", ctype.encode())]
        out += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop for the module, so one fake server serves every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def _server() -> AsyncIterator[FakeAPI]:
    fake = FakeAPI()
    async with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
def api(_server: FakeAPI) -> FakeAPI:
    """The fake API with an empty script and no recorded requests."""
    _server.script.clear()
    _server.requests.clear()
    return _server


@dataclass
class SleepRecorder:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def slept() -> SleepRecorder:
    return SleepRecorder()


MakeAgent = Callable[..., LLMAgent]


@pytest.fixture
async def make_agent(api: FakeAPI, slept: SleepRecorder) -> AsyncIterator[MakeAgent]:
    agents: list[LLMAgent] = []

    def factory(model: str = "anthropic/claude-sonnet-4-6", **kw: Any) -> LLMAgent:
        if "base_url" not in kw:
            kw["base_url"] = api.url if model.startswith("anthropic/") else api.url + "/v1"
        if "api_key" not in kw and not model.startswith("openai-compatible/"):
            kw["api_key"] = ANTHROPIC_KEY if model.startswith("anthropic/") else OPENAI_KEY
        kw.setdefault("sleep", slept)
        agent = LLMAgent(model, **kw)
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        await agent.aclose()


def req(text: str, *history: tuple[str, str], **kw: Any) -> AgentRequest:
    turns = tuple(Turn(role, t) for role, t in history)  # type: ignore[arg-type]
    return AgentRequest(text=text, sender=kw.pop("sender", "15551234567"), history=turns, **kw)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


# --- Anthropic ---------------------------------------------------------------------------------


async def test_anthropic_request_body_and_headers(api: FakeAPI, make_agent: MakeAgent) -> None:
    """A chat turn is POSTed to /v1/messages with x-api-key, anthropic-version, the system
    prompt at the top level and the history in order, and the reply text comes back (with
    tools=False: the WhatsApp tools are tested in test_llm_tools.py)."""
    api.reply(200, anthropic_message("Sunny, 24 °C."), {"request-id": "req_1"})
    agent = make_agent(system="You are terse.", temperature=0.2, max_tokens=300, tools=False)
    reply = await agent.answer(
        req("And tomorrow?", ("user", "Weather in Lisbon?"), ("assistant", "Let me check."))
    )
    assert reply.text == "Sunny, 24 °C."
    sent = api.last
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Weather in Lisbon?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "temperature": 0.2,
    }


async def test_anthropic_turns_alternate_and_start_with_user(
    api: FakeAPI, make_agent: MakeAgent
) -> None:
    """Consecutive same-role turns are merged, and a history that opens with the bot's own
    message (a heartbeat) gets a user turn before it, as the Messages API requires."""
    api.reply(200, anthropic_message("ok"))
    agent = make_agent()
    await agent.answer(
        req(
            "third",
            ("assistant", "Good morning!"),
            ("user", "first"),
            ("user", "second"),
            ("assistant", "  "),
        )
    )
    messages = api.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "Good morning!"
    assert messages[2]["content"] == "first\n\nsecond\n\nthird"
    assert "temperature" not in api.last.body


async def test_anthropic_image_is_a_base64_block(api: FakeAPI, make_agent: MakeAgent) -> None:
    """An image goes as a base64 image block before the text; its caption is not repeated
    when it is the message text."""
    api.reply(200, anthropic_message("A cat."))
    agent = make_agent()
    image = Attachment("image", PNG, "image/png", caption="what is this?")
    await agent.answer(req("what is this?", attachments=(image,)))
    content = api.last.body["messages"][0]["content"]
    assert content == [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(PNG).decode(),
            },
        },
        {"type": "text", "text": "what is this?"},
    ]


async def test_anthropic_documents(api: FakeAPI, make_agent: MakeAgent) -> None:
    """A PDF goes as a base64 document block and a text file as a plain-text document,
    each titled with its file name; a .docx is described in text."""
    api.reply(200, anthropic_message("Read them."))
    agent = make_agent()
    pdf = Attachment("document", b"%PDF-1.7 test", "application/pdf", filename="a.pdf")
    txt = Attachment("document", "olá".encode(), "text/plain; charset=utf-8", filename="n.txt")
    docx = Attachment(
        "document",
        b"x" * 2048,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="cv.docx",
    )
    await agent.answer(req("", attachments=(pdf, txt, docx)))
    content = api.last.body["messages"][0]["content"]
    assert content[0] == {
        "type": "document",
        "title": "a.pdf",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(b"%PDF-1.7 test").decode(),
        },
    }
    assert content[1] == {
        "type": "document",
        "title": "n.txt",
        "source": {"type": "text", "media_type": "text/plain", "data": "olá"},
    }
    assert content[2]["type"] == "text"
    assert content[2]["text"].startswith('[document "cv.docx", application/vnd.openxml')
    assert content[2]["text"].endswith(", 2 KB]")


async def test_voice_note_is_described_not_sent(api: FakeAPI, make_agent: MakeAgent) -> None:
    """A voice note is not sent as audio: the model gets '[voice note, audio/ogg, 12 KB]'."""
    api.reply(200, anthropic_message("I can't listen to audio."))
    agent = make_agent()
    voice = Attachment("audio", b"\x00" * 12 * 1024, "audio/ogg; codecs=opus", voice=True)
    await agent.answer(req("", attachments=(voice,)))
    assert api.last.body["messages"][0]["content"] == "[voice note, audio/ogg; codecs=opus, 12 KB]"


def test_describe_attachment_formats() -> None:
    """Descriptions name the kind, file name, MIME type, size and caption."""
    video = Attachment("video", b"\x00" * (3 * 1024 * 1024 + 400_000), "video/mp4", caption="look")
    assert describe_attachment(video) == '[video, video/mp4, 3.4 MB, caption: "look"]'
    assert describe_attachment(video, with_caption=False) == "[video, video/mp4, 3.4 MB]"
    song = Attachment("audio", b"\x00" * 100, "audio/mpeg", filename="s.mp3")
    assert describe_attachment(song) == '[audio "s.mp3", audio/mpeg, 100 bytes]'


async def test_animated_sticker_described_static_sticker_sent(
    api: FakeAPI, make_agent: MakeAgent
) -> None:
    """A static WebP sticker is an image the model can see; an animated one is described."""
    api.reply(200, anthropic_message("Nice sticker"))
    agent = make_agent()

    def sticker_request(animated: bool) -> AgentRequest:
        msg = Message(
            id="wamid.1",
            sender="1",
            timestamp=datetime.now(UTC),
            type="sticker",
            media=MediaRef(id="m1", mime_type="image/webp", animated=animated),
        )
        att = Attachment("sticker", b"RIFF0000WEBP", "image/webp")
        return AgentRequest(text="", sender="1", attachments=(att,), message=msg)

    await agent.answer(sticker_request(animated=False))
    assert api.last.body["messages"][0]["content"][0]["type"] == "image"
    await agent.answer(sticker_request(animated=True))
    assert api.last.body["messages"][0]["content"] == "[sticker, image/webp, 12 bytes]"


async def test_anthropic_401_is_an_auth_error_naming_the_variable(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    """401 raises LLMAuthError (an AgentError) at once, saying to check ANTHROPIC_API_KEY,
    and the key appears in neither the message nor the log."""
    caplog.set_level(logging.DEBUG)
    api.reply(401, anthropic_error("authentication_error", "invalid x-api-key"))
    agent = make_agent()
    with pytest.raises(LLMAuthError) as info:
        await agent.answer(req("hi"))
    err = info.value
    assert isinstance(err, AgentError)
    assert "ANTHROPIC_API_KEY" in str(err) and "authentication_error" in str(err)
    assert (err.http_status, err.retryable) == (401, False)
    assert err.request_id == "req_011CSHoEeqs5C35K2UUqR7Fy"
    assert len(api.requests) == 1 and slept.delays == []
    assert ANTHROPIC_KEY not in str(err) and ANTHROPIC_KEY not in caplog.text


async def test_403_is_an_auth_error(api: FakeAPI, make_agent: MakeAgent) -> None:
    """403 permission_error is an LLMAuthError too, and not retried."""
    api.reply(
        403,
        anthropic_error(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
    )
    with pytest.raises(LLMAuthError, match="no permission"):
        await make_agent().answer(req("hi"))
    assert len(api.requests) == 1


async def test_429_waits_as_long_as_retry_after_says(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A 429 rate_limit_error with Retry-After: 7 waits 7 s, then the retry's answer is
    returned."""
    api.reply(
        429,
        anthropic_error(
            "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
        ),
        {"retry-after": "7"},
    )
    api.reply(200, anthropic_message("Here you go."))
    reply = await make_agent().answer(req("hi"))
    assert reply.text == "Here you go."
    assert slept.delays == [7.0]
    assert len(api.requests) == 2
    assert api.requests[0].body == api.requests[1].body


async def test_throttling_slows_down_instead_of_failing(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """Throttling has its own budget (seconds of waiting, not ``max_retries``): six 429s in
    a row with Retry-After: 2 are waited out and the answer arrives; past
    ``max_throttle_wait`` the error is raised."""
    for _ in range(6):
        api.reply(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "2"})
    api.reply(200, anthropic_message("finally"))
    reply = await make_agent(max_retries=1).answer(req("hi"))
    assert reply.text == "finally" and slept.delays == [2.0] * 6
    api.script.clear()
    api.requests.clear()
    slept.delays.clear()
    api.reply(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "2"})
    with pytest.raises(LLMError, match="rate_limit_error"):
        await make_agent(max_throttle_wait=5).answer(req("hi"))
    assert slept.delays == [2.0, 2.0] and len(api.requests) == 3


async def test_a_429_pauses_every_request_of_the_agent(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A Retry-After told to one request holds the agent's other requests too: a request
    started during the pause waits for its rest before reaching the provider."""
    api.reply(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "30"})
    api.reply(200, anthropic_message("ok"))
    agent = make_agent()
    assert (await agent.answer(req("first"))).text == "ok"
    assert slept.delays == [30.0]  # the fake sleep returns at once: the pause is still on
    assert (await agent.answer(req("second"))).text == "ok"
    assert len(slept.delays) == 2 and 29 < slept.delays[1] <= 30
    assert len(api.requests) == 3


async def test_concurrent_model_requests_are_bounded() -> None:
    """``max_concurrent_requests=3``: ten answers at once never have more than three
    requests at the provider; all ten are answered."""
    import anyio

    inside = peak = 0

    async def model(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal inside, peak
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        inside += 1
        peak = max(peak, inside)
        await anyio.sleep(0.05)
        inside -= 1
        body = json.dumps(openai_completion("ok")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async with (
        BackgroundServer(model) as server,
        LLMAgent(
            "openai-compatible/m", base_url=server.url + "/v1", max_concurrent_requests=3
        ) as agent,
    ):
        replies = await asyncio.gather(*(agent.answer(req(f"m{n}")) for n in range(10)))
    assert [r.text for r in replies] == ["ok"] * 10
    assert peak == 3
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        LLMAgent("openai-compatible/m", base_url="http://127.0.0.1:9/v1", max_concurrent_requests=0)


async def test_retry_after_ms_is_preferred(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """retry-after-ms (finer) wins over retry-after."""
    api.reply(
        429,
        openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
        {"retry-after-ms": "250", "retry-after": "1"},
    )
    api.reply(200, openai_completion("ok"))
    await make_agent("openai/gpt-4o-mini").answer(req("hi"))
    assert slept.delays == [0.25]


async def test_529_overloaded_backs_off_exponentially(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """529 overloaded_error is retried with growing delays when no Retry-After is given."""
    overloaded = anthropic_error("overloaded_error", "Overloaded")
    api.reply(529, overloaded)
    api.reply(529, overloaded)
    api.reply(200, anthropic_message("finally"))
    reply = await make_agent().answer(req("hi"))
    assert reply.text == "finally"
    assert len(slept.delays) == 2 and 0 < slept.delays[0] < slept.delays[1]


async def test_500_gives_up_after_max_retries(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A persistent 500 is tried max_retries + 1 times, then LLMError carries the status."""
    api.reply(500, anthropic_error("api_error", "Internal server error"))
    with pytest.raises(LLMError) as info:
        await make_agent(max_retries=2).answer(req("hi"))
    assert len(api.requests) == 3 and len(slept.delays) == 2
    assert (info.value.http_status, info.value.error_type) == (500, "api_error")
    assert info.value.retryable


async def test_html_502_from_a_proxy(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A proxy's HTML 502 is retried, and the final error says the body was not JSON
    without quoting the HTML."""
    api.reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")
    with pytest.raises(LLMError) as info:
        await make_agent(max_retries=1).answer(req("hi"))
    assert len(api.requests) == 2
    assert "HTTP 502 (non-JSON body, text/html)" in str(info.value)
    assert "<html>" not in str(info.value)


async def test_spend_limit_429_is_not_retried(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A 429 for a used-up spend limit fails at once with a billing hint."""
    api.reply(
        429,
        anthropic_error(
            "rate_limit_error",
            "spend limit reached",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
    )
    with pytest.raises(LLMError, match="check billing") as info:
        await make_agent().answer(req("hi"))
    assert len(api.requests) == 1 and not info.value.retryable


async def test_retry_after_beyond_the_cap_fails_at_once(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A Retry-After longer than max_retry_delay is not slept: the error is raised at once."""
    api.reply(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "3600"})
    with pytest.raises(LLMError, match="3600"):
        await make_agent(max_retry_delay=30).answer(req("hi"))
    assert len(api.requests) == 1 and slept.delays == []


async def test_400_is_not_retried(api: FakeAPI, make_agent: MakeAgent) -> None:
    """400 invalid_request_error fails at once and quotes the API's message."""
    api.reply(400, anthropic_error("invalid_request_error", "max_tokens: Field required"))
    with pytest.raises(LLMError, match="max_tokens: Field required"):
        await make_agent().answer(req("hi"))
    assert len(api.requests) == 1


async def test_timeout_is_bounded_and_retried(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """A server that never answers costs at most max_retries + 1 attempts of `timeout`
    each, then LLMError says it did not answer."""
    api.script.append(HANG)
    agent = make_agent(timeout=0.3, max_retries=1)
    with anyio.fail_after(10), pytest.raises(LLMError, match="did not answer within 0.3 s"):
        await agent.answer(req("hi"))
    assert len(api.requests) == 2 and len(slept.delays) == 1


async def test_connection_refused_is_retried_then_raised(slept: SleepRecorder) -> None:
    """A base_url nobody listens on gives LLMError after the bounded retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with LLMAgent(
        "anthropic/claude-sonnet-4-6",
        api_key="k",
        sleep=slept,
        base_url=f"http://127.0.0.1:{port}",
        max_retries=2,
    ) as agent:
        with pytest.raises(LLMError, match="could not reach"):
            await agent.answer(req("hi"))
    assert len(slept.delays) == 2


async def test_max_tokens_stop_returns_text_and_warns(
    api: FakeAPI, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """stop_reason=max_tokens returns the text as it is and logs a warning."""
    api.reply(200, anthropic_message("A long story that", stop_reason="max_tokens"))
    reply = await make_agent(max_tokens=5).answer(req("tell me a story"))
    assert reply.text == "A long story that"
    assert "cut off at max_tokens=5" in caplog.text


async def test_reply_without_text_is_an_error(api: FakeAPI, make_agent: MakeAgent) -> None:
    """An answer with no text block (e.g. a refusal) raises LLMError instead of sending an
    empty WhatsApp message."""
    api.reply(200, anthropic_message("", stop_reason="refusal"))
    with pytest.raises(LLMError, match="refusal"):
        await make_agent().answer(req("hi"))


# --- OpenAI ------------------------------------------------------------------------------------


async def test_openai_request_body_and_headers(api: FakeAPI, make_agent: MakeAgent) -> None:
    """Chat Completions gets a bearer key, the system prompt as the first message, the
    history in order and max_completion_tokens; the reply is choices[0].message.content
    (with tools=False: the WhatsApp tools are tested in test_llm_tools.py)."""
    api.reply(200, openai_completion("Sure!"))
    agent = make_agent("openai/gpt-4o-mini", system="Be nice.", max_tokens=200, tools=False)
    reply = await agent.answer(req("Thanks", ("user", "Hello"), ("assistant", "Hi!")))
    assert reply.text == "Sure!"
    sent = api.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-api-key" not in sent.headers
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be nice."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Thanks"},
        ],
        "max_completion_tokens": 200,
    }


async def test_openai_image_is_a_data_url(api: FakeAPI, make_agent: MakeAgent) -> None:
    """An image goes as an image_url part holding a base64 data URL, a PDF as a file part."""
    api.reply(200, openai_completion("A cat."))
    image = Attachment("image", PNG, "image/jpeg")
    pdf = Attachment("document", b"%PDF", "application/pdf", filename="x.pdf")
    await make_agent("openai/gpt-4o").answer(req("what is it?", attachments=(image, pdf)))
    content = api.last.body["messages"][1]["content"]
    assert content == [
        {
            "type": "image_url",
            "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(PNG).decode()},
        },
        {
            "type": "file",
            "file": {
                "filename": "x.pdf",
                "file_data": "data:application/pdf;base64," + base64.b64encode(b"%PDF").decode(),
            },
        },
        {"type": "text", "text": "what is it?"},
    ]


async def test_openai_401_names_the_variable_and_redacts_the_key(
    api: FakeAPI, make_agent: MakeAgent
) -> None:
    """An OpenAI 401 raises LLMAuthError naming OPENAI_API_KEY; a key echoed by the server
    is redacted from the message."""
    api.reply(
        401,
        openai_error(
            f"Incorrect API key provided: {OPENAI_KEY}.", "invalid_request_error", "invalid_api_key"
        ),
    )
    with pytest.raises(LLMAuthError) as info:
        await make_agent("openai/gpt-4o-mini").answer(req("hi"))
    assert "OPENAI_API_KEY" in str(info.value) and "invalid_api_key" in str(info.value)
    assert OPENAI_KEY not in str(info.value)


async def test_openai_insufficient_quota_is_not_retried(
    api: FakeAPI, make_agent: MakeAgent, slept: SleepRecorder
) -> None:
    """429 insufficient_quota is not a rate limit: it fails at once with a billing hint."""
    api.reply(
        429,
        openai_error(
            "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
        ),
    )
    with pytest.raises(LLMError, match="check billing"):
        await make_agent("openai/gpt-4o-mini").answer(req("hi"))
    assert len(api.requests) == 1 and slept.delays == []


async def test_openai_refusal_is_the_reply(api: FakeAPI, make_agent: MakeAgent) -> None:
    """A null content with a refusal string returns the refusal to the user."""
    api.reply(200, openai_completion(None, refusal="I can't help with that."))
    reply = await make_agent("openai/gpt-4o-mini").answer(req("hi"))
    assert reply.text == "I can't help with that."


async def test_openai_compatible_server(
    api: FakeAPI, make_agent: MakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openai-compatible/ posts to base_url/chat/completions with max_tokens, never sends
    OPENAI_API_KEY, strips a leading <think> block, and describes PDFs."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    api.reply(200, openai_completion("<think>hmm, a PDF</think>\nI can't open PDFs."))
    agent = make_agent("openai-compatible/qwen3:8b")
    pdf = Attachment("document", b"%PDF", "application/pdf", filename="x.pdf")
    reply = await agent.answer(req("", attachments=(pdf,)))
    assert reply.text == "I can't open PDFs."
    sent = api.last
    assert sent.path == "/v1/chat/completions"
    assert "authorization" not in sent.headers
    assert sent.body["model"] == "qwen3:8b" and sent.body["max_tokens"] == 1024
    assert sent.body["messages"][1] == {
        "role": "user",
        "content": '[document "x.pdf", application/pdf, 4 bytes]',
    }


async def test_openai_compatible_sends_a_given_key(api: FakeAPI, make_agent: MakeAgent) -> None:
    """An api_key passed for a compatible server (vLLM --api-key) is sent as a bearer."""
    api.reply(200, openai_completion("ok"))
    await make_agent("openai-compatible/m", api_key="local-key").answer(req("hi"))
    assert api.last.headers["authorization"] == "Bearer local-key"


def test_openai_compatible_needs_base_url() -> None:
    """openai-compatible without base_url fails at construction with examples."""
    with pytest.raises(ConfigurationError, match="needs base_url"):
        LLMAgent("openai-compatible/llama3.2")


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "env"),
    [
        ("anthropic/claude-sonnet-4-6", "ANTHROPIC_API_KEY"),
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
    ],
)
def test_missing_key_names_the_variable(
    model: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without api_key and without the environment variable, construction fails naming it."""
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigurationError, match=env):
        LLMAgent(model)


async def test_key_is_read_from_the_environment(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, slept: SleepRecorder
) -> None:
    """ANTHROPIC_API_KEY is used when api_key is not passed."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    api.reply(200, anthropic_message("ok"))
    async with LLMAgent("anthropic/claude-haiku-4-5", base_url=api.url, sleep=slept) as agent:
        await agent.answer(req("hi"))
    assert api.last.headers["x-api-key"] == "from-env"


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gemini/gemini-2.5", "anthropic/"])
def test_bad_model_string(model: str) -> None:
    """A model without a known '<provider>/' prefix fails at construction."""
    with pytest.raises(ConfigurationError, match="provider"):
        LLMAgent(model, api_key="k")


def test_repr_masks_the_key() -> None:
    """repr shows the model but never the key, passed as str or Secret."""
    for key in (ANTHROPIC_KEY, Secret(ANTHROPIC_KEY)):
        agent = LLMAgent("anthropic/claude-sonnet-4-6", api_key=key, name="Bot")
        text = repr(agent)
        assert "claude-sonnet-4-6" in text and "Secret('**********')" in text
        assert ANTHROPIC_KEY not in text


async def test_workspace_supplies_system_and_greeting(
    api: FakeAPI, make_agent: MakeAgent, tmp_path: Path
) -> None:
    """PERSONA.md becomes the system prompt and GREETING.md the greeting; a greeting request
    ignores the (reset) history and asks for a greeting based on it."""
    (tmp_path / "PERSONA.md").write_text("You are Ana, a travel agent.\n")
    (tmp_path / "GREETING.md").write_text("Olá! I'm Ana. Where to?\n")
    api.reply(200, anthropic_message("Olá! I'm Ana, where shall we go?"))
    agent = make_agent(workspace=tmp_path)
    assert agent.greeting == "Olá! I'm Ana. Where to?"
    assert agent.system == "You are Ana, a travel agent."
    reply = await agent.answer(req("/reset", ("user", "old"), purpose="greeting"))
    assert reply.text == "Olá! I'm Ana, where shall we go?"
    body = api.last.body
    assert body["system"] == "You are Ana, a travel agent."
    assert len(body["messages"]) == 1
    assert body["messages"][0]["content"].endswith("\nOlá! I'm Ana. Where to?")


def test_explicit_arguments_win_over_workspace(tmp_path: Path) -> None:
    """system= and greeting= given explicitly are not replaced by workspace files, and a
    workspace that is not a folder is a configuration error."""
    (tmp_path / "SYSTEM.md").write_text("file system")
    (tmp_path / "greeting.txt").write_text("file greeting")
    agent = LLMAgent("anthropic/x", api_key="k", workspace=tmp_path, system="mine", greeting="hi")
    assert (agent.system, agent.greeting) == ("mine", "hi")
    assert LLMAgent("anthropic/x", api_key="k", workspace=tmp_path).greeting == "file greeting"
    assert LLMAgent("anthropic/x", api_key="k").greeting is None
    with pytest.raises(ConfigurationError, match="not a folder"):
        LLMAgent("anthropic/x", api_key="k", workspace=tmp_path / "missing")


async def test_heartbeat_request(api: FakeAPI, make_agent: MakeAgent) -> None:
    """heartbeat attributes are exposed; a heartbeat request sends the heartbeat message
    marked as scheduled (the agent's own message when the request text is empty)."""
    api.reply(200, openai_completion("Good morning! Any plans today?"))
    agent = make_agent(
        "openai/gpt-4o-mini",
        heartbeat=True,
        heartbeat_period=15,
        heartbeat_message="Check in on the user.",
        name="WhatsAppBot",
    )
    assert (agent.heartbeat, agent.heartbeat_period, agent.name) == (True, 15, "WhatsAppBot")
    await agent.answer(req("", ("user", "Remind me about the dentist"), purpose="heartbeat"))
    messages = api.last.body["messages"]
    assert len(messages) == 2
    first, beat = messages[1]["content"].split("\n\n")
    assert first == "Remind me about the dentist"
    assert beat.startswith("[Scheduled heartbeat") and beat.endswith("\nCheck in on the user.")
    assert "WhatsAppBot" in messages[0]["content"]


async def test_each_request_carries_only_its_own_history(
    api: FakeAPI, make_agent: MakeAgent
) -> None:
    """The agent keeps no state between requests: concurrent answers for two senders each
    send exactly the history they were given."""
    api.reply(200, openai_completion("ok"))
    agent = make_agent("openai/gpt-4o-mini")
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.answer, req("alice 2", ("user", "alice 1"), sender="111"))
        tg.start_soon(agent.answer, req("bob 2", ("user", "bob 1"), sender="222"))
    bodies = sorted(json.dumps(r.body["messages"][1:]) for r in api.requests)
    assert bodies == [
        json.dumps([{"role": "user", "content": "alice 1\n\nalice 2"}]),
        json.dumps([{"role": "user", "content": "bob 1\n\nbob 2"}]),
    ]


async def test_client_lifecycle(api: FakeAPI, slept: SleepRecorder) -> None:
    """A client passed in is shared and left open; the agent's own client is closed by
    aclose() and a new one opens on the next answer."""
    api.reply(200, anthropic_message("ok"))
    async with httpx.AsyncClient() as client:
        async with LLMAgent(
            "anthropic/m", api_key="k", base_url=api.url, client=client, sleep=slept
        ) as agent:
            await agent.answer(req("hi"))
        assert not client.is_closed
    own = LLMAgent("anthropic/m", api_key="k", base_url=api.url, sleep=slept)
    await own.answer(req("one"))
    await own.aclose()
    await own.aclose()
    await own.answer(req("two"))
    await own.aclose()
    assert [r.body["messages"][-1]["content"] for r in api.requests] == ["hi", "one", "two"]


def test_import_stays_light() -> None:
    """`import wa_agent` does not import wa_agent.llm, and importing wa_agent.llm does not
    import httpx."""
    code = (
        "import sys, wa_agent; assert 'wa_agent.llm' not in sys.modules; "
        "import wa_agent.llm; assert 'httpx' not in sys.modules, 'httpx imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


async def test_model_calls_leave_no_reference_cycles(api: FakeAPI, make_agent: MakeAgent) -> None:
    """A model call, answered or failed and retried, leaves no httpx request/response for
    the garbage collector (the response <-> stream cycle is cut once the body is read)."""
    agent = make_agent()
    api.reply(200, anthropic_message("warm"))
    await agent.answer(req("warm up"))
    with httpx_garbage() as left:
        for n in range(3):
            api.script.clear()  # (the last entry would repeat)
            api.reply(
                529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
            )
            api.reply(200, anthropic_message(f"answer {n}"))
            assert (await agent.answer(req(f"question {n}"))).text == f"answer {n}"
    assert left == []
