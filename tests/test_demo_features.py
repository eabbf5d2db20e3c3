"""The built-in demo bot shows each rich feature on a keyword, and its replies are bodies
the Cloud API emulator accepts."""

from __future__ import annotations

import pytest

from wa_agent import AgentReply, AgentRequest
from wa_agent._rich import merge_parts, send_rich_part
from wa_agent.agents import Attachment
from wa_agent.demo import DemoAgent
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.testing import CloudAPIEmulator, silent_voice_note


async def ask(text: str, **kw: object) -> AgentReply:
    return await DemoAgent().answer(AgentRequest(text=text, sender="15551230001", **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("word", "field", "check"),
    [
        ("menu", "choice_style", "buttons"),
        ("times", "choice_style", "list"),
        ("where", "location", "Brandenburger Tor"),
        ("contact", "contacts", "Ada Lovelace"),
        ("link", "link_button", "Open the docs"),
        ("thanks", "reaction", "❤️"),
    ],
)
async def test_keywords_answer_with_each_feature(word: str, field: str, check: str) -> None:
    """menu → reply buttons, times → a list, where → a location, contact → a card,
    link → a link button, thanks → a reaction; each with some text."""
    reply = await ask(word.upper())
    assert reply.text
    assert check in str(getattr(reply, field))


async def test_voice_note_is_echoed_as_its_transcript() -> None:
    """With a transcript as the request text, the demo says what it heard (and still
    describes the voice note); without one it only describes it."""
    note = Attachment("audio", silent_voice_note(), "audio/ogg; codecs=opus", voice=True)
    heard = await ask("book a table for two", attachments=(note,))
    assert heard.text is not None
    assert heard.text.splitlines()[0].startswith("Got your voice note: audio/ogg")
    assert 'I heard: "book a table for two"' in heard.text
    silent = await ask("", attachments=(note,))
    assert silent.text is not None and "I heard" not in silent.text


async def test_the_demo_replies_are_accepted_by_the_emulator() -> None:
    """Every feature reply goes through the reply plan and the Sender to the emulator as
    bodies Meta accepts."""
    emulator = CloudAPIEmulator(access_token="t")
    async with (
        emulator.serve() as url,
        Sender("t", "1", base_url=url, retry=RetryPolicy.never()) as sender,
    ):
        for word in ("menu", "times", "where", "contact", "link", "thanks"):
            reply = await ask(word)
            text = [{"type": "text", "text": reply.text}] if reply.text else []
            for part in merge_parts(reply, text):
                if part["type"] == "text":
                    await sender.send_text("15551230001", part["text"])
                else:
                    await send_rich_part(sender, "15551230001", part, answering="wamid.IN")
    assert [m.type for m in emulator.messages] == [
        "interactive",
        "interactive",
        "text",
        "location",
        "text",
        "contacts",
        "interactive",
        "reaction",
        "text",
    ]
