"""Voice notes understood, end to end: a simulated user records a voice note (OGG/Opus), the
bot's real WhatsAppInterface downloads it from the Cloud API emulator and hands it to its
``transcriber``; OpenAITranscriber posts it to a fake ``/v1/audio/transcriptions`` server on
127.0.0.1 (tests/test_transcribe.py's: it parses the real multipart upload and answers
OpenAI's ``{"text": ...}``). The transcript is the agent's text, the audio stays an
attachment, CHAT history and the phone show the transcript; when transcription fails the
user gets the voice apology, once, and nothing is stuck."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.test_transcribe import KEY, FakeWhisper, openai_error
from wa_agent import AgentReply, AgentRequest, OpenAITranscriber
from wa_agent.hosting.settings import DEFAULT_VOICE_APOLOGY
from wa_agent.server import BackgroundServer
from wa_agent.testing import Simulator, silent_voice_note, webhooks

USER = "15551230001"
SAID = "Is the shop open on Sunday?"
VOICE = silent_voice_note(1.5)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def _server() -> AsyncIterator[FakeWhisper]:
    fake = FakeWhisper()
    async with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
def whisper(_server: FakeWhisper) -> FakeWhisper:
    """The fake transcription endpoint, with an empty script and no uploads."""
    _server.script.clear()
    _server.uploads.clear()
    return _server


async def no_sleep(seconds: float) -> None:
    pass


class Echo:
    """Answers what it heard; records the requests."""

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        return AgentReply(text=f"You said: {request.text}")


def transcriber(whisper: FakeWhisper, **options: Any) -> OpenAITranscriber:
    return OpenAITranscriber(base_url=whisper.url + "/v1", api_key=KEY, sleep=no_sleep, **options)


async def test_a_voice_note_is_transcribed_and_answered(whisper: FakeWhisper) -> None:
    """The voice note's bytes reach the endpoint as a multipart upload (model, a file named
    voice.ogg of type audio/ogg, the key as bearer token); the agent gets the transcript as
    ``text`` and the recording in ``attachments``; history records ``[voice note] <the
    transcript>``; the simulator exposes the transcript under the voice note's wamid."""
    whisper.script.append((200, {"text": SAID}))
    bot = Echo()
    async with (
        transcriber(whisper) as transcribe,
        Simulator(bot, mode="chat", transcriber=transcribe) as sim,
    ):
        user = sim.user(USER)
        wamid = await user.send_voice(VOICE)
        reply = await user.next_reply()
        await sim.settle()
        history = await sim.interface.store.get_history(sim.interface.name, USER)
    assert reply.text == f"You said: {SAID}"
    [upload] = whisper.uploads
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.headers["authorization"] == f"Bearer {KEY}"
    assert upload.fields["model"] == "whisper-1"
    assert (upload.filename, upload.content_type, upload.data) == ("voice.ogg", "audio/ogg", VOICE)
    [request] = bot.requests
    assert request.text == SAID and request.choice is None and request.notes == ()
    [audio] = request.attachments
    assert audio.voice and audio.kind == "audio" and audio.data == VOICE
    assert audio.mime_type.startswith("audio/ogg")
    assert [(t.role, t.text) for t in history] == [
        ("user", f"[voice note] {SAID}"),
        ("assistant", f"You said: {SAID}"),
    ]
    assert history[0].message_id == wamid
    assert sim.transcripts == {wamid: SAID}


async def test_the_phone_shows_what_the_bot_heard(whisper: FakeWhisper) -> None:
    """On the notebook phone, the user's voice note bubble shows the transcript (escaped)
    once the bot has transcribed it."""
    pytest.importorskip("ipywidgets")
    heard = "<b>tea</b> please"
    whisper.script.append((200, {"text": heard}))
    async with (
        transcriber(whisper) as transcribe,
        Simulator(Echo(), mode="chat", transcriber=transcribe) as sim,
    ):
        phone = sim.phone(USER, "Ada")
        replies = await phone.send_voice()
        mine = phone.transcript()[0]
        html = phone.html
        phone.close()
    assert [r.text for r in replies] == [f"You said: {heard}"]
    assert (mine["kind"], mine["extra"], mine["transcript"]) == ("audio", "voice note", heard)
    assert "“&lt;b&gt;tea&lt;/b&gt; please”" in html and "<b>tea" not in html


async def broken(audio: bytes, mime_type: str) -> str:
    raise RuntimeError("the speech model is not loaded")


@pytest.mark.parametrize("failure", ["http-500", "exception"])
async def test_a_failed_transcription_gets_the_voice_apology_once(
    whisper: FakeWhisper, failure: str
) -> None:
    """The endpoint answers 500 (after its retries), or the transcriber raises: the user gets
    the voice apology exactly once (even though Meta delivered the voice note twice), the
    agent is not asked, the voice note leaves the inbox, and the next message is answered
    as usual."""
    whisper.script.append((500, openai_error("The server had an error", "server_error")))
    bot = Echo()
    async with transcriber(whisper, max_retries=1) as openai:
        chosen = openai if failure == "http-500" else broken
        async with Simulator(bot, mode="chat", transcriber=chosen) as sim:
            user = sim.user(USER)
            media_id = sim.emulator.add_media(VOICE, "audio/ogg; codecs=opus")
            voice = webhooks.media_message(
                USER,
                "audio",
                media_id,
                "audio/ogg; codecs=opus",
                sha256=sim.emulator.media[media_id].sha256,
                voice=True,
            )
            acks = await sim.deliver(webhooks.envelope(messages=[voice]), times=2)
            apology = await user.next_reply()
            await sim.settle()
            assert await sim.interface.store.pending(sim.interface.name, USER) == []
            after = await user.ask("hello?")
            await sim.settle()
            history = await sim.interface.store.get_history(sim.interface.name, USER)
    assert sorted(a.json()["status"] for a in acks) == ["ignored", "processing"]
    assert apology.text == DEFAULT_VOICE_APOLOGY and apology.type == "text"
    assert after.text == "You said: hello?"
    assert [m.text for m in sim.emulator.messages] == [DEFAULT_VOICE_APOLOGY, "You said: hello?"]
    assert [r.text for r in bot.requests] == ["hello?"]
    assert len(whisper.uploads) == (2 if failure == "http-500" else 0)
    assert sim.transcripts == {}
    assert [(t.role, t.text) for t in history] == [
        ("user", "hello?"),
        ("assistant", "You said: hello?"),
    ]


async def test_a_custom_apology_and_a_plain_function_transcriber() -> None:
    """Any ``async (audio, mime_type) -> str`` transcribes (it gets the downloaded bytes and
    their MIME type); ``voice_apology=`` replaces the default apology."""
    seen: list[tuple[bytes, str]] = []

    async def local_model(audio: bytes, mime_type: str) -> str:
        seen.append((audio, mime_type))
        if len(seen) > 1:
            raise TimeoutError
        return "  two coffees  "

    bot = Echo()
    async with Simulator(
        bot, transcriber=local_model, voice_apology="Sorry, please type it."
    ) as sim:
        user = sim.user(USER)
        await user.send_voice(VOICE)
        first = await user.next_reply()
        await user.send_voice(VOICE)
        second = await user.next_reply()
        await sim.settle()
    assert first.text == "You said: two coffees"  # the transcript, stripped
    assert second.text == "Sorry, please type it."
    assert [(len(a), m.split(";")[0]) for a, m in seen] == [(len(VOICE), "audio/ogg")] * 2
    assert len(bot.requests) == 1


async def test_the_conversations_widget_shows_what_the_bot_heard(whisper: FakeWhisper) -> None:
    """In the conversations view (``manager.widget()``), the user's voice note shows the
    transcript (escaped) once the bot has transcribed it."""
    pytest.importorskip("ipywidgets")
    heard = "<b>coffee</b> please"
    whisper.script.append((200, {"text": heard}))
    async with (
        transcriber(whisper) as transcribe,
        Simulator(Echo(), mode="chat", transcriber=transcribe) as sim,
    ):
        view = sim.manager.widget()
        user = sim.user(USER)
        wamid = await user.send_voice(VOICE)
        await user.next_reply()
        await sim.settle()
        row = view.rows[USER].value
        entry = next(e for e in view.log[USER].messages if e.wamid == wamid)
        view.close()
    assert entry.transcript == heard
    assert '<span class="wa-transcript">“&lt;b&gt;coffee&lt;/b&gt; please”</span>' in row


async def test_a_voice_note_to_a_handed_off_conversation_is_transcribed_for_the_operator(
    whisper: FakeWhisper,
) -> None:
    """While a person has the conversation, a voice note is not answered by the agent, but
    it is transcribed (the operator cannot listen to it in the widget): the history records
    the transcript and the simulator sees it. When the transcription fails the history
    names the voice note and no apology is sent (the operator answers)."""
    whisper.script.append((200, {"text": SAID}))
    whisper.script.append((500, openai_error("The server had an error", "server_error")))
    bot = Echo()
    async with (
        transcriber(whisper, max_retries=0) as transcribe,
        Simulator(bot, mode="chat", transcriber=transcribe) as sim,
    ):
        user = sim.user(USER)
        await sim.interface.handoff(USER)
        heard = await user.send_voice(VOICE)
        await sim.settle()
        await user.send_voice(VOICE)
        await sim.settle()
        history = await sim.interface.store.get_history(sim.interface.name, USER)
        assert user.take_replies() == []
    assert bot.requests == []
    assert [(t.role, t.text) for t in history] == [
        ("user", f"[voice note] {SAID}"),
        ("user", "[voice note]"),
    ]
    assert sim.transcripts == {heard: SAID}
