"""Sender against the Cloud API emulator on a real loopback port.

Bodies of every send type, retries per error code, non-retryable errors, the per-recipient
pair-rate wait, read timeouts that must not be resent, rate limiting with an injected
clock, the in-flight bound, media round trips and the host allow-list for the token.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx
import pytest

from tests.helpers import httpx_garbage
from wa_agent._transport import FastTransport
from wa_agent.agents import Contact
from wa_agent.exceptions import (
    AccountError,
    AuthenticationError,
    InvalidRequestError,
    MediaError,
    OutsideServiceWindow,
    PermissionDeniedError,
    RateLimitError,
    RecipientError,
    ServerError,
    TemplateError,
    TransportError,
    WhatsAppAPIError,
)
from wa_agent.secret import Secret
from wa_agent.sender import (
    MediaInfo,
    RateLimiter,
    RetryPolicy,
    Sender,
    SenderStats,
    is_voice_note,
)
from wa_agent.server import BackgroundServer
from wa_agent.testing import CloudAPIEmulator
from wa_agent.testing.audio import silent_voice_note

TOKEN = "EAAG-test-token-5f3a"
PNID = "100000000000001"
USER = "15551230001"
OTHER = "15551230002"
THIRD = "15551230003"

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(500)
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(300)
MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(300)
OGG = b"OggS" + bytes(300)
PDF = b"%PDF-1.4\n" + bytes(300)


class Served(NamedTuple):
    emulator: CloudAPIEmulator
    url: str


def fast(**kwargs: Any) -> RetryPolicy:
    """A retry policy whose waits are a thousandth of the real ones."""
    kwargs.setdefault("scale", 0.001)
    kwargs.setdefault("rng", random.Random(7))
    return RetryPolicy(**kwargs)


class Recorder:
    """An injected sleep that records what it was asked to wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop for the module, so one emulator server serves every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Served]:
    emulator = CloudAPIEmulator(access_token=TOKEN, phone_number_ids=[PNID])
    async with emulator.serve() as url:
        yield Served(emulator, url)


@pytest.fixture
def served(server: Served) -> Served:
    """The module's emulator, reset to a fresh state for this test."""
    server.emulator.reset()
    return server


@pytest.fixture(params=["fast", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    """The transport the Senders of a test send through: the lean FastTransport (what a
    Sender uses by default) or httpx's own (httpcore, what it falls back to behind a
    proxy). Every test using ``make_sender`` runs on both."""
    kind: str = request.param
    return kind


@pytest.fixture
async def make_sender(served: Served, transport: str) -> AsyncIterator[Callable[..., Sender]]:
    """Factory of Senders pointed at the emulator, on the ``transport`` of this run; all
    closed at teardown.

    Unless ``own_client=True`` (the Sender builds its client with ``transport="auto"`` or
    ``"httpx"``), each Sender shares a test client: on httpcore without keep-alive (a new
    connection per request sidesteps the 40 ms Nagle/delayed-ACK stall of reused loopback
    connections, which keeps this module fast), on FastTransport with its keep-alive pool
    (its connections set TCP_NODELAY). A test passing ``client=`` brings its own.
    """
    senders: list[Sender] = []
    clients: list[httpx.AsyncClient] = []

    def factory(**kwargs: Any) -> Sender:
        kwargs.setdefault("retry", fast())
        kwargs.setdefault("base_url", served.url)
        timeout = kwargs.pop("client_timeout", 10.0)
        if kwargs.pop("own_client", False):
            kwargs.setdefault("transport", "auto" if transport == "fast" else "httpx")
        elif "client" not in kwargs:
            if transport == "fast":
                client = httpx.AsyncClient(transport=FastTransport(), timeout=timeout)
            else:
                client = httpx.AsyncClient(
                    limits=httpx.Limits(max_keepalive_connections=0), timeout=timeout
                )
            clients.append(client)
            kwargs["client"] = client
        sender = Sender(kwargs.pop("access_token", TOKEN), PNID, **kwargs)
        senders.append(sender)
        return sender

    yield factory
    for sender in senders:
        await sender.aclose()
    for client in clients:
        await client.aclose()


def message_calls(emulator: CloudAPIEmulator) -> list[Any]:
    return [c for c in emulator.calls if c.endpoint == "messages"]


# ------------------------------------------------------------------ bodies

Op = Callable[[Sender, dict[str, str]], Awaitable[Any]]

# Each body follows an example of Meta's OpenAPI description (facebook/openapi,
# business-messaging-api_v23.0.yaml, requestBody examples of POST /{Version}/{Phone-Number-ID}/
# messages): text "Send Text Message"; text-reply-preview "Send Reply to Text Message" and
# "Send Text Message with Preview URL"; image-id "Send Image Message by ID"; image-link
# "Send Reply to Image Message by URL"; video "Send Video Message by ID"; audio "Send Audio
# Message by ID"; document "Send Document Message by ID"; sticker "Send Sticker Message by
# ID"; reaction "Send Reply with Reaction Message"; location "Send Location Message";
# location-reply "Send Reply to Location Message"; buttons "Send Reply Button"; list "Send
# List Message"; list-reply "Send Reply to List Message"; contacts "Send Contact Message";
# contacts-reply "Send Reply to Contact Message"; template "Send Message Template
# Interactive"; template-bare "Send Test Message". The yaml has no cta_url or voice example:
# cta_url follows Meta's "Interactive CTA URL messages" page and audio-voice its "Audio
# messages" page ("voice": true).
BODY_CASES: list[tuple[str, Op, str, Any, str | None]] = [
    ("text", lambda s, m: s.send_text(USER, "hello"), "text", {"body": "hello"}, None),
    (
        "text-reply-preview",
        lambda s, m: s.send_text(
            USER, "see https://example.com", reply_to="wamid.IN1", preview_url=True
        ),
        "text",
        {"body": "see https://example.com", "preview_url": True},
        "wamid.IN1",
    ),
    (
        "image-id",
        lambda s, m: s.send_image(USER, m["image"], caption="a cat"),
        "image",
        {"id": "<image>", "caption": "a cat"},
        None,
    ),
    (
        "image-link",
        lambda s, m: s.send_image(USER, "https://example.com/cat.jpg", reply_to="wamid.IN2"),
        "image",
        {"link": "https://example.com/cat.jpg"},
        "wamid.IN2",
    ),
    (
        "video",
        lambda s, m: s.send_video(USER, m["video"], caption="clip"),
        "video",
        {"id": "<video>", "caption": "clip"},
        None,
    ),
    ("audio", lambda s, m: s.send_audio(USER, m["audio"]), "audio", {"id": "<audio>"}, None),
    (
        "document",
        lambda s, m: s.send_document(USER, m["document"], caption="Q3", filename="q3.pdf"),
        "document",
        {"id": "<document>", "caption": "Q3", "filename": "q3.pdf"},
        None,
    ),
    (
        "sticker",
        lambda s, m: s.send_sticker(USER, m["sticker"]),
        "sticker",
        {"id": "<sticker>"},
        None,
    ),
    (
        "reaction",
        lambda s, m: s.send_reaction(USER, "wamid.IN1", "👍"),
        "reaction",
        {"message_id": "wamid.IN1", "emoji": "👍"},
        None,
    ),
    (
        "location",
        lambda s, m: s.send_location(USER, 52.52, 13.405, name="Berlin", address="Mitte"),
        "location",
        {"latitude": 52.52, "longitude": 13.405, "name": "Berlin", "address": "Mitte"},
        None,
    ),
    (
        "location-reply",
        lambda s, m: s.send_location(USER, 37.758056, -122.425332, reply_to="wamid.IN1"),
        "location",
        {"latitude": 37.758056, "longitude": -122.425332},
        "wamid.IN1",
    ),
    (
        "audio-voice",
        lambda s, m: s.send_audio(USER, m["audio"], voice=True),
        "audio",
        {"id": "<audio>", "voice": True},
        None,
    ),
    (
        "contacts",
        lambda s, m: s.send_contacts(
            USER,
            [
                Contact(
                    "John Smith",
                    phones=("+1 (650) 555-1234",),
                    emails=("test@fb.com",),
                    organization="WhatsApp",
                    urls=("https://www.facebook.com",),
                ),
                {
                    "name": {"formatted_name": "Jane", "first_name": "Jane"},
                    "phones": [
                        {"phone": "+1 (940) 555-1234", "type": "HOME", "wa_id": "19405551234"}
                    ],
                },
            ],
        ),
        "contacts",
        [
            {
                "name": {
                    "formatted_name": "John Smith",
                    "first_name": "John",
                    "last_name": "Smith",
                },
                "phones": [{"phone": "+1 (650) 555-1234", "type": "CELL"}],
                "emails": [{"email": "test@fb.com", "type": "WORK"}],
                "org": {"company": "WhatsApp"},
                "urls": [{"url": "https://www.facebook.com", "type": "WORK"}],
            },
            {
                "name": {"formatted_name": "Jane", "first_name": "Jane"},
                "phones": [{"phone": "+1 (940) 555-1234", "type": "HOME", "wa_id": "19405551234"}],
            },
        ],
        None,
    ),
    (
        "contacts-reply",
        lambda s, m: s.send_contacts(USER, ["Alan"], reply_to="wamid.IN5"),
        "contacts",
        [{"name": {"formatted_name": "Alan", "first_name": "Alan"}}],
        "wamid.IN5",
    ),
    (
        "cta-url",
        lambda s, m: s.send_cta_url(
            USER,
            "Tap the button below to see available dates.",
            "See Dates",
            "https://www.luckyshrub.com?clickID=kqDG",
            header="Available Dates",
            footer="Dates subject to change.",
            reply_to="wamid.IN6",
        ),
        "interactive",
        {
            "type": "cta_url",
            "body": {"text": "Tap the button below to see available dates."},
            "action": {
                "name": "cta_url",
                "parameters": {
                    "display_text": "See Dates",
                    "url": "https://www.luckyshrub.com?clickID=kqDG",
                },
            },
            "header": {"type": "text", "text": "Available Dates"},
            "footer": {"text": "Dates subject to change."},
        },
        "wamid.IN6",
    ),
    (
        "buttons",
        lambda s, m: s.send_buttons(
            USER,
            "Pick one",
            [("yes", "Yes"), {"id": "no", "title": "No"}, "Maybe"],
            header="Question",
            footer="tap a button",
            reply_to="wamid.IN3",
        ),
        "interactive",
        {
            "type": "button",
            "body": {"text": "Pick one"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                    {"type": "reply", "reply": {"id": "no", "title": "No"}},
                    {"type": "reply", "reply": {"id": "Maybe", "title": "Maybe"}},
                ]
            },
            "header": {"type": "text", "text": "Question"},
            "footer": {"text": "tap a button"},
        },
        "wamid.IN3",
    ),
    (
        "list",
        lambda s, m: s.send_list(
            USER,
            "Choose a plan",
            "Plans",
            [
                {"title": "Monthly", "rows": [("m1", "Basic"), ("m2", "Pro", "more seats")]},
                {"title": "Yearly", "rows": [{"id": "y1", "title": "Basic"}]},
            ],
            header="Plans",
            footer="prices in EUR",
        ),
        "interactive",
        {
            "type": "list",
            "body": {"text": "Choose a plan"},
            "action": {
                "button": "Plans",
                "sections": [
                    {
                        "title": "Monthly",
                        "rows": [
                            {"id": "m1", "title": "Basic"},
                            {"id": "m2", "title": "Pro", "description": "more seats"},
                        ],
                    },
                    {"title": "Yearly", "rows": [{"id": "y1", "title": "Basic"}]},
                ],
            },
            "header": {"type": "text", "text": "Plans"},
            "footer": {"text": "prices in EUR"},
        },
        None,
    ),
    (
        "list-reply",
        lambda s, m: s.send_list(USER, "Choose", "Open", [("a", "A")], reply_to="wamid.IN4"),
        "interactive",
        {
            "type": "list",
            "body": {"text": "Choose"},
            "action": {"button": "Open", "sections": [{"rows": [{"id": "a", "title": "A"}]}]},
        },
        "wamid.IN4",
    ),
    (
        "list-flat-rows",
        lambda s, m: s.send_list(USER, "Choose", "Open", [("a", "A"), ("b", "B", "bee")]),
        "interactive",
        {
            "type": "list",
            "body": {"text": "Choose"},
            "action": {
                "button": "Open",
                "sections": [
                    {
                        "rows": [
                            {"id": "a", "title": "A"},
                            {"id": "b", "title": "B", "description": "bee"},
                        ]
                    }
                ],
            },
        },
        None,
    ),
    (
        "template",
        lambda s, m: s.send_template(
            USER,
            "order_update",
            "de",
            [
                {"type": "body", "parameters": [{"type": "text", "text": "42"}]},
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "track"}],
                },
            ],
        ),
        "template",
        {
            "name": "order_update",
            "language": {"code": "de"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "42"}]},
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "track"}],
                },
            ],
        },
        None,
    ),
    (
        "template-bare",
        lambda s, m: s.send_template(USER, "hello_world"),
        "template",
        {"name": "hello_world", "language": {"code": "en_US"}},
        None,
    ),
]


@pytest.mark.parametrize(
    ("op", "kind", "content", "reply_to"),
    [case[1:] for case in BODY_CASES],
    ids=[case[0] for case in BODY_CASES],
)
async def test_send_body_matches_the_reference(
    served: Served,
    make_sender: Callable[..., Sender],
    op: Op,
    kind: str,
    content: Any,
    reply_to: str | None,
) -> None:
    """Each send method posts exactly the body of reference/cloud_api.md §8 and returns
    the wamid the API answered."""
    emulator = served.emulator
    media = {
        "image": emulator.add_media(PNG, "image/png"),
        "video": emulator.add_media(MP4, "video/mp4"),
        "audio": emulator.add_media(OGG, "audio/ogg; codecs=opus"),
        "document": emulator.add_media(PDF, "application/pdf"),
        "sticker": emulator.add_media(WEBP, "image/webp"),
    }
    expected_content: Any = (
        content
        if isinstance(content, list)
        else {
            k: (media[v[1:-1]] if isinstance(v, str) and v.startswith("<") else v)
            for k, v in content.items()
        }
    )
    sender = make_sender()
    result = await op(sender, media)
    [sent] = emulator.messages
    expected = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": kind,
        kind: expected_content,
    }
    if reply_to:
        expected["context"] = {"message_id": reply_to}
    assert sent.body == expected
    assert result == sent.wamid or result == [sent.wamid]
    assert sender.stats.sent == 1


async def test_mark_read_with_typing_indicator(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """mark_read posts the read receipt (and typing indicator) body and records no message."""
    sender = make_sender()
    await sender.mark_read("wamid.IN9", typing=True)
    await sender.mark_read("wamid.IN8")
    bodies = [c.body for c in served.emulator.calls]
    assert bodies == [
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.IN9",
            "typing_indicator": {"type": "text"},
        },
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN8"},
    ]
    assert [(r.message_id, r.typing) for r in served.emulator.reads] == [
        ("wamid.IN9", True),
        ("wamid.IN8", False),
    ]
    assert served.emulator.messages == []


async def test_long_text_is_sent_in_order_quoting_only_first(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A text over 4096 characters goes out as several messages, in order, every one
    within the limit; only the first quotes the inbound message."""
    paragraphs = [f"Paragraph {n}. " + ("lorem ipsum " * 120) for n in range(8)]
    text = "\n\n".join(paragraphs)
    sender = make_sender()
    wamids = await sender.send_text("+1 555-123-0001", text, reply_to="wamid.Q")
    sent = served.emulator.messages
    assert len(sent) == len(wamids) >= 3
    assert [m.wamid for m in sent] == wamids
    assert all(len(m.content["body"]) <= 4096 for m in sent)
    assert " ".join(m.content["body"] for m in sent).split() == text.split()
    assert [m.reply_to for m in sent] == ["wamid.Q"] + [None] * (len(sent) - 1)
    assert {m.to for m in sent} == {USER}


async def test_media_bytes_and_paths_are_uploaded_first(
    served: Served, make_sender: Callable[..., Sender], tmp_path: Path
) -> None:
    """bytes and paths are uploaded (MIME sniffed or guessed, document filename from the
    path) and the message refers to the new media id."""
    report = tmp_path / "report.pdf"
    report.write_bytes(PDF)
    sender = make_sender()
    await sender.send_image(USER, PNG, caption="chart")
    await sender.send_document(USER, report)
    uploads = [c for c in served.emulator.calls if c.endpoint == "upload"]
    assert [u.body["type"] for u in uploads] == ["image/png", "application/pdf"]
    assert uploads[1].body["file"]["filename"] == "report.pdf"
    image, document = served.emulator.messages
    assert served.emulator.media[image.content["id"]].data == PNG
    assert served.emulator.media[document.content["id"]].data == PDF
    assert document.content == {"id": document.content["id"], "filename": "report.pdf"}


async def test_ogg_opus_audio_goes_out_as_a_voice_note(
    served: Served, make_sender: Callable[..., Sender], tmp_path: Path
) -> None:
    """OGG/Opus bytes or an .ogg file are sent with "voice": true (Meta's voice message);
    MP3 or OGG without Opus are plain audio; voice=False and voice=True override."""
    note = silent_voice_note(0.5)
    path = tmp_path / "note.ogg"
    path.write_bytes(note)
    sender = make_sender()
    await sender.send_audio(USER, note)
    await sender.send_audio(USER, path)
    await sender.send_audio(USER, b"ID3" + bytes(300))
    await sender.send_audio(USER, OGG)  # Ogg container without an OpusHead packet
    await sender.send_audio(USER, note, voice=False)
    await sender.send_audio(USER, "https://example.com/a.mp3", voice=True)
    voices = [m.content.get("voice") for m in served.emulator.messages]
    assert voices == [True, True, None, None, None, True]
    uploads = [c for c in served.emulator.calls if c.endpoint == "upload"]
    assert uploads[0].body["type"] == "audio/ogg"
    assert is_voice_note(note) and not is_voice_note(b"ID3")
    assert is_voice_note(b"", "audio/ogg; codecs=opus")


async def test_rich_sends_refuse_bad_arguments_before_any_call(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A reaction without a target, a location out of range and no contacts raise before
    anything reaches the API."""
    sender = make_sender()
    with pytest.raises(ValueError, match="message_id"):
        await sender.send_reaction(USER, "", "👍")
    with pytest.raises(ValueError, match="latitude/longitude"):
        await sender.send_location(USER, 91.0, 0.0)
    with pytest.raises(ValueError, match="at least one contact"):
        await sender.send_contacts(USER, [])
    assert served.emulator.calls == []


async def test_emulator_refusals_of_rich_sends_raise_invalid_request(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """What the emulator refuses as Meta does (a 21-character CTA label, a fourth reply
    button) raises InvalidRequestError with code 131009 and Meta's details, not retried."""
    sender = make_sender()
    with pytest.raises(InvalidRequestError) as caught:
        await sender.send_cta_url(USER, "body", "L" * 21, "https://example.com")
    assert caught.value.code == 131009 and "Max length: 20" in str(caught.value.details)
    with pytest.raises(InvalidRequestError, match="Max allowed buttons: 3"):
        await sender.send_buttons(USER, "Pick", ["a", "b", "c", "d"])
    assert len(message_calls(served.emulator)) == 2 and sender.stats.retries == 0


async def test_wrong_media_is_refused_before_any_call(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Unsupported MIME types, the wrong kind for the method, oversize files, unknown
    bytes and path-like strings are refused locally; nothing reaches the API."""
    sender = make_sender()
    with pytest.raises(MediaError, match="does not take"):
        await sender.upload_media(b"MZ\x90\x00", "application/x-msdownload")
    with pytest.raises(MediaError, match="cannot be sent as sticker"):
        await sender.send_sticker(USER, PNG)
    with pytest.raises(MediaError, match="limit"):
        await sender.send_image(USER, b"\xff\xd8\xff" + bytes(5 * 1024 * 1024))
    with pytest.raises(MediaError, match="MIME"):
        await sender.upload_media(b"no magic here")
    with pytest.raises(ValueError, match="pathlib.Path"):
        await sender.send_image(USER, "photos/cat.png")
    with pytest.raises(ValueError, match="caption"):
        await sender.send_audio(USER, OGG, caption="no")
    assert served.emulator.calls == []


# ------------------------------------------------------------------ retries

RETRYABLE = [
    (130429, None),
    (131056, None),
    (1, None),
    (2, None),
    (131000, None),
    (131016, None),
    (None, 500),
    (None, 502),
    (None, 503),
    (None, 429),
]


@pytest.mark.parametrize(("code", "status"), RETRYABLE)
async def test_retryable_fault_ends_in_exactly_one_accepted_send(
    served: Served, make_sender: Callable[..., Sender], code: int | None, status: int | None
) -> None:
    """Two failures with a retryable code (or a bare 5xx/429 page) are retried and the
    message is accepted exactly once."""
    served.emulator.fail_next(2, code, status)
    sender = make_sender()
    [wamid] = await sender.send_text(USER, "retry me")
    assert [m.wamid for m in served.emulator.messages] == [wamid]
    assert len(message_calls(served.emulator)) == 3
    assert sender.stats == SenderStats(requests=3, sent=1, retries=2, failures=0)


class FlakyTransport(httpx.AsyncBaseTransport):
    """Forwards to a real transport, failing the first ``failures`` requests: before they
    are sent (``after_send=False``: connection refused) or after the server answered
    (``after_send=True``: the connection dropped while reading the response)."""

    def __init__(self, failures: int, *, after_send: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        self.failures = failures
        self.after_send = after_send

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures and not self.after_send:
            self.failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if self.failures:
            self.failures -= 1
            await response.aclose()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_connection_errors_are_retried(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Refused connections (the request never left) are retried; one message is accepted."""
    async with httpx.AsyncClient(transport=FlakyTransport(2)) as client:
        sender = make_sender(client=client)
        await sender.send_text(USER, "hello")
    assert len(served.emulator.messages) == 1
    assert sender.stats.retries == 2


async def test_connection_errors_give_up_after_the_transient_attempts(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Connection failures past ``transient_attempts`` raise TransportError saying the
    request did not reach Meta."""
    async with httpx.AsyncClient(transport=FlakyTransport(5)) as client:
        sender = make_sender(client=client, retry=fast(transient_attempts=2))
        with pytest.raises(TransportError) as info:
            await sender.send_text(USER, "hello")
    assert info.value.maybe_delivered is False
    assert info.value.retryable is True
    assert served.emulator.calls == []


async def test_dropped_answer_to_a_send_is_not_resent(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """When the connection drops after the send reached the API, the Sender raises
    TransportError(maybe_delivered=True) and does not send again (no duplicate)."""
    async with httpx.AsyncClient(transport=FlakyTransport(1, after_send=True)) as client:
        sender = make_sender(client=client)
        with pytest.raises(TransportError) as info:
            await sender.send_text(USER, "exactly once")
    assert info.value.maybe_delivered is True
    assert info.value.retryable is False
    assert served.emulator.texts_to(USER) == ["exactly once"]
    assert len(message_calls(served.emulator)) == 1


async def test_dropped_answer_to_mark_read_is_retried(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A read receipt is idempotent, so a dropped answer is simply retried."""
    async with httpx.AsyncClient(transport=FlakyTransport(1, after_send=True)) as client:
        sender = make_sender(client=client)
        await sender.mark_read("wamid.IN1")
    assert [r.message_id for r in served.emulator.reads] == ["wamid.IN1", "wamid.IN1"]


async def test_read_timeout_on_a_send_is_not_resent(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """The API accepts the message but never answers; the read timeout raises
    TransportError(maybe_delivered=True) and the emulator holds exactly one message."""
    served.emulator.hang_next(1)
    sender = make_sender(timeout=httpx.Timeout(5.0, read=0.2))
    with pytest.raises(TransportError, match="not resent") as info:
        await sender.send_text(USER, "slow")
    assert info.value.maybe_delivered is True
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert served.emulator.texts_to(USER) == ["slow"]
    assert len(message_calls(served.emulator)) == 1
    assert sender.stats.failures == 1


async def test_resend_after_read_timeout_can_be_opted_into(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """With ``resend_on_read_timeout=True`` the send is retried (and may then duplicate,
    which the emulator record shows)."""
    served.emulator.hang_next(1)
    sender = make_sender(
        timeout=httpx.Timeout(5.0, read=0.2), retry=fast(resend_on_read_timeout=True)
    )
    await sender.send_text(USER, "twice")
    assert served.emulator.texts_to(USER) == ["twice", "twice"]


NON_RETRYABLE = [
    (131047, OutsideServiceWindow, 400, False),
    (131026, RecipientError, 400, False),
    (190, AuthenticationError, 401, False),
    (100, InvalidRequestError, 400, False),
    (131009, InvalidRequestError, 400, False),
    (132001, TemplateError, 400, False),
    (10, PermissionDeniedError, 403, False),
    (368, AccountError, 400, False),
    (131049, RateLimitError, 400, False),
    (4, RateLimitError, 429, True),
    (131057, ServerError, 503, True),
]


@pytest.mark.parametrize(("code", "cls", "status", "retryable"), NON_RETRYABLE)
async def test_non_retryable_code_raises_at_once(
    served: Served,
    make_sender: Callable[..., Sender],
    code: int,
    cls: type[WhatsAppAPIError],
    status: int,
    retryable: bool,
) -> None:
    """A code the policy does not retry raises its WhatsAppAPIError subclass after one
    call, carrying code, details, http_status and retryable."""
    recorder = Recorder()
    served.emulator.fail_next(1, code, status, details=f"details for {code}")
    sender = make_sender(retry=fast(sleep=recorder))
    with pytest.raises(cls) as info:
        await sender.send_text(USER, "nope")
    error = info.value
    assert type(error) is cls
    assert (error.code, error.http_status, error.retryable) == (code, status, retryable)
    assert error.details == f"details for {code}"
    assert error.fbtrace_id
    assert len(message_calls(served.emulator)) == 1
    assert recorder.waits == []
    assert served.emulator.messages == []
    assert sender.stats == SenderStats(requests=1, sent=0, retries=0, failures=1)


async def test_expired_and_wrong_tokens_raise_authentication_error(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """An expired token (190) and a wrong token both raise AuthenticationError at once."""
    served.emulator.expire_token()
    with pytest.raises(AuthenticationError) as info:
        await make_sender().send_text(USER, "x")
    assert info.value.code == 190 and info.value.http_status == 401
    served.emulator.set_token(TOKEN)
    with pytest.raises(AuthenticationError):
        await make_sender(access_token="wrong").send_text(USER, "x")
    assert await make_sender().send_text(USER, "works again")


async def test_backoff_schedules(served: Served, make_sender: Callable[..., Sender]) -> None:
    """130429 waits base·2^n (1, 2, 4 s), 131056 waits 4^n (1, 4, 16 s), transient codes
    transient_delay·2^n (0.5, 1 s); with jitter off and scale 1 the waits are exact."""
    recorder = Recorder()
    sender = make_sender(retry=RetryPolicy(jitter=0, sleep=recorder), rate_limit=None)
    served.emulator.fail_next(3, 130429)
    await sender.send_text(USER, "a")
    served.emulator.fail_next(3, 131056)
    await sender.send_text(USER, "b")
    served.emulator.fail_next(2, 131000)
    await sender.send_text(USER, "c")
    assert recorder.waits[:3] == [1.0, 2.0, 4.0]
    assert recorder.waits[3:6] == pytest.approx([1.0, 4.0, 16.0], abs=0.05)
    assert recorder.waits[6:] == [0.5, 1.0]
    assert served.emulator.texts_to(USER) == ["a", "b", "c"]


async def test_jitter_stays_within_its_band() -> None:
    """With jitter j the 130429 wait lies within ±j of the exponential value, capped at
    max_delay."""
    policy = RetryPolicy(jitter=0.25, rng=random.Random(1), max_delay=3.0)
    error = RateLimitError("x", code=130429, http_status=429)
    for attempt in range(1, 5):
        wait = policy.delay(error, attempt)
        assert wait is not None
        base = min(2.0 ** (attempt - 1), 3.0)
        assert base * 0.75 <= wait <= min(base * 1.25, 3.0)
    assert policy.delay(error, 5) is None


async def test_retry_after_is_honoured(served: Served, make_sender: Callable[..., Sender]) -> None:
    """A Retry-After header lengthens the wait; one beyond max_delay is not waited for."""
    recorder = Recorder()
    clock = FakeClock()
    sender = make_sender(
        retry=RetryPolicy(jitter=0, sleep=recorder, max_delay=60),
        rate_limit=RateLimiter(80, clock=clock, sleep=clock.sleep),
    )
    served.emulator.fail_next(1, 130429, retry_after=7)
    await sender.send_text(USER, "later")
    assert clock.sleeps == [7.0]  # 130429 waits by pausing the number's bucket
    clock.sleeps.clear()
    served.emulator.fail_next(1, 131000, retry_after=3)
    await sender.send_text(USER, "transient")
    assert recorder.waits == [3.0]
    served.emulator.fail_next(1, 130429, retry_after=120)
    with pytest.raises(RateLimitError):
        await sender.send_text(USER, "much later")
    assert recorder.waits == [3.0]
    assert all(wait < 0.1 for wait in clock.sleeps)  # only bucket slots, no 120 s wait


async def test_gives_up_after_max_attempts(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Throttled on every attempt, the send raises RateLimitError after max_attempts calls,
    with a note saying so."""
    served.emulator.fail_next(10, 130429)
    sender = make_sender(retry=fast(max_attempts=3))
    with pytest.raises(RateLimitError) as info:
        await sender.send_text(USER, "x")
    assert len(message_calls(served.emulator)) == 3
    assert "gave up after 3 attempts" in (info.value.__notes__ or [""])[0]


@pytest.mark.parametrize("transient", [(131000, None), (None, 500)])
async def test_throttling_does_not_use_up_the_transient_budget(
    served: Served, make_sender: Callable[..., Sender], transient: tuple[int | None, int | None]
) -> None:
    """Two 130429s and then a transient 500 (Graph 131000 or a bare 5xx page), then success:
    each kind of failure has its own attempt budget, so the message is delivered exactly
    once (the 500 used to be refused as the third of three transient attempts)."""
    served.emulator.fail_next(2, 130429)
    served.emulator.fail_next(1, *transient)
    sender = make_sender()
    [wamid] = await sender.send_text(USER, "eventually")
    assert [m.wamid for m in served.emulator.messages] == [wamid]
    assert [c.status for c in message_calls(served.emulator)] == [429, 429, 500, 200]
    assert sender.stats == SenderStats(requests=4, sent=1, retries=3, failures=0)


async def test_every_kind_keeps_its_own_budget_within_the_overall_cap() -> None:
    """The policy counts attempts per kind of failure (``attempt``) and caps the call's
    attempts overall (``total``): a transient error after two throttles still gets its
    first transient wait; max_total_attempts ends the call whatever the mix."""
    policy = RetryPolicy(jitter=0)
    throttled = RateLimitError("x", code=130429, http_status=429)
    server_error = ServerError("x", code=131000, http_status=500)
    pair = RateLimitError("x", code=131056, http_status=429)
    assert policy.delay(server_error, 1, total=3) == 0.5
    assert policy.delay(server_error, 3, total=3) is None  # its own budget is spent
    assert policy.delay(pair, 1, total=9) == 1.0
    assert policy.delay(pair, 1, total=10) is None  # the overall cap
    assert policy.delay(throttled, 4, total=9) == 8.0
    assert policy.transport_delay(1, total=10) is None
    assert RetryPolicy(max_total_attempts=2).delay(throttled, 1, total=2) is None
    with pytest.raises(ValueError, match="max_total_attempts"):
        RetryPolicy(max_total_attempts=0)


async def test_pair_rate_limit_holds_only_that_recipient(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A 131056 for one recipient makes sends to that recipient wait (4^0 = 1 s, here held
    by a gated sleep) while sends to others go through; afterwards it is delivered once."""
    release = anyio.Event()
    waits: list[float] = []

    async def gated_sleep(seconds: float) -> None:
        waits.append(seconds)
        await release.wait()

    emulator = served.emulator
    sender = make_sender(retry=RetryPolicy(jitter=0, sleep=gated_sleep))
    emulator.pair_rate_limit(USER, 1)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.send_text, USER, "to user, first")
            while not waits:
                await anyio.sleep(0.005)
            tg.start_soon(sender.send_text, USER, "to user, second")
            while len(waits) < 2:
                await anyio.sleep(0.005)
            await sender.send_text(OTHER, "to other")
            await sender.send_text(THIRD, "to third")
            assert emulator.texts_to(USER) == []
            assert [m.to for m in emulator.messages] == [OTHER, THIRD]
            release.set()
    assert [m.to for m in emulator.messages][:2] == [OTHER, THIRD]
    assert sorted(emulator.texts_to(USER)) == ["to user, first", "to user, second"]
    assert waits[0] == 1.0
    assert 0 < waits[1] <= 1.0  # the second send waits out the same gate
    assert len(message_calls(emulator)) == 5


async def test_fail_rate_still_delivers_each_message_once(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """With a third of sends throttled at random, 20 concurrent sends each arrive exactly
    once."""
    served.emulator.fail_rate(0.33, 130429, seed=3)
    sender = make_sender(retry=fast(max_attempts=8))
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(sender.send_text, USER, f"m{n}")
    assert sorted(served.emulator.texts_to(USER)) == sorted(f"m{n}" for n in range(20))
    assert sender.stats.retries > 0
    assert sender.stats.sent == 20


# ------------------------------------------------------------------ limits


async def test_rate_limiter_spaces_calls_with_an_injected_clock() -> None:
    """A bucket of 10/s with burst 3 lets three calls through, then one every 0.1 s; a
    pause pushes the next call back by the pause."""
    clock = FakeClock()
    limiter = RateLimiter(10, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(6):
        await limiter.acquire()
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1])
    clock.sleeps.clear()
    limiter.pause(2.0)
    await limiter.acquire()
    assert clock.sleeps == pytest.approx([2.0])


async def test_rate_limiter_refills_while_idle() -> None:
    """After a quiet second the full burst is available again."""
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)  # burst defaults to the rate
    for _ in range(5):
        await limiter.acquire()
    assert clock.sleeps == []
    clock.now += 1.0
    for _ in range(5):
        await limiter.acquire()
    assert clock.sleeps == []
    await limiter.acquire()
    assert clock.sleeps == pytest.approx([0.2])


async def test_sender_sends_through_its_rate_limiter(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Sends take a slot of the number's bucket (read receipts do not by default; with
    ``read_receipts_count=True`` they do); a 130429 pauses the whole bucket for the
    backoff."""
    clock = FakeClock()
    limiter = RateLimiter(5, burst=1, clock=clock, sleep=clock.sleep)
    recorder = Recorder()
    sender = make_sender(rate_limit=limiter, retry=RetryPolicy(jitter=0, sleep=recorder))
    await sender.send_text(USER, "1")
    await sender.send_text(USER, "2")
    await sender.mark_read("wamid.X")
    assert clock.sleeps == pytest.approx([0.2])
    counting = make_sender(rate_limit=limiter, read_receipts_count=True)
    await counting.mark_read("wamid.Y")
    assert clock.sleeps == pytest.approx([0.2, 0.2])
    clock.sleeps.clear()
    served.emulator.fail_next(1, 130429)
    await sender.send_text(USER, "3")
    assert recorder.waits == []  # the backoff is the bucket's pause, not a separate sleep
    assert clock.sleeps == pytest.approx([0.2, 1.0])  # slot for "3", then the 1 s pause


@pytest.mark.parametrize(("receipts_count", "fake_seconds"), [(False, 1.9), (True, 3.9)])
async def test_read_receipts_leave_the_reply_rate_alone(
    served: Served,
    make_sender: Callable[..., Sender],
    receipts_count: bool,
    fake_seconds: float,
) -> None:
    """A bot marking each of 20 messages read (with typing) and answering it, on a 10/s
    number: the 20 replies take 1.9 s of the limiter's clock, i.e. the configured 10/s,
    because read receipts take no slot. Counting receipts (the old behaviour, now opt-in)
    halves the reply rate: 3.9 s. Every receipt and reply reaches the emulator."""
    clock = FakeClock()
    limiter = RateLimiter(10, burst=1, clock=clock, sleep=clock.sleep)
    sender = make_sender(rate_limit=limiter, read_receipts_count=receipts_count)
    start = clock.now
    for n in range(20):
        await sender.mark_read(f"wamid.IN{n}", typing=True)
        await sender.send_text(USER, f"reply {n}")
    assert clock.now - start == pytest.approx(fake_seconds)
    assert len(served.emulator.reads) == 20
    assert served.emulator.texts_to(USER) == [f"reply {n}" for n in range(20)]
    state = sender.rate_limit_state()
    assert state == {
        "messages_per_second": 10.0,
        "burst": 1.0,
        "read_receipts_count": receipts_count,
        "throttled_for": 0.0,
    }


async def test_read_receipts_wait_out_a_throttle_pause_without_a_slot(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """While the number is paused after a 130429 a read receipt waits the pause out (it is
    not sent into a throttled number) but takes no slot afterwards; rate_limit_state()
    shows the pause."""
    clock = FakeClock()
    limiter = RateLimiter(10, burst=1, clock=clock, sleep=clock.sleep)
    sender = make_sender(rate_limit=limiter)
    limiter.pause(5.0)
    assert sender.rate_limit_state()["throttled_for"] == 5.0
    await sender.mark_read("wamid.IN1")
    assert clock.sleeps == pytest.approx([5.0])
    assert sender.rate_limit_state()["throttled_for"] == 0.0
    await sender.mark_read("wamid.IN2")
    await sender.send_text(USER, "after the pause")
    assert clock.sleeps == pytest.approx([5.0])  # neither waited for a slot
    assert len(served.emulator.reads) == 2


async def test_rate_limit_state_without_a_limit(make_sender: Callable[..., Sender]) -> None:
    """With ``rate_limit=None`` the state says there is no limit."""
    assert make_sender(rate_limit=None).rate_limit_state() == {
        "messages_per_second": None,
        "burst": None,
        "read_receipts_count": False,
        "throttled_for": 0.0,
    }


class Counting:
    """ASGI wrapper counting concurrent requests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.now = 0
        self.peak = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


async def test_in_flight_requests_are_bounded() -> None:
    """With max_in_flight=2, eight concurrent sends never have more than two requests
    open at the server, and all are delivered."""
    emulator = CloudAPIEmulator(access_token=TOKEN)
    emulator.delay = 0.02
    counting = Counting(emulator)
    async with (
        BackgroundServer(counting) as server,
        Sender(TOKEN, PNID, base_url=server.url, max_in_flight=2) as sender,
        anyio.create_task_group() as tg,
    ):
        for n in range(8):
            tg.start_soon(sender.send_text, f"1555000{n:04d}", "hi")
    await emulator.aclose()
    assert counting.peak == 2
    assert len(emulator.messages) == 8


# ------------------------------------------------------------------ media


async def test_upload_then_download_round_trips_bytes(
    served: Served, make_sender: Callable[..., Sender], tmp_path: Path
) -> None:
    """Uploaded bytes (from memory or a file) download back identical, with their MIME
    type, and get_media_url reports size and checksum."""
    data = b"\x89PNG\r\n\x1a\n" + random.Random(5).randbytes(300_000)
    path = tmp_path / "voice.ogg"
    path.write_bytes(OGG)
    sender = make_sender()
    image_id = await sender.upload_media(data, "image/png")
    audio_id = await sender.upload_media(path)
    info = await sender.get_media_url(image_id)
    assert isinstance(info, MediaInfo)
    assert (info.id, info.mime_type, info.file_size) == (image_id, "image/png", len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await sender.download_media(image_id) == (data, "image/png")
    assert await sender.download_media(audio_id) == (OGG, "audio/ogg")
    download = [c for c in served.emulator.calls if c.endpoint == "download"]
    assert all(c.authorized for c in download)


async def test_inbound_media_added_by_a_simulator_downloads(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Media added with add_media (a user's photo) downloads with its MIME type."""
    media_id = served.emulator.add_media(JPEG, "image/jpeg", "photo.jpg")
    assert await make_sender().download_media(media_id) == (JPEG, "image/jpeg")


async def test_delete_media(served: Served, make_sender: Callable[..., Sender]) -> None:
    """Deleted media is gone: looking it up raises InvalidRequestError (100)."""
    sender = make_sender()
    media_id = await sender.upload_media(PNG, "image/png")
    await sender.delete_media(media_id)
    with pytest.raises(InvalidRequestError) as info:
        await sender.get_media_url(media_id)
    assert info.value.code == 100


async def test_download_refuses_a_non_meta_host(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A media URL on another host (here ``localhost`` instead of the configured
    ``127.0.0.1``) raises MediaError and the token is never sent there."""
    emulator = served.emulator
    media_id = emulator.add_media(PNG, "image/png")
    port = served.url.rsplit(":", 1)[1]
    emulator.media_url_base = f"http://localhost:{port}"
    with pytest.raises(MediaError, match="refusing to send the access token to http://localhost"):
        await make_sender().download_media(media_id)
    assert [c.endpoint for c in emulator.calls] == ["media"]


async def test_download_refuses_a_redirect_to_a_non_meta_host(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A redirect from the media URL to another host is refused before it is followed."""
    emulator = served.emulator
    media_id = emulator.add_media(PNG, "image/png")
    port = served.url.rsplit(":", 1)[1]
    emulator.download_redirect = f"http://localhost:{port}"
    with pytest.raises(MediaError, match="localhost"):
        await make_sender().download_media(media_id)
    downloads = [c for c in emulator.calls if c.endpoint == "download"]
    assert [c.status for c in downloads] == [302]


async def test_download_follows_a_redirect_to_an_allowed_host(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A redirect within the allowed hosts is followed (with the token) to the bytes."""
    emulator = served.emulator
    media_id = emulator.add_media(PNG, "image/png")
    emulator.download_redirect = served.url
    assert await make_sender().download_media(media_id) == (PNG, "image/png")
    assert [c.status for c in emulator.calls if c.endpoint == "download"] == [302, 200]


async def test_download_size_caps(served: Served, make_sender: Callable[..., Sender]) -> None:
    """Media over ``max_bytes`` or over its kind's Cloud API limit (image: 5 MB) is refused
    from its declared size, before the download URL is fetched."""
    emulator = served.emulator
    small = emulator.add_media(PNG, "image/png")
    big = emulator.add_media(b"\x89PNG" + bytes(5 * 1024 * 1024), "image/png")
    sender = make_sender()
    with pytest.raises(MediaError, match="over the 100-byte limit"):
        await sender.download_media(small, max_bytes=100)
    with pytest.raises(MediaError, match=str(5 * 1024 * 1024)):
        await sender.download_media(big)
    with pytest.raises(MediaError, match="over the"):
        await sender.download_media(small, kind="sticker", max_bytes=10)
    assert [c for c in emulator.calls if c.endpoint == "download"] == []


async def test_streamed_download_stops_at_the_cap() -> None:
    """A body with no Content-Length is read only up to the cap, then MediaError."""

    async def endless(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"image/png")],
            }
        )
        for _ in range(200):
            await send({"type": "http.response.body", "body": bytes(1024), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with (
        BackgroundServer(endless, lifespan="off") as server,
        Sender(TOKEN, PNID, base_url=server.url) as sender,
    ):
        with pytest.raises(MediaError, match="download stopped"):
            await sender.download_url(f"{server.url}/file", max_bytes=10_000)


async def test_expired_download_url_is_looked_up_again(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A 404 from the download URL makes the Sender fetch a fresh URL once; two 404s in a
    row raise MediaError."""
    emulator = served.emulator
    media_id = emulator.add_media(PNG, "image/png")
    sender = make_sender()
    emulator.fail_next(1, None, 404, endpoint="download")
    assert await sender.download_media(media_id) == (PNG, "image/png")
    assert [c.endpoint for c in emulator.calls] == ["media", "download", "media", "download"]
    emulator.media_url_ttl = -1  # every URL is already expired
    with pytest.raises(MediaError, match="404 twice"):
        await sender.download_media(media_id)


async def test_checksum_mismatch_is_refused(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """Bytes that do not match the sha256 the API reported raise MediaError."""
    media_id = served.emulator.add_media(PNG, "image/png")
    served.emulator.media[media_id].data = PNG[:-1] + b"\x00"
    with pytest.raises(MediaError, match="sha256"):
        await make_sender().download_media(media_id)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://graph.facebook.com/v25.0/123", True),
        ("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1", True),
        ("https://scontent.xx.fbcdn.net/v/t61/abc.jpg", True),
        ("https://facebook.com/x", True),
        ("http://lookaside.fbsbx.com/x", False),
        ("https://lookaside.fbsbx.com:8443/x", False),
        ("https://evilfacebook.com/x", False),
        ("https://facebook.com.evil.example/x", False),
        ("https://fbsbx.com.evil.example/x", False),
        ("https://example.com/x", False),
        ("http://127.0.0.1:9/x", True),  # the configured base_url
        ("http://127.0.0.1:10/x", False),
        ("https://127.0.0.1:9/x", False),
    ],
)
def test_token_is_only_for_meta_hosts_and_the_base_url(url: str, allowed: bool) -> None:
    """The bearer token goes to Meta's hosts over HTTPS and to the base_url origin only."""
    sender = Sender(TOKEN, PNID, base_url="http://127.0.0.1:9")
    assert sender.token_allowed(url) is allowed


# ------------------------------------------------------------------ secrets, logs, life


def test_repr_masks_the_token() -> None:
    """repr/str of a Sender show the number but never the token."""
    sender = Sender(Secret(TOKEN), PNID)
    assert TOKEN not in repr(sender) and TOKEN not in str(sender)
    assert "**********" in repr(sender) and PNID in repr(sender)


async def test_one_info_line_per_call_without_content_or_token(
    served: Served, make_sender: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    """Each API call logs one INFO line (method, path, status, ms, attempt); neither the
    message text nor the token appears in any log record."""
    caplog.set_level(logging.DEBUG)
    served.emulator.fail_next(1, 130429)
    sender = make_sender()
    await sender.send_text(USER, "top secret body text")
    ours = [r for r in caplog.records if r.name == "wa_agent.sender"]
    assert [r.levelno for r in ours] == [logging.INFO, logging.INFO]
    assert ours[0].getMessage().startswith(f"POST /v25.0/{PNID}/messages -> 429 in ")
    assert ours[1].getMessage().endswith("(attempt 2)")
    assert "top secret" not in caplog.text
    assert TOKEN not in caplog.text


async def test_owned_client_is_closed_shared_client_is_not(served: Served) -> None:
    """aclose closes the client a Sender created, never one passed in; a closed Sender
    refuses to send or to be reopened."""
    async with Sender(TOKEN, PNID, base_url=served.url) as owned:
        await owned.send_text(USER, "own client")
    assert owned.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await owned.send_text(USER, "after close")
    with pytest.raises(RuntimeError, match="reopen"):
        async with owned:
            pass
    async with httpx.AsyncClient() as shared:
        sender = Sender(TOKEN, PNID, base_url=served.url, client=shared)
        await sender.send_text(USER, "shared client")
        await sender.aclose()
        assert not shared.is_closed
    assert served.emulator.texts_to(USER) == ["own client", "shared client"]


def test_configuration_errors() -> None:
    """Missing token or number and bad arguments fail at construction with a clear message."""
    from wa_agent.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="WHATSAPP_ACCESS_TOKEN"):
        Sender("", PNID)
    with pytest.raises(ConfigurationError, match="WHATSAPP_PHONE_NUMBER_ID"):
        Sender(TOKEN, " ")
    with pytest.raises(ConfigurationError, match="base_url"):
        Sender(TOKEN, PNID, base_url="ftp://x")
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


async def test_empty_text_is_refused(make_sender: Callable[..., Sender]) -> None:
    """Sending blank text is a usage error, not an API call."""
    with pytest.raises(ValueError, match="empty"):
        await make_sender().send_text(USER, "  \n ")


async def test_graph_calls_leave_no_reference_cycles(
    served: Served, make_sender: Callable[..., Sender]
) -> None:
    """A send or read receipt leaves no httpx request/response behind for the garbage
    collector: httpx's response <-> stream cycle is cut once the body is read, so reference
    counting frees each call's objects at once (with thousands of agents in flight the
    collector's pauses are the ack latency's tail). Checked with and without keep-alive."""
    for sender in (make_sender(own_client=True), make_sender()):
        await sender.send_text("15551230001", "warm-up")
        with httpx_garbage() as left:
            for n in range(5):
                await sender.send_text("15551230001", f"hello {n}")
                await sender.mark_read(f"wamid.IN{n}", typing=True)
        assert left == []
