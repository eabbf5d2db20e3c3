"""CloudAPIEmulator over real HTTP: validation, Meta's error shape, media, records, faults."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import anyio
import httpx
import pytest

from wa_agent.testing import CloudAPIEmulator
from wa_agent.testing.emulator import SentMessage, graph_error

TOKEN = "emulator-token-9c1e"
PNID = "100000000000001"
USER = "15551230001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(64)


class Served(NamedTuple):
    emulator: CloudAPIEmulator
    client: httpx.AsyncClient
    url: str


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop for the module, so one emulator server serves every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[CloudAPIEmulator, str]]:
    emulator = CloudAPIEmulator(access_token=TOKEN, phone_number_ids=[PNID])
    async with emulator.serve() as url:
        yield emulator, url


@pytest.fixture
async def served(server: tuple[CloudAPIEmulator, str]) -> AsyncIterator[Served]:
    """A fresh emulator state and a client without keep-alive (see test_sender.py)."""
    emulator, url = server
    emulator.reset()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        yield Served(emulator, client, url)


def text_body(text: str = "hi", to: str = USER, **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "text",
        "text": {"body": text},
        **extra,
    }


async def post(
    served: Served,
    body: Any,
    *,
    path: str = f"/v25.0/{PNID}/messages",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await served.client.post(path, json=body, headers=AUTH if headers is None else headers)


def assert_graph_error(response: httpx.Response, code: int, status: int = 400) -> dict[str, Any]:
    """The response is Meta's error JSON with ``code``; returns the ``error`` object."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "OAuthException"
    assert error["message"].startswith(f"(#{code}) ")
    assert isinstance(error["fbtrace_id"], str) and error["fbtrace_id"]
    return dict(error)


# ------------------------------------------------------------------ auth and shape


async def test_every_call_needs_the_bearer_token(served: Served) -> None:
    """No token, a wrong token and an expired token are all 401 with code 190, and the
    token never appears in the recorded calls."""
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        response = await post(served, text_body(), headers=headers)
        assert_graph_error(response, 190, 401)
        assert "invalid_token" in response.headers["www-authenticate"]
    served.emulator.expire_token()
    error = assert_graph_error(await post(served, text_body()), 190, 401)
    assert "expired" in error["message"]
    served.emulator.set_token("new-token")
    ok = await post(served, text_body(), headers={"Authorization": "Bearer new-token"})
    assert ok.status_code == 200
    assert [c.authorized for c in served.emulator.calls] == [False] * 4 + [True]
    assert TOKEN not in repr(served.emulator.calls) and TOKEN not in repr(served.emulator)
    assert len(served.emulator.messages) == 1


async def test_accepted_send_answers_like_meta(served: Served) -> None:
    """A valid send answers contacts (input, wa_id digits) and a wamid; templates also get
    a message_status; the message is recorded with to/type/body/wamid/time."""
    response = await post(served, text_body("hello", to="+1 555-123-0001"))
    assert response.status_code == 200
    answer = response.json()
    wamid = answer["messages"][0]["id"]
    assert answer == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+1 555-123-0001", "wa_id": USER}],
        "messages": [{"id": wamid}],
    }
    assert wamid.startswith("wamid.")
    [sent] = served.emulator.messages
    assert (sent.to, sent.wa_id, sent.type, sent.wamid, sent.text) == (
        "+1 555-123-0001",
        USER,
        "text",
        wamid,
        "hello",
    )
    template = {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}},
    }
    assert (await post(served, template)).json()["messages"][0]["message_status"] == "accepted"


async def test_business_scoped_user_id_recipient(served: Served) -> None:
    """A send to a BSUID (``recipient``) answers with its user_id."""
    bsuid = "US.13491208655302741918"
    body = {
        "messaging_product": "whatsapp",
        "recipient": bsuid,
        "type": "text",
        "text": {"body": "hi"},
    }
    response = await post(served, body)
    assert response.json()["contacts"] == [{"input": bsuid, "user_id": bsuid}]
    assert served.emulator.sent_to(bsuid)[0].wa_id == bsuid


def _media(served: Served, kind: str) -> str:
    if kind == "sticker":
        return served.emulator.add_media(WEBP, "image/webp")
    return served.emulator.add_media(PNG, "image/png")


def _buttons(*titles: str) -> dict[str, Any]:
    return {
        "type": "button",
        "body": {"text": "Pick"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": f"id{n}", "title": t}}
                for n, t in enumerate(titles)
            ]
        },
    }


def _list(rows_per_section: list[int], titled: bool = True) -> dict[str, Any]:
    sections = []
    for s, count in enumerate(rows_per_section):
        section: dict[str, Any] = {
            "rows": [{"id": f"r{s}-{n}", "title": f"Row {n}"} for n in range(count)]
        }
        if titled:
            section["title"] = f"Section {s}"
        sections.append(section)
    return {
        "type": "list",
        "body": {"text": "Choose"},
        "action": {"button": "Open", "sections": sections},
    }


def _list_with(**row: Any) -> dict[str, Any]:
    body = _list([1])
    body["action"]["sections"][0]["rows"][0].update(row)
    return body


def _cta(
    label: str = "See Dates", url: str | None = "https://www.example.com?a=1"
) -> dict[str, Any]:
    parameters: dict[str, Any] = {"display_text": label}
    if url is not None:
        parameters["url"] = url
    return {
        "type": "cta_url",
        "body": {"text": "Tap the button below to see available dates."},
        "action": {"name": "cta_url", "parameters": parameters},
    }


INVALID: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "no-product",
        {"-": ["messaging_product"], "type": "text", "text": {"body": "x"}},
        100,
        "messaging_product",
    ),
    ("no-to", {"-": ["to"], "type": "text", "text": {"body": "x"}}, 100, "to is required"),
    ("bad-type", {"type": "poll", "poll": {}}, 100, "type must be one of"),
    ("type-object-missing", {"type": "image"}, 100, "image is required"),
    ("text-4097", {"type": "text", "text": {"body": "x" * 4097}}, 100, "at most 4096"),
    ("text-empty", {"type": "text", "text": {"body": ""}}, 100, "at least 1"),
    ("text-extra-key", {"type": "text", "text": {"body": "x", "bold": True}}, 100, "bold"),
    (
        "caption-1025",
        {"type": "image", "image": {"id": "<image>", "caption": "c" * 1025}},
        100,
        "at most 1024",
    ),
    (
        "id-and-link",
        {"type": "image", "image": {"id": "<image>", "link": "https://x.y/a.png"}},
        100,
        "exactly one",
    ),
    ("unknown-media", {"type": "image", "image": {"id": "999"}}, 100, "not a valid media id"),
    ("bad-link", {"type": "image", "image": {"link": "ftp://x.y/a.png"}}, 100, "http(s)"),
    (
        "audio-caption",
        {"type": "audio", "audio": {"link": "https://x.y/a.ogg", "caption": "c"}},
        100,
        "caption",
    ),
    (
        "png-as-sticker",
        {"type": "sticker", "sticker": {"id": "<image>"}},
        131053,
        "cannot be sent as sticker",
    ),
    # Interactive limits answer 131009 with Meta's observed details (see _validate_interactive).
    (
        "four-buttons",
        {"type": "interactive", "interactive": _buttons("a", "b", "c", "d")},
        131009,
        "Max allowed buttons: 3",
    ),
    (
        "no-buttons",
        {"type": "interactive", "interactive": _buttons()},
        131009,
        "Min allowed buttons: 1",
    ),
    ("same-titles", {"type": "interactive", "interactive": _buttons("a", "a")}, 131009, "unique"),
    (
        "title-21",
        {"type": "interactive", "interactive": _buttons("x" * 21)},
        131009,
        "Button title length invalid. Min length: 1, Max length: 20",
    ),
    (
        "title-empty",
        {"type": "interactive", "interactive": _buttons("")},
        131009,
        "Button title length invalid",
    ),
    (
        "button-id-257",
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Pick"},
                "action": {
                    "buttons": [{"type": "reply", "reply": {"id": "i" * 257, "title": "A"}}]
                },
            },
        },
        131009,
        "Max length: 256",
    ),
    (
        "button-no-body",
        {
            "type": "interactive",
            "interactive": {k: v for k, v in _buttons("a").items() if k != "body"},
        },
        100,
        "body",
    ),
    (
        "eleven-rows",
        {"type": "interactive", "interactive": _list([6, 5])},
        131009,
        "max allowed count: 10",
    ),
    (
        "untitled-sections",
        {"type": "interactive", "interactive": _list([1, 1], titled=False)},
        100,
        "title",
    ),
    (
        "row-title-25",
        {"type": "interactive", "interactive": _list_with(title="r" * 25)},
        131009,
        "Row title is too long. Max length is 24",
    ),
    (
        "row-description-73",
        {"type": "interactive", "interactive": _list_with(description="d" * 73)},
        131009,
        "Max length is 72",
    ),
    (
        "row-ids-repeat",
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Choose"},
                "action": {
                    "button": "Open",
                    "sections": [{"rows": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]}],
                },
            },
        },
        131009,
        "unique",
    ),
    (
        "list-button-21",
        {
            "type": "interactive",
            "interactive": {**_list([2]), "action": {**_list([2])["action"], "button": "b" * 21}},
        },
        131009,
        "Max length: 20",
    ),
    (
        "cta-label-21",
        {"type": "interactive", "interactive": _cta(label="L" * 21)},
        131009,
        "Display text length invalid. Min length: 1, Max length: 20",
    ),
    (
        "cta-ftp-url",
        {"type": "interactive", "interactive": _cta(url="ftp://example.com")},
        131009,
        "http(s) URL",
    ),
    ("cta-no-url", {"type": "interactive", "interactive": _cta(url=None)}, 100, "url"),
    (
        "cta-no-body",
        {"type": "interactive", "interactive": {k: v for k, v in _cta().items() if k != "body"}},
        100,
        "body",
    ),
    (
        "cta-wrong-name",
        {
            "type": "interactive",
            "interactive": {**_cta(), "action": {**_cta()["action"], "name": "url"}},
        },
        100,
        "'cta_url'",
    ),
    (
        "interactive-unknown",
        {"type": "interactive", "interactive": {"type": "poll", "action": {}}},
        100,
        "not a valid interactive type",
    ),
    ("no-language", {"type": "template", "template": {"name": "t"}}, 100, "language"),
    (
        "button-without-index",
        {
            "type": "template",
            "template": {
                "name": "t",
                "language": {"code": "en"},
                "components": [{"type": "button", "sub_type": "quick_reply", "parameters": []}],
            },
        },
        100,
        "index",
    ),
    (
        "latitude-91",
        {"type": "location", "location": {"latitude": 91, "longitude": 0}},
        100,
        "latitude",
    ),
    (
        "longitude-181",
        {"type": "location", "location": {"latitude": 0, "longitude": -181}},
        100,
        "longitude",
    ),
    ("latitude-missing", {"type": "location", "location": {"longitude": 0}}, 100, "latitude"),
    ("reaction-no-id", {"type": "reaction", "reaction": {"emoji": "x"}}, 100, "message_id"),
    (
        "reaction-no-emoji",
        {"type": "reaction", "reaction": {"message_id": "wamid.A"}},
        100,
        "emoji",
    ),
    (
        "reaction-text",
        {"type": "reaction", "reaction": {"message_id": "wamid.A", "emoji": "ok"}},
        131009,
        "one emoji",
    ),
    ("context-no-id", {"type": "text", "text": {"body": "x"}, "context": {}}, 100, "message_id"),
    ("contact-no-name", {"type": "contacts", "contacts": [{"name": {}}]}, 100, "formatted_name"),
    ("contacts-empty", {"type": "contacts", "contacts": []}, 100, "non-empty"),
    (
        "voice-not-bool",
        {"type": "audio", "audio": {"link": "https://x.y/a.ogg", "voice": "yes"}},
        100,
        "voice",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "detail"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
async def test_invalid_sends_get_metas_error(
    served: Served, body: dict[str, Any], code: int, detail: str
) -> None:
    """Each violation of the reference limits answers 400 with the Graph error shape, the
    right code and a details string naming the problem; nothing is recorded as sent."""
    body = {"messaging_product": "whatsapp", "to": USER, **body}
    for key in body.pop("-", []):
        del body[key]
    if body.get("type") in ("image", "sticker") and "<image>" in str(body):
        body[body["type"]] = {
            k: (_media(served, "image") if v == "<image>" else v)
            for k, v in body[body["type"]].items()
        }
    error = assert_graph_error(await post(served, body), code)
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert detail in error["error_data"]["details"]
    assert served.emulator.messages == []


# Bodies at Meta's limits, each shaped like an example of Meta's OpenAPI description
# (facebook/openapi business-messaging-api_v23.0.yaml, requestBody examples of
# POST /{Version}/{Phone-Number-ID}/messages, named below) or, for cta_url and voice notes
# (no example there), Meta's "Interactive CTA URL messages" and "Audio messages" pages.
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (
        "reply-buttons-20",
        {  # "Send Reply Button"
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "<BUTTON_TEXT>"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "i" * 256, "title": "t" * 20}},
                        {"type": "reply", "reply": {"id": "b", "title": "Back"}},
                        {"type": "reply", "reply": {"id": "c", "title": "🙂 Yes"}},
                    ]
                },
            },
        },
    ),
    (
        "list-10-rows",
        {  # "Send List Message" (two titled sections, header and footer)
            "type": "interactive",
            "interactive": {
                "type": "list",
                "header": {"type": "text", "text": "h" * 60},
                "body": {"text": "b" * 1024},
                "footer": {"text": "f" * 60},
                "action": {
                    "button": "B" * 20,
                    "sections": [
                        {
                            "title": "S" * 24,
                            "rows": [
                                {"id": f"a{n}", "title": "T" * 24, "description": "D" * 72}
                                for n in range(6)
                            ],
                        },
                        {
                            "title": "Two",
                            "rows": [{"id": f"b{n}", "title": f"Row {n}"} for n in range(4)],
                        },
                    ],
                },
            },
        },
    ),
    (
        "cta-url",
        {  # Meta's CTA URL page: text header, body, footer, display_text and url
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "header": {"type": "text", "text": "Available Dates"},
                "body": {"text": "Tap the button below to see available dates."},
                "footer": {"text": "Dates subject to change."},
                "action": {
                    "name": "cta_url",
                    "parameters": {
                        "display_text": "See Dates",
                        "url": "https://www.luckyshrub.com?clickID=kqDG",
                    },
                },
            },
        },
    ),
    (
        "reaction",
        {  # "Send Reply with Reaction Message"
            "type": "reaction",
            "reaction": {"message_id": "wamid.HBgLM", "emoji": "😀"},
        },
    ),
    ("reaction-removed", {"type": "reaction", "reaction": {"message_id": "wamid.A", "emoji": ""}}),
    (
        "reaction-joined-emoji",
        {"type": "reaction", "reaction": {"message_id": "wamid.A", "emoji": "👨‍👩‍👧"}},
    ),
    (
        "location",
        {  # "Send Location Message"
            "type": "location",
            "location": {
                "latitude": 37.758056,
                "longitude": -122.425332,
                "name": "META HQ",
                "address": "1 Hacker Way, Menlo Park, CA 94025",
            },
        },
    ),
    ("location-edges", {"type": "location", "location": {"latitude": -90, "longitude": 180}}),
    (
        "contacts",
        {  # "Send Contact Message"
            "type": "contacts",
            "contacts": [
                {
                    "addresses": [
                        {
                            "city": "Menlo Park",
                            "country": "United States",
                            "country_code": "us",
                            "state": "CA",
                            "street": "1 Hacker Way",
                            "type": "HOME",
                            "zip": "94025",
                        }
                    ],
                    "birthday": "2012-08-18",
                    "emails": [{"email": "test@fb.com", "type": "WORK"}],
                    "name": {
                        "first_name": "John",
                        "formatted_name": "John Smith",
                        "last_name": "Smith",
                    },
                    "org": {"company": "WhatsApp", "department": "Design", "title": "Manager"},
                    "phones": [
                        {"phone": "+1 (650) 555-1234", "type": "WORK", "wa_id": "16505551234"}
                    ],
                    "urls": [{"type": "WORK", "url": "https://www.facebook.com"}],
                }
            ],
        },
    ),
    (
        "voice-note",
        {  # Meta's audio page: "voice": true for an OGG/Opus voice message
            "type": "audio",
            "audio": {"link": "https://example.com/note.ogg", "voice": True},
        },
    ),
]


@pytest.mark.parametrize("body", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
async def test_rich_bodies_at_metas_limits_are_accepted(
    served: Served, body: dict[str, Any]
) -> None:
    """Each rich message body shaped like Meta's examples, at the edge of every limit, is
    accepted and recorded as sent."""
    response = await post(
        served,
        {"messaging_product": "whatsapp", "recipient_type": "individual", "to": USER, **body},
    )
    assert response.status_code == 200, response.text
    [sent] = served.emulator.messages
    assert sent.type == body["type"] and sent.body[sent.type] == body[body["type"]]


async def test_not_json_and_unknown_paths(served: Served) -> None:
    """A body that is not JSON, an unknown business number and an unknown path are 400
    code 100."""
    response = await served.client.post(f"/v25.0/{PNID}/messages", content=b"{nope", headers=AUTH)
    assert "JSON" in assert_graph_error(response, 100)["error_data"]["details"]
    other = await post(served, text_body(), path="/v25.0/999/messages")
    assert "Object with ID '999'" in assert_graph_error(other, 100)["error_data"]["details"]
    unknown = await served.client.get("/v25.0/x/y/z", headers=AUTH)
    assert_graph_error(unknown, 100)


async def test_version_pin_and_any_number_in_process() -> None:
    """A pinned api_version refuses other versions; phone_number_ids=None accepts any
    number. Driven in process through httpx.ASGITransport."""
    emulator = CloudAPIEmulator(access_token=TOKEN, api_version="v25.0")
    transport = httpx.ASGITransport(app=emulator)
    async with httpx.AsyncClient(transport=transport, base_url="http://graph.test") as client:
        ok = await client.post("/v25.0/42/messages", json=text_body(), headers=AUTH)
        old = await client.post("/v19.0/42/messages", json=text_body(), headers=AUTH)
    await emulator.aclose()
    assert ok.status_code == 200
    assert old.status_code == 400 and old.json()["error"]["code"] == 100
    assert emulator.messages[0].phone_number_id == "42"


async def test_template_registry(served: Served) -> None:
    """Once templates are registered, an unknown (name, language) is 132001."""
    served.emulator.templates.add(("order_update", "en_US"))
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "template",
        "template": {"name": "order_update", "language": {"code": "de"}},
    }
    assert_graph_error(await post(served, body), 132001)
    body["template"]["language"]["code"] = "en_US"
    assert (await post(served, body)).status_code == 200


async def test_mark_read_and_typing(served: Served) -> None:
    """Read receipts answer success and are recorded (with the typing flag); a bad id is
    131009 and a bad typing indicator 100."""
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.A"}
    assert (await post(served, read)).json() == {"success": True}
    typing = {**read, "typing_indicator": {"type": "text"}}
    assert (await post(served, typing)).json() == {"success": True}
    assert_graph_error(await post(served, {**read, "message_id": "bogus"}), 131009)
    assert_graph_error(await post(served, {**read, "typing_indicator": {"type": "x"}}), 100)
    assert [(r.message_id, r.typing) for r in served.emulator.reads] == [
        ("wamid.A", False),
        ("wamid.A", True),
    ]
    assert [c.endpoint for c in served.emulator.calls] == ["read"] * 4


# ------------------------------------------------------------------ media


async def upload(served: Served, data: bytes, mime: str, **form: str) -> httpx.Response:
    fields = {"messaging_product": "whatsapp", "type": mime, **form}
    fields = {k: v for k, v in fields.items() if v != "<omit>"}
    return await served.client.post(
        f"/v25.0/{PNID}/media", data=fields, files={"file": ("f.bin", data, mime)}, headers=AUTH
    )


async def test_media_upload_url_download_delete(served: Served) -> None:
    """Upload → id; GET id → url/mime/sha256/size; the URL serves the exact bytes with the
    token only; DELETE removes it."""
    response = await upload(served, PNG, "image/png")
    media_id = response.json()["id"]
    assert media_id.isdigit()
    meta = (
        await served.client.get(
            f"/v25.0/{media_id}", headers=AUTH, params={"phone_number_id": PNID}
        )
    ).json()
    assert {k: meta[k] for k in ("messaging_product", "mime_type", "file_size", "id")} == {
        "messaging_product": "whatsapp",
        "mime_type": "image/png",
        "file_size": len(PNG),
        "id": media_id,
    }
    assert meta["url"].startswith(served.url + "/whatsapp_business/attachments/?mid=")
    without = await served.client.get(meta["url"])
    assert_graph_error(without, 190, 401)
    got = await served.client.get(meta["url"], headers=AUTH)
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, PNG, "image/png")
    assert (await served.client.delete(f"/v25.0/{media_id}", headers=AUTH)).json() == {
        "success": True
    }
    assert_graph_error(await served.client.delete(f"/v25.0/{media_id}", headers=AUTH), 100)
    assert_graph_error(await served.client.get(f"/v25.0/{media_id}", headers=AUTH), 100)
    upload_call = served.emulator.calls[0]
    assert upload_call.body["file"] == {
        "filename": "f.bin",
        "content_type": "image/png",
        "size": len(PNG),
    }


async def test_upload_is_checked(served: Served) -> None:
    """Unsupported MIME types and oversize files are 131053; missing fields are 100."""
    assert (
        "Received file of type 'application/zip'"
        in assert_graph_error(await upload(served, b"PK\x03\x04", "application/zip"), 131053)[
            "error_data"
        ]["details"]
    )
    assert_graph_error(await upload(served, WEBP + bytes(500 * 1024), "image/webp"), 131053)
    assert_graph_error(await upload(served, PNG, "image/png", messaging_product="<omit>"), 100)
    assert_graph_error(await upload(served, PNG, "<omit>"), 100)
    no_file = await served.client.post(
        f"/v25.0/{PNID}/media",
        data={"messaging_product": "whatsapp", "type": "image/png"},
        files={"other": ("x", b"x", "text/plain")},
        headers=AUTH,
    )
    assert_graph_error(no_file, 100)
    not_multipart = await served.client.post(f"/v25.0/{PNID}/media", json={}, headers=AUTH)
    assert_graph_error(not_multipart, 100)
    assert served.emulator.media == {}


async def test_download_url_expires_and_needs_its_hash(served: Served) -> None:
    """A download URL with a wrong hash or past its TTL is 404; one without User-Agent 400."""
    media_id = served.emulator.add_media(PNG, "image/png")
    url = (await served.client.get(f"/v25.0/{media_id}", headers=AUTH)).json()["url"]
    bad = url.split("&hash=")[0] + "&hash=forged"
    assert (await served.client.get(bad, headers=AUTH)).status_code == 404
    no_agent = await served.client.get(url, headers={**AUTH, "User-Agent": ""})
    assert no_agent.status_code == 400
    served.emulator.media_url_ttl = -1
    stale = (await served.client.get(f"/v25.0/{media_id}", headers=AUTH)).json()["url"]
    assert (await served.client.get(stale, headers=AUTH)).status_code == 404


# ------------------------------------------------------------------ records and hooks


async def test_sent_to_and_texts_to_normalise_numbers(served: Served) -> None:
    """sent_to/texts_to find messages however the number was written."""
    await post(served, text_body("one", to="+15551230001"))
    await post(served, text_body("two", to=USER, context={"message_id": "wamid.Q"}))
    await post(served, text_body("other", to="15559999999"))
    assert served.emulator.texts_to("+1 (555) 123-0001") == ["one", "two"]
    assert [m.reply_to for m in served.emulator.sent_to(USER)] == [None, "wamid.Q"]
    served.emulator.clear()
    assert served.emulator.messages == [] and served.emulator.calls == []


async def test_wait_for_messages(served: Served) -> None:
    """wait_for_messages returns once enough messages arrived (from a concurrent sender)
    and raises TimeoutError listing what did arrive when they do not."""

    async def send_later() -> None:
        await anyio.sleep(0.05)
        await post(served, text_body("late"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send_later)
        found = await served.emulator.wait_for_messages(1, to=USER, timeout=5)
    assert [m.text for m in found] == ["late"]
    with pytest.raises(TimeoutError, match="expected 2 message"):
        await served.emulator.wait_for_messages(2, timeout=0.05)


async def test_subscribers_see_each_accepted_message_in_order(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync and async subscribers get every accepted message in order; a failing
    subscriber is logged and does not stop the others; unsubscribing stops delivery."""
    seen_async: list[str] = []
    seen_sync: list[str] = []

    async def on_async(message: SentMessage) -> None:
        await anyio.sleep(0.001)
        seen_async.append(message.text or "")

    def broken(message: SentMessage) -> None:
        raise RuntimeError("subscriber bug")

    served.emulator.subscribe(on_async)
    served.emulator.subscribe(broken)
    unsubscribe = served.emulator.subscribe(lambda m: seen_sync.append(m.wamid))
    for n in range(5):
        await post(served, text_body(f"m{n}"))
    await post(served, text_body("x" * 5000))  # rejected: no callback
    await served.emulator.drain()
    assert seen_async == [f"m{n}" for n in range(5)]
    assert seen_sync == [m.wamid for m in served.emulator.messages]
    failures = [r for r in caplog.records if r.levelno == logging.WARNING and r.exc_info]
    assert len(failures) == 5
    unsubscribe()
    await post(served, text_body("after"))
    await served.emulator.drain()
    assert len(seen_sync) == 5 and seen_async[-1] == "after"


# ------------------------------------------------------------------ faults


async def test_fail_next_filters_by_endpoint_and_recipient(served: Served) -> None:
    """fail_next hits only the calls it targets: uploads, or sends to one recipient."""
    served.emulator.fail_next(1, 131000, endpoint="upload")
    served.emulator.fail_next(1, 131056, to="+1 555 123 0001")
    assert (await post(served, text_body(to="15550000000"))).status_code == 200
    error = assert_graph_error(await post(served, text_body()), 131056, 429)
    assert "same recipient" in error["error_data"]["details"]
    assert (await post(served, text_body())).status_code == 200
    assert_graph_error(await upload(served, PNG, "image/png"), 131000, 500)
    assert (await upload(served, PNG, "image/png")).status_code == 200


async def test_fail_next_proxy_page_and_retry_after(served: Served) -> None:
    """code=None answers an HTML error page; retry_after adds a Retry-After header."""
    served.emulator.fail_next(1, None, 502)
    served.emulator.fail_next(1, 130429, retry_after=3)
    page = await post(served, text_body())
    assert page.status_code == 502 and page.headers["content-type"] == "text/html"
    throttled = await post(served, text_body())
    assert_graph_error(throttled, 130429, 429)
    assert throttled.headers["retry-after"] == "3"


async def test_fail_rate_is_seeded(served: Served) -> None:
    """fail_rate fails a seeded random fraction: the same seed fails the same calls."""
    outcomes: list[list[int]] = []
    for _ in range(2):
        served.emulator.fail_rate(0.5, 130429, seed=11)
        statuses = [(await post(served, text_body(f"{n}"))).status_code for n in range(16)]
        outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count(429) < 16
    served.emulator.fail_rate(0)
    assert (await post(served, text_body())).status_code == 200


async def test_hang_without_accepting(served: Served) -> None:
    """hang_next(accept=False) never answers and records no message (status 0 call)."""
    served.emulator.hang_next(1, accept=False)
    with pytest.raises(httpx.ReadTimeout):
        await served.client.post(
            f"/v25.0/{PNID}/messages",
            json=text_body(),
            headers=AUTH,
            timeout=httpx.Timeout(5, read=0.1),
        )
    assert served.emulator.messages == []
    assert [c.status for c in served.emulator.calls] == [0]
    assert (await post(served, text_body())).status_code == 200


async def test_added_latency_and_throughput(served: Served) -> None:
    """``delay`` slows every answer (a short client timeout trips); ``throughput`` turns
    sends over the per-second budget into 130429."""
    served.emulator.delay = 0.3
    with pytest.raises(httpx.ReadTimeout):
        await served.client.post(
            f"/v25.0/{PNID}/messages",
            json=text_body(),
            headers=AUTH,
            timeout=httpx.Timeout(5, read=0.05),
        )
    served.emulator.delay = 0
    served.emulator.throughput = 2
    statuses = [(await post(served, text_body())).status_code for _ in range(3)]
    assert statuses[:2] == [200, 200] and statuses[2] == 429


async def test_throughput_counts_messages_not_read_receipts(served: Served) -> None:
    """Read receipts do not use up the throughput budget (Meta counts messages), unless
    ``throughput_counts_reads`` is set."""
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1"}
    served.emulator.throughput = 2
    statuses = [(await post(served, read)).status_code for _ in range(5)]
    statuses += [(await post(served, text_body())).status_code for _ in range(2)]
    assert statuses == [200] * 7
    served.emulator.reset()  # a fresh one-second window
    served.emulator.throughput = 2
    served.emulator.throughput_counts_reads = True
    statuses = [(await post(served, read)).status_code for _ in range(2)]
    assert statuses == [200, 200]
    assert (await post(served, text_body())).status_code == 429


def test_graph_error_shape() -> None:
    """graph_error builds Meta's body: message "(#code) title", type, code, error_data
    with details (none for 190 unless given), fbtrace_id."""
    body = graph_error(131047)
    assert body["error"]["message"] == "(#131047) Re-engagement message"
    assert "24 hours" in body["error"]["error_data"]["details"]
    assert "error_data" not in graph_error(190)["error"]
    assert graph_error(190, subcode=463)["error"]["error_subcode"] == 463


async def test_emulator_keeps_bodies_out_of_logs(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The emulator logs nothing at INFO for ordinary traffic (message bodies stay out of
    logs)."""
    caplog.set_level(logging.INFO, logger="wa_agent.testing")
    await post(served, text_body("private words"))
    assert "private words" not in caplog.text
