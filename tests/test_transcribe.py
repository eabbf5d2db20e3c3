"""OpenAITranscriber against a fake transcription server on 127.0.0.1.

The fake is a raw ASGI app run by uvicorn (``BackgroundServer``): it parses the multipart
upload the way a server would and answers from a script with the shapes OpenAI's
``/v1/audio/transcriptions`` uses (``{"text": ...}``; errors ``{"error": {"message", "type",
"param", "code"}}``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import pytest

from wa_agent import ConfigurationError, OpenAITranscriber, TranscriptionError, WAAgentError
from wa_agent.server import BackgroundServer
from wa_agent.testing import silent_voice_note
from wa_agent.transcribe import audio_filename

KEY = "sk-proj-transcribe-test-0123456789"
VOICE = silent_voice_note(0.5)
OGG_OPUS = "audio/ogg; codecs=opus"


def openai_error(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


@dataclass
class Upload:
    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class FakeWhisper:
    """Records each upload and answers from ``script`` (the last entry repeats): an entry is
    ``(status, body)`` or ``("sleep", seconds, (status, body))``."""

    script: list[Any] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    url: str = ""

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
        form = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode() + raw
        )
        fields: dict[str, str] = {}
        upload = Upload(scope["path"], headers, fields, None, None, b"")
        for part in form.iter_parts() if form.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                upload.filename = part.get_filename()
                upload.content_type = part.get_content_type()
                upload.data = payload
            else:
                fields[str(name)] = payload.decode()
        self.uploads.append(upload)
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if entry[0] == "sleep":
            await asyncio.sleep(entry[1])
            entry = entry[2]
        status, body = entry
        payload = json.dumps(body).encode() if isinstance(body, dict) else str(body).encode()
        ctype = b"application/json" if isinstance(body, dict) else b"text/html"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}
        )
        await send({"type": "http.response.body", "body": payload})


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
    _server.script.clear()
    _server.uploads.clear()
    return _server


class Slept(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(whisper: FakeWhisper, **kw: Any) -> OpenAITranscriber:
    kw.setdefault("api_key", KEY)
    kw.setdefault("sleep", Slept())
    return OpenAITranscriber(base_url=whisper.url + "/v1", **kw)


async def test_voice_note_is_posted_as_multipart_and_the_text_returned(
    whisper: FakeWhisper,
) -> None:
    """The OGG/Opus bytes are uploaded to /v1/audio/transcriptions as voice.ogg with the
    model, language and prompt fields and the bearer key; the JSON text comes back
    stripped."""
    whisper.script.append((200, {"text": " Hello from a voice note. "}))
    async with make(whisper, language="de", prompt="wa_agent") as transcribe:
        text = await transcribe(VOICE, OGG_OPUS)
    assert text == "Hello from a voice note."
    [upload] = whisper.uploads
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.headers["authorization"] == f"Bearer {KEY}"
    assert upload.fields == {
        "model": "whisper-1",
        "response_format": "json",
        "language": "de",
        "prompt": "wa_agent",
    }
    assert (upload.filename, upload.content_type) == ("voice.ogg", "audio/ogg")
    assert upload.data == VOICE


async def test_gpt_4o_transcribe_shape_and_one_shared_client(whisper: FakeWhisper) -> None:
    """The gpt-4o-*-transcribe answer (text plus usage) works, and every call reuses one
    client, which aclose() closes (a later call opens a new one)."""
    whisper.script.append(
        (
            200,
            {
                "text": "first",
                "usage": {
                    "type": "tokens",
                    "input_tokens": 14,
                    "output_tokens": 45,
                    "total_tokens": 59,
                },
            },
        )
    )
    transcribe = make(whisper, model="gpt-4o-mini-transcribe")
    assert await transcribe(VOICE, OGG_OPUS) == "first"
    client = transcribe._client
    assert await transcribe(b"ID3" + bytes(64), "audio/mpeg") == "first"
    assert transcribe._client is client and client is not None
    assert whisper.uploads[0].fields["model"] == "gpt-4o-mini-transcribe"
    assert whisper.uploads[1].filename == "voice.mp3"
    await transcribe.aclose()
    assert client.is_closed and transcribe._client is None
    await transcribe.aclose()  # idempotent


async def test_a_shared_client_is_not_closed(whisper: FakeWhisper) -> None:
    """A client passed in is used and left open by aclose()."""
    whisper.script.append((200, {"text": "ok"}))
    async with httpx.AsyncClient() as client:
        transcribe = make(whisper, client=client)
        assert await transcribe(VOICE, OGG_OPUS) == "ok"
        await transcribe.aclose()
        assert not client.is_closed


async def test_rejected_key_is_a_clear_error_without_the_key(whisper: FakeWhisper) -> None:
    """401 raises TranscriptionError naming where the key comes from, not retried, with
    the key redacted from the server's message."""
    whisper.script.append(
        (
            401,
            openai_error(
                f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key"
            ),
        )
    )
    transcribe = make(whisper)
    with pytest.raises(TranscriptionError) as caught:
        await transcribe(VOICE, OGG_OPUS)
    await transcribe.aclose()
    error = caught.value
    assert isinstance(error, WAAgentError)
    assert error.http_status == 401 and error.error_type == "invalid_api_key"
    assert not error.retryable and "api_key" in str(error) and KEY not in str(error)
    assert len(whisper.uploads) == 1


async def test_bad_audio_is_not_retried(whisper: FakeWhisper) -> None:
    """A 400 (the format OpenAI cannot read) raises at once with OpenAI's message."""
    whisper.script.append(
        (
            400,
            openai_error(
                "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', "
                "'mpga', 'oga', 'ogg', 'wav', 'webm']",
                "invalid_request_error",
            ),
        )
    )
    transcribe = make(whisper)
    with pytest.raises(TranscriptionError, match="Invalid file format") as caught:
        await transcribe(b"#!AMR\n" + bytes(32), "audio/amr")
    await transcribe.aclose()
    assert caught.value.http_status == 400 and not caught.value.retryable
    assert whisper.uploads[0].filename == "voice.amr"


async def test_5xx_and_429_are_retried_then_succeed_or_give_up(whisper: FakeWhisper) -> None:
    """A 500 then a 200 succeeds after one backoff; 429 until max_retries gives up with a
    retryable error; an HTML 502 page reads as HTTP 502."""
    whisper.script.extend(
        [
            (500, openai_error("The server had an error", "server_error")),
            (200, {"text": "after retry"}),
        ]
    )
    slept = Slept()
    transcribe = make(whisper, sleep=slept)
    assert await transcribe(VOICE, OGG_OPUS) == "after retry"
    assert len(slept) == 1 and 0 < slept[0] <= 0.5
    whisper.script[:] = [
        (429, openai_error("Rate limit reached", "requests", "rate_limit_exceeded"))
    ]
    with pytest.raises(TranscriptionError) as caught:
        await transcribe(VOICE, OGG_OPUS)
    assert caught.value.retryable and caught.value.http_status == 429
    assert len(whisper.uploads) == 2 + 3  # max_retries=2: three attempts
    whisper.script[:] = [(502, "<html>Bad Gateway</html>")]
    with pytest.raises(TranscriptionError, match="HTTP 502"):
        await transcribe(VOICE, OGG_OPUS)
    await transcribe.aclose()


async def test_timeout_is_bounded(whisper: FakeWhisper) -> None:
    """A server that does not answer within timeout raises a retryable TranscriptionError
    after the retries."""
    whisper.script.append(("sleep", 2.0, (200, {"text": "too late"})))
    transcribe = make(whisper, timeout=0.2, max_retries=1)
    with pytest.raises(TranscriptionError, match="did not transcribe within 0.2 s") as caught:
        await transcribe(VOICE, OGG_OPUS)
    await transcribe.aclose()
    assert caught.value.retryable and caught.value.http_status is None


async def test_answers_without_text_and_unreachable_servers(whisper: FakeWhisper) -> None:
    """A 200 that is not the transcription shape, and a closed port, raise clear errors."""
    whisper.script.append((200, {"id": "not-a-transcription"}))
    transcribe = make(whisper, max_retries=0)
    with pytest.raises(TranscriptionError, match="without a 'text' field"):
        await transcribe(VOICE, OGG_OPUS)
    await transcribe.aclose()
    closed = OpenAITranscriber(base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(TranscriptionError, match="could not reach"):
        await closed(VOICE, OGG_OPUS)
    await closed.aclose()


async def test_empty_audio_is_refused_before_any_request(whisper: FakeWhisper) -> None:
    """Empty audio raises without a request."""
    transcribe = make(whisper)
    with pytest.raises(TranscriptionError, match="empty"):
        await transcribe(b"", OGG_OPUS)
    assert whisper.uploads == []


async def test_local_server_gets_no_key_unless_given(
    whisper: FakeWhisper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With base_url and no api_key, no Authorization header is sent (an OPENAI_API_KEY in
    the environment is not leaked to a local server)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    whisper.script.append((200, {"text": "local"}))
    async with OpenAITranscriber(base_url=whisper.url + "/v1") as transcribe:
        assert await transcribe(VOICE, OGG_OPUS) == "local"
    assert "authorization" not in whisper.uploads[0].headers


def test_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key or base_url the error names OPENAI_API_KEY; the key comes from the
    environment otherwise; repr masks it; WhatsApp MIME types map to file names."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAITranscriber()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    transcriber = OpenAITranscriber("gpt-4o-mini-transcribe")
    assert transcriber.url == "https://api.openai.com/v1/audio/transcriptions"
    assert KEY not in repr(transcriber)
    with pytest.raises(ValueError, match="timeout"):
        OpenAITranscriber(timeout=0)
    assert [
        audio_filename(m)
        for m in (OGG_OPUS, "audio/mpeg", "audio/mp4", "audio/aac", "audio/x-unknown")
    ] == ["voice.ogg", "voice.mp3", "voice.m4a", "voice.aac", "voice.ogg"]
