"""What a simulated user sees of rich replies, and how they answer: ``reply.buttons``,
``reply.reaction``, ``reply.location``, ``reply.contacts``, ``reply.link_button``,
``reply.voice``; ``user.tap("Yes")`` posts the interactive webhook Meta sends; voice notes.

The bot here sends its rich parts itself through the interface's Sender (with the reply-plan
seam of wa_agent._rich), so these tests do not depend on the interface's own wiring of the
rich AgentReply fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from wa_agent import AgentReply, AgentRequest, Choice, Contact, LinkButton, Location
from wa_agent._rich import merge_parts, send_rich_part
from wa_agent.testing import Simulator, silent_voice_note

USER = "15551230001"


class RichBot:
    """An agent answering with an AgentReply that it sends part by part itself."""

    def __init__(self, answer: Callable[[AgentRequest], AgentReply]) -> None:
        self.answer_for = answer
        self.sim: Simulator | None = None
        self.requests: list[AgentRequest] = []

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        reply = self.answer_for(request)
        assert self.sim is not None and self.sim.interface.sender is not None
        sender = self.sim.interface.sender
        texts = [{"type": "text", "text": reply.text}] if reply.text else []
        for part in merge_parts(reply, texts):
            if part["type"] == "text":
                await sender.send_text(request.sender, part["text"])
            else:
                await send_rich_part(
                    sender,
                    request.sender,
                    part,
                    answering=request.message.id if request.message else None,
                )
        return AgentReply()  # everything was sent above


def menu(request: AgentRequest) -> AgentReply:
    if request.message is not None and request.message.choice is not None:
        message = request.message
        return AgentReply(text=f"You chose {message.choice_title} ({message.choice})")
    if request.text == "more":
        return AgentReply(
            text="Pick a time",
            list_button="Times",
            buttons=[Choice(f"t{h}", f"{h}:00", "free" if h % 2 else None) for h in range(9, 14)],
        )
    if request.text == "everything":
        return AgentReply(
            text="Here",
            reaction="👍",
            location=Location(latitude=52.52, longitude=13.405, name="Brandenburger Tor"),
            contacts=[Contact("Ada Lovelace", phones=("+44 20 7946 0000",))],
            link_button=("Open map", "https://maps.example/berlin"),
        )
    return AgentReply(text="Coffee or tea?", buttons=[("coffee", "Coffee"), ("tea", "Tea")])


async def start(answer: Callable[[AgentRequest], AgentReply]) -> tuple[Simulator, RichBot]:
    bot = RichBot(answer)
    sim = Simulator(bot, mode="chat")
    bot.sim = sim
    await sim.start()
    return sim, bot


async def test_buttons_are_exposed_and_a_tap_reaches_the_bot_as_meta_sends_it() -> None:
    """The reply lists its buttons as Choices; tap("Tea") posts an interactive button_reply
    (id and title) quoting that message, and the bot gets the title as text and the id as
    the message's choice."""
    sim, bot = await start(menu)
    try:
        user = sim.user(USER, "Ada")
        offer = await user.ask("hi")
        assert offer.type == "interactive" and offer.interactive == "button"
        assert offer.text == "Coffee or tea?"
        assert offer.buttons == (Choice("coffee", "Coffee"), Choice("tea", "Tea"))
        tap = await user.tap("Tea")
        answer = await user.next_reply()
        await sim.settle()
    finally:
        await sim.stop()
    assert answer.text == "You chose Tea (tea)"
    message = bot.requests[-1].message
    assert message is not None and message.id == tap
    assert message.raw["interactive"] == {
        "type": "button_reply",
        "button_reply": {"id": "tea", "title": "Tea"},
    }
    assert message.context is not None and message.context.id == offer.wamid


async def test_list_rows_tap_by_id_or_title() -> None:
    """Four or more choices are a list: the reply has list_button and rows with
    descriptions; tapping a row (by id here) posts a list_reply."""
    sim, bot = await start(menu)
    try:
        user = sim.user(USER)
        offer = await user.ask("more")
        assert offer.interactive == "list" and offer.list_button == "Times"
        assert [c.title for c in offer.buttons] == ["9:00", "10:00", "11:00", "12:00", "13:00"]
        assert offer.choice("t11") == Choice("t11", "11:00", "free")
        await user.tap("t11", on=offer)
        assert (await user.next_reply()).text == "You chose 11:00 (t11)"
        await sim.settle()
    finally:
        await sim.stop()
    raw = bot.requests[-1].message.raw  # type: ignore[union-attr]
    assert raw["interactive"] == {
        "type": "list_reply",
        "list_reply": {"id": "t11", "title": "11:00", "description": "free"},
    }


async def test_tapping_what_was_not_offered_is_a_clear_error() -> None:
    """tap() of a title nobody offered raises LookupError naming what is on offer; before
    any choices it says so; nothing is posted."""
    sim, bot = await start(menu)
    try:
        user = sim.user(USER)
        with pytest.raises(LookupError, match="offered no choices"):
            await user.tap("Coffee")
        await user.ask("hi")
        with pytest.raises(LookupError, match=r"latest offered \['Coffee', 'Tea'\]"):
            await user.tap("Water")
        with pytest.raises(LookupError):
            await user.tap("Tea", on="wamid.not-a-reply")
        await sim.settle()
    finally:
        await sim.stop()
    assert len(bot.requests) == 1


async def test_reaction_location_contacts_and_link_are_exposed() -> None:
    """A reply of every kind: the reaction is on the user's message, the location and the
    contact card are typed, the link button has its label and URL."""
    sim, _ = await start(menu)
    try:
        user = sim.user(USER)
        sent = await user.send_text("everything")
        replies = [await user.next_reply() for _ in range(4)]
        await sim.settle()
    finally:
        await sim.stop()
    reaction, location, contacts, link = replies
    assert (reaction.type, reaction.reaction, reaction.reacted_to) == ("reaction", "👍", sent)
    assert location.location == Location(latitude=52.52, longitude=13.405, name="Brandenburger Tor")
    assert contacts.contacts == (Contact("Ada Lovelace", phones=("+44 20 7946 0000",)),)
    assert link.link_button == LinkButton("Open map", "https://maps.example/berlin")
    assert link.text == "Here" and link.interactive == "cta_url"


async def test_voice_notes_both_ways() -> None:
    """send_voice() sends an OGG/Opus voice note (a second of silence by default) that the
    bot receives as a voice attachment; a voice note the bot sends has reply.voice."""

    def echo(request: AgentRequest) -> AgentReply:
        return AgentReply(audio=b"unused")  # the audio part is made below

    sim, bot = await start(echo)

    async def answer(request: AgentRequest) -> AgentReply:
        bot.requests.append(request)
        sender = sim.interface.sender
        assert sender is not None
        voice = request.attachments[0]
        media_id = await sender.upload_media(voice.data, "audio/ogg")
        [part] = merge_parts(
            AgentReply(), [{"type": "audio", "id": media_id, "mime_type": "audio/ogg"}]
        )
        await send_rich_part(sender, request.sender, part)
        return AgentReply()

    bot.answer = answer  # type: ignore[method-assign]
    try:
        user = sim.user(USER)
        await user.send_voice()
        reply = await user.next_reply()
        await sim.settle()
    finally:
        await sim.stop()
    [attachment] = bot.requests[-1].attachments
    assert attachment.voice and attachment.mime_type.startswith("audio/ogg")
    assert attachment.data == silent_voice_note()
    assert reply.type == "audio" and reply.voice and reply.data == silent_voice_note()


def test_reply_defaults_keep_old_constructors_working() -> None:
    """Reply's new fields default to nothing, so code building Reply positionally works."""
    from wa_agent.testing import Reply

    reply = Reply("text", "hi", "wamid.X", None, None, None, None, None, {})
    assert reply.buttons == () and reply.choice("x") is None and not reply.voice
    value: Any = reply.location
    assert value is None
