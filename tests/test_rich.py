"""The reply-plan seam (wa_agent._rich): an AgentReply's rich fields become ordered,
JSON-serialisable parts, and each part reaches the Cloud API emulator through a real Sender
as a body Meta accepts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wa_agent import AgentReply, Contact, LinkButton, Location, Message, MessageParser
from wa_agent._rich import (
    DEFAULT_CHOICE_BODY,
    RICH_TYPES,
    can_quote,
    describe_part,
    history_text,
    merge_parts,
    rich_parts,
    send_rich_part,
    text_and_choice,
)
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.testing import CloudAPIEmulator, silent_voice_note, webhooks

TOKEN = "rich-token"
PNID = "100000000000001"
USER = "15551230001"
IN = "wamid.USER-MESSAGE"


def text(*chunks: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": c} for c in chunks]


def test_text_and_buttons_are_one_interactive_message() -> None:
    """Text plus up to three choices is one reply-button message whose body is the text."""
    parts = merge_parts(AgentReply(text="Coffee?", buttons=["Yes", ("no", "No")]), text("Coffee?"))
    assert parts == [
        {
            "type": "buttons",
            "body": "Coffee?",
            "buttons": [{"id": "Yes", "title": "Yes"}, {"id": "no", "title": "No"}],
        }
    ]


def test_only_the_last_text_chunk_is_carried() -> None:
    """Earlier chunks of a long text go out as text first; the last becomes the body."""
    reply = AgentReply(text="...", buttons=list("abcd"))
    parts = merge_parts(reply, text("first chunk", "second chunk"))
    assert [p["type"] for p in parts] == ["text", "list"]
    assert parts[0]["text"] == "first chunk" and parts[1]["body"] == "second chunk"
    assert parts[1]["button"] == "Choose" and len(parts[1]["rows"]) == 4


def test_a_chunk_over_the_body_limit_is_split_and_its_tail_carried() -> None:
    """An interactive body holds at most 1024 characters: a longer last chunk is split at a
    boundary, the head sent as text and only the tail carried."""
    long = ("word " * 300).strip()  # 1499 characters
    parts = merge_parts(AgentReply(buttons=["ok"]), text(long))
    assert [p["type"] for p in parts] == ["text", "buttons"]
    assert len(parts[1]["body"]) <= 1024 and len(parts[0]["text"]) <= 1024
    assert (parts[0]["text"] + " " + parts[1]["body"]).split() == long.split()


def test_order_of_every_field() -> None:
    """Reaction first, then text, media, audio, location, contacts, link button, choices last
    (the choices carry the text)."""
    reply = AgentReply(
        text="All of it",
        reaction="👍",
        buttons=["a"],
        location=(1.5, 2.5),
        contacts=[Contact("Ada")],
        link_button=("Docs", "https://docs.example"),
        audio=b"x",
    )
    media = [
        {"type": "image", "id": "1"},
        {"type": "audio", "id": "2", "mime_type": "audio/ogg; codecs=opus"},
    ]
    parts = merge_parts(reply, text("All of it") + media)
    assert [p["type"] for p in parts] == [
        "reaction",
        "image",
        "audio",
        "location",
        "contacts",
        "cta_url",
        "buttons",
    ]
    assert parts[2]["voice"] is True
    assert parts[-1]["body"] == "All of it"
    assert parts[-2]["body"] == "docs.example"  # a link button without text: its host
    assert not can_quote(parts[0]) and all(can_quote(p) for p in parts[1:])


def test_link_button_carries_the_text_when_there_are_no_choices() -> None:
    """Without choices the link button is the interactive message that carries the text."""
    parts = merge_parts(
        AgentReply(text="See the menu", link_button=LinkButton("Menu", "https://example.com/menu")),
        text("See the menu"),
    )
    assert parts == [
        {
            "type": "cta_url",
            "body": "See the menu",
            "label": "Menu",
            "url": "https://example.com/menu",
        }
    ]


def test_defaults_without_text_and_plain_replies_unchanged() -> None:
    """Choices without text get the default body; a reply with no rich field keeps its parts
    as they were; an audio link ending in .ogg is a voice note, an mp3 one is not."""
    assert rich_parts(AgentReply(buttons=["a"]))[0]["body"] == DEFAULT_CHOICE_BODY
    plain = text("hi") + [{"type": "image", "id": "7"}]
    assert merge_parts(AgentReply(text="hi"), plain) == plain
    audio = merge_parts(
        AgentReply(),
        [
            {"type": "audio", "link": "https://x.y/n.ogg?s=1"},
            {"type": "audio", "link": "https://x.y/n.mp3"},
        ],
    )
    assert [p["voice"] for p in audio] == [True, False]


def test_parts_survive_a_json_round_trip() -> None:
    """Every part is JSON (it is stored in the durable inbox and resent after a restart)."""
    reply = AgentReply(
        text="t",
        reaction="🎉",
        buttons=[("a", "A", "first")],
        location=Location(latitude=52.5, longitude=13.4, name="Berlin"),
        contacts=["Ada Lovelace"],
        link_button=("Go", "https://example.com"),
    )
    parts = merge_parts(reply, text("t"))
    assert json.loads(json.dumps(parts)) == parts
    assert {p["type"] for p in parts} <= RICH_TYPES


def test_describe_and_history_are_readable() -> None:
    """Parts and replies read as text for history and widgets."""
    reply = AgentReply(
        text="Pick",
        reaction="👍",
        buttons=["Yes", "No"],
        location=(1, 2),
        contacts=[Contact("Ada", phones=("+44 1",))],
        link_button=("Docs", "https://d.example"),
    )
    described = [describe_part(p) for p in merge_parts(reply, text("Pick"))]
    assert described == [
        "[reacted 👍]",
        "[location: 1.000000, 2.000000]",
        "[contact: Ada (+44 1)]",
        "d.example\n[Docs: https://d.example]",
        "Pick\n[Yes] [No]",
    ]
    assert history_text(reply) == (
        "[reacted 👍]\nPick\n[location: 1.000000, 2.000000]\n[contact: Ada (+44 1)]\n"
        "[link: Docs https://d.example]\n[choices: Yes | No]"
    )
    assert (
        describe_part(
            {"type": "list", "body": "B", "button": "Open", "rows": [{"id": "1", "title": "One"}]}
        )
        == "B\n[Open: One]"
    )


def test_text_and_choice_from_taps() -> None:
    """A reply-button or list-row tap gives (title, id); a template button (text, payload);
    anything else keeps its text and no choice."""
    parser = MessageParser()

    def parse(item: dict[str, Any]) -> Message:
        [message] = parser.parse(webhooks.envelope(messages=[item]))
        assert isinstance(message, Message)
        return message

    button = parse(webhooks.interactive_reply_message(USER, "yes-id", "Yes"))
    row = parse(
        webhooks.interactive_reply_message(
            USER, "r2", "Two", kind="list_reply", description="the second"
        )
    )
    template = parse(webhooks.button_reply_message(USER, "Track order", "track"))
    plain = parse(webhooks.text_message(USER, "hi"))
    assert button.choice == "yes-id" and button.choice_title == "Yes"
    assert row.interactive is not None and row.interactive.description == "the second"
    assert plain.choice is None and plain.choice_title is None
    assert text_and_choice(button, "ignored") == ("Yes", "yes-id")
    assert text_and_choice(row, "x") == ("Two", "r2")
    assert text_and_choice(template, "x") == ("Track order", "track")
    assert text_and_choice(plain, "hi") == ("hi", None)


# ------------------------------------------------------------------ through a real Sender


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def emulated() -> AsyncIterator[tuple[CloudAPIEmulator, Sender]]:
    emulator = CloudAPIEmulator(access_token=TOKEN, phone_number_ids=[PNID])
    async with (
        emulator.serve() as url,
        Sender(TOKEN, PNID, base_url=url, retry=RetryPolicy.never()) as sender,
    ):
        yield emulator, sender


@pytest.fixture
def emu(emulated: tuple[CloudAPIEmulator, Sender]) -> tuple[CloudAPIEmulator, Sender]:
    emulated[0].reset()
    return emulated


async def test_every_rich_part_is_accepted_by_the_emulator(
    emu: tuple[CloudAPIEmulator, Sender],
) -> None:
    """Each part of a reply using every field reaches the emulator as a body Meta accepts,
    with the reaction on the user's message and the first quotable part quoting it."""
    emulator, sender = emu
    audio_id = await sender.upload_media(silent_voice_note(0.2), "audio/ogg")
    reply = AgentReply(
        text="Everything",
        reaction="👍",
        buttons=[("y", "Yes"), ("n", "No")],
        location=(52.52, 13.405),
        contacts=[Contact("Ada", phones=("+44 20",))],
        link_button=("Docs", "https://docs.example/a"),
        audio=b"ogg",
    )
    parts = merge_parts(
        reply, text("Everything") + [{"type": "audio", "id": audio_id, "mime_type": "audio/ogg"}]
    )
    quoted = False
    wamids = []
    for part in parts:
        reply_to = IN if can_quote(part) and not quoted else None
        quoted = quoted or reply_to is not None
        wamids.append(await send_rich_part(sender, USER, part, reply_to=reply_to, answering=IN))
    sent = emulator.messages
    assert [m.wamid for m in sent] == wamids
    assert [m.type for m in sent] == [
        "reaction",
        "audio",
        "location",
        "contacts",
        "interactive",
        "interactive",
    ]
    assert sent[0].content == {"message_id": IN, "emoji": "👍"}
    assert sent[1].content == {"id": audio_id, "voice": True} and sent[1].reply_to == IN
    assert [m.reply_to for m in sent[2:]] == [None] * 4
    assert sent[3].body["contacts"] == [
        {
            "name": {"formatted_name": "Ada", "first_name": "Ada"},
            "phones": [{"phone": "+44 20", "type": "CELL"}],
        }
    ]
    assert sent[4].content["type"] == "cta_url"
    assert sent[4].content["action"]["parameters"] == {
        "display_text": "Docs",
        "url": "https://docs.example/a",
    }
    assert sent[5].content["type"] == "button" and sent[5].text == "Everything"


async def test_a_ten_row_list_with_descriptions_is_accepted(
    emu: tuple[CloudAPIEmulator, Sender],
) -> None:
    """Ten choices with 24-character titles and 72-character descriptions go out as one list
    message the emulator accepts."""
    emulator, sender = emu
    reply = AgentReply(
        buttons=[(f"id{n}", f"{n:02d}" + "t" * 22, "d" * 72) for n in range(10)],
        list_button="Pick a slot",
    )
    [part] = rich_parts(reply)
    await send_rich_part(sender, USER, part)
    [sent] = emulator.messages
    rows = sent.content["action"]["sections"][0]["rows"]
    assert len(rows) == 10 and sent.content["action"]["button"] == "Pick a slot"
    assert rows[0] == {"id": "id0", "title": "00" + "t" * 22, "description": "d" * 72}


async def test_reaction_without_a_message_is_skipped(emu: tuple[CloudAPIEmulator, Sender]) -> None:
    """A heartbeat or greeting has no user message: its reaction is skipped, not sent."""
    emulator, sender = emu
    assert await send_rich_part(sender, USER, {"type": "reaction", "emoji": "👍"}) is None
    assert emulator.messages == []
    with pytest.raises(ValueError, match="not a rich part"):
        await send_rich_part(sender, USER, {"type": "text", "text": "x"})
    with pytest.raises(ValueError, match="'id' or a 'link'"):
        await send_rich_part(sender, USER, {"type": "audio"})
