"""Rich replies end to end: an agent's AgentReply, hosted by a real WhatsAppInterface served
by uvicorn, answered to signed webhooks from the Simulator, reaches the Cloud API emulator as
the bodies Meta's API accepts, and taps come back to the agent as choices.

Every body is compared whole (field by field) with the shape of an example of Meta's OpenAPI
description (facebook/openapi, business-messaging-api_v23.0.yaml, request examples of
``POST /{Version}/{Phone-Number-ID}/messages``; the same examples tests/test_sender.py
follows): reply buttons "Send Reply Button", list "Send List Message", reaction "Send Reply
with Reaction Message", location "Send Location Message", contacts "Send Contact Message",
audio "Send Audio Message by ID", text "Send Text Message", image "Send Image Message by ID",
a quoted text "Send Reply to Text Message". The yaml has no ``cta_url`` or voice example:
those follow Meta's "Interactive CTA URL messages" and "Audio messages" pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from wa_agent import (
    AgentReply,
    AgentRequest,
    Choice,
    Contact,
    LinkButton,
    Location,
    Media,
    RetryPolicy,
    Turn,
    WhatsAppInterface,
)
from wa_agent.demo import make_png
from wa_agent.interface import DEFAULT_APOLOGY
from wa_agent.testing import Reply, SimulatedUser, Simulator, silent_voice_note, webhooks
from wa_agent.testing.emulator import SentMessage

USER = "15551230001"
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 400

Answer = Callable[[AgentRequest], "AgentReply | str | Awaitable[AgentReply | str]"]


class Bot:
    """An agent answering with ``answer(request)``; records every request it gets."""

    def __init__(self, answer: Answer) -> None:
        self.answer_for = answer
        self.requests: list[AgentRequest] = []

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        result = self.answer_for(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, AgentReply | str)
        return result if isinstance(result, AgentReply) else AgentReply(text=result)


def body(kind: str, content: Any, *, quoting: str | None = None) -> dict[str, Any]:
    """The whole request body Meta's examples show for a message of ``kind`` to USER."""
    out: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": kind,
        kind: content,
    }
    if quoting is not None:
        out["context"] = {"message_id": quoting}
    return out


def reply_buttons(text: str, *choices: tuple[str, str]) -> dict[str, Any]:
    """The ``interactive`` object of "Send Reply Button"."""
    return {
        "type": "button",
        "body": {"text": text},
        "action": {
            "buttons": [{"type": "reply", "reply": {"id": i, "title": t}} for i, t in choices]
        },
    }


def list_message(text: str, button: str, rows: list[dict[str, str]]) -> dict[str, Any]:
    """The ``interactive`` object of "Send List Message" (one untitled section: Meta wants a
    section title only when there are several)."""
    return {
        "type": "list",
        "body": {"text": text},
        "action": {"button": button, "sections": [{"rows": rows}]},
    }


def cta_url(text: str, label: str, url: str) -> dict[str, Any]:
    """The ``interactive`` object of Meta's "Interactive CTA URL messages" page."""
    return {
        "type": "cta_url",
        "body": {"text": text},
        "action": {"name": "cta_url", "parameters": {"display_text": label, "url": url}},
    }


async def exchange(
    answer: Answer, *texts: str, mode: str = "task", **options: Any
) -> tuple[list[str], list[SentMessage], Bot, Simulator]:
    """Send ``texts`` from USER one after the other, let the bot answer everything; the
    wamids sent, the messages the emulator accepted (in order), the bot, the simulator."""
    bot = Bot(answer)
    async with Simulator(bot, mode=mode, **options) as sim:
        user = sim.user(USER, "Ada")
        sent = []
        for text in texts:
            sent.append(await user.send_text(text))
            await sim.settle()
    return sent, list(sim.emulator.messages), bot, sim


# ------------------------------------------------------------------ every field, as Meta takes it


async def test_up_to_three_choices_are_reply_buttons_under_the_text() -> None:
    """1–3 choices: the text and the buttons are ONE interactive "button" message (the text
    its body; a bare string is its own id), nothing else is sent."""
    [wamid], sent, _, _ = await exchange(
        lambda r: AgentReply(
            text="Coffee or tea?", buttons=[("c", "Coffee"), Choice("t", "Tea"), "Water"]
        ),
        "hi",
    )
    assert [m.body for m in sent] == [
        body(
            "interactive",
            reply_buttons("Coffee or tea?", ("c", "Coffee"), ("t", "Tea"), ("Water", "Water")),
        )
    ]
    assert wamid


async def test_four_to_ten_choices_are_a_list_message() -> None:
    """4–10 choices (or any with a description) go out as one list message: rows with
    their descriptions, opened by ``list_button`` (default "Choose"), the text as its body;
    one choice with a description is a list too."""
    times = [Choice(f"t{h}", f"{h}:00", "free" if h % 2 else None) for h in range(9, 19)]
    _, sent, _, _ = await exchange(
        lambda r: {
            "times": AgentReply(text="When?", buttons=times, list_button="Times"),
            "four": AgentReply(text="Pick", buttons=["A", "B", "C", "D"]),
            "one": AgentReply(text="Sure?", buttons=[("y", "Yes", "book it now")]),
        }[r.text],
        "times",
        "four",
        "one",
    )
    rows = [
        {"id": f"t{h}", "title": f"{h}:00", **({"description": "free"} if h % 2 else {})}
        for h in range(9, 19)
    ]
    assert [m.body for m in sent] == [
        body("interactive", list_message("When?", "Times", rows)),
        body(
            "interactive", list_message("Pick", "Choose", [{"id": c, "title": c} for c in "ABCD"])
        ),
        body(
            "interactive",
            list_message(
                "Sure?", "Choose", [{"id": "y", "title": "Yes", "description": "book it now"}]
            ),
        ),
    ]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            lambda: AgentReply(text="Pick", buttons=[str(n) for n in range(11)]),
            id="eleven-choices",
        ),
        pytest.param(
            lambda: AgentReply(text="Pick", buttons=["A button title too long"]),
            id="button-title-21",
        ),
        pytest.param(
            lambda: AgentReply(text="Pick", buttons=["A", "B", "C", "A row title much too long"]),
            id="row-title-25",
        ),
        pytest.param(
            lambda: AgentReply(
                text="Pick", buttons=["A", "B", "C", "D"], list_button="A label much too long"
            ),
            id="list-button-21",
        ),
        pytest.param(
            lambda: AgentReply(link_button=("Open the documentation", "https://x.org")),
            id="link-label-22",
        ),
        pytest.param(
            lambda: AgentReply(link_button=("Open", "javascript:alert(1)")), id="link-not-http"
        ),
    ],
)
async def test_choices_over_meta_limits_give_the_user_the_apology(
    reply: Callable[[], AgentReply],
) -> None:
    """A reply over Meta's limits raises ValueError naming the limit when the agent builds
    it (documented: nothing is truncated): the user gets the apology, and nothing of the
    refused reply reaches the API."""

    def answer(request: AgentRequest) -> AgentReply:
        return reply()

    with pytest.raises(ValueError, match="at most|http"):
        reply()
    _, sent, _, sim = await exchange(answer, "hi")
    assert [m.body for m in sent] == [body("text", {"body": DEFAULT_APOLOGY})]
    assert sim.interface.stats.agent_errors == 1
    assert [c.status for c in sim.emulator.calls if c.endpoint == "messages"] == [200]


async def test_reaction_goes_on_the_message_being_answered() -> None:
    """``reaction`` is a reaction message on the user's message (its wamid), not a quote;
    a reaction-only reply is just that."""
    [wamid], sent, _, _ = await exchange(lambda r: AgentReply(reaction="👍"), "thanks!")
    assert [m.body for m in sent] == [body("reaction", {"message_id": wamid, "emoji": "👍"})]


async def test_location_contacts_and_link_button() -> None:
    """A location (with and without name/address), contact cards (name parts, phones,
    emails, organisation, urls) and a link button go out in Meta's shapes; a link button
    without text has the link's host as its body."""
    ada = Contact(
        "Ada Lovelace",
        phones=("+44 20 7946 0000",),
        emails=("ada@example.com",),
        organization="Analytical Engines",
        urls=("https://example.com/ada",),
    )
    _, sent, _, _ = await exchange(
        lambda r: {
            "pin": AgentReply(
                location=Location(
                    latitude=52.5163,
                    longitude=13.3777,
                    name="Brandenburger Tor",
                    address="Pariser Platz, 10117 Berlin",
                )
            ),
            "bare pin": AgentReply(location=(-33.8568, 151.2153)),
            "cards": AgentReply(contacts=[ada, "Charles Babbage"]),
            "link": AgentReply(link_button=LinkButton("Open map", "https://maps.example/b?z=3")),
        }[r.text],
        "pin",
        "bare pin",
        "cards",
        "link",
    )
    assert [m.body for m in sent] == [
        body(
            "location",
            {
                "latitude": 52.5163,
                "longitude": 13.3777,
                "name": "Brandenburger Tor",
                "address": "Pariser Platz, 10117 Berlin",
            },
        ),
        body("location", {"latitude": -33.8568, "longitude": 151.2153}),
        body(
            "contacts",
            [
                {
                    "name": {
                        "formatted_name": "Ada Lovelace",
                        "first_name": "Ada",
                        "last_name": "Lovelace",
                    },
                    "phones": [{"phone": "+44 20 7946 0000", "type": "CELL"}],
                    "emails": [{"email": "ada@example.com", "type": "WORK"}],
                    "org": {"company": "Analytical Engines"},
                    "urls": [{"url": "https://example.com/ada", "type": "WORK"}],
                },
                {
                    "name": {
                        "formatted_name": "Charles Babbage",
                        "first_name": "Charles",
                        "last_name": "Babbage",
                    }
                },
            ],
        ),
        body("interactive", cta_url("maps.example", "Open map", "https://maps.example/b?z=3")),
    ]


async def test_ogg_opus_audio_is_a_voice_note_other_audio_is_not() -> None:
    """``audio`` bytes are uploaded first and sent by media id: OGG/Opus with
    ``"voice": true`` (the bytes the user receives are the voice note), MP3 as plain audio;
    a link to an .ogg file is a voice note too."""
    voice = silent_voice_note(2.0)
    replies: dict[str, AgentReply] = {
        "voice": AgentReply(audio=voice),
        "song": AgentReply(audio=Media(MP3, mime_type="audio/mpeg", filename="song.mp3")),
        "link": AgentReply(audio="https://example.com/note.ogg"),
    }
    bot = Bot(lambda r: replies[r.text])
    async with Simulator(bot) as sim:
        user = sim.user(USER)
        got: list[Reply] = []
        for text in replies:
            await user.send_text(text)
            got.append(await user.next_reply())
        await sim.settle()
        uploads = [c.body for c in sim.emulator.calls if c.endpoint == "upload"]
    note, song, link = got
    assert note.raw == body("audio", {"id": note.media_id, "voice": True})
    assert note.voice and note.data == voice and note.mime_type == "audio/ogg"
    assert song.raw == body("audio", {"id": song.media_id})
    assert not song.voice and song.data == MP3 and song.mime_type == "audio/mpeg"
    assert link.raw == body("audio", {"link": "https://example.com/note.ogg", "voice": True})
    assert [u["type"] for u in uploads] == ["audio/ogg", "audio/mpeg"]


async def test_text_over_the_body_limit_keeps_its_tail_with_the_buttons() -> None:
    """Text and buttons are one interactive message; text over the 1024-character body limit
    is split: the head goes as text first, the tail is the buttons' body, nothing lost."""
    words = " ".join(f"word{n}" for n in range(300))  # about 2 200 characters
    _, sent, _, _ = await exchange(lambda r: AgentReply(text=words, buttons=["Go"]), "hi")
    assert [m.type for m in sent] == ["text", "text", "interactive"]
    interactive = sent[-1].body["interactive"]
    assert interactive == reply_buttons(interactive["body"]["text"], ("Go", "Go"))
    assert all(len(m.text or "") <= 1024 for m in sent)
    assert " ".join(m.text or "" for m in sent).split() == words.split()


async def test_every_field_at_once_in_the_documented_order() -> None:
    """A reply with every field: the reaction, the image, the voice note, the location, the
    contact card, the link button (its host as body) and last the buttons carrying the
    Markdown-converted text. Each body is Meta's shape; no part quotes."""
    reply = AgentReply(
        text="Here is **everything**",
        reaction="🎉",
        images=[Media(make_png(), "image/png", caption="green")],
        audio=silent_voice_note(),
        location=(52.52, 13.405),
        contacts=["Ada"],
        link_button=("Docs", "https://example.com/docs"),
        buttons=[("y", "Yes"), ("n", "No")],
    )
    [wamid], sent, _, _ = await exchange(lambda r: reply, "everything")
    image, audio = sent[1], sent[2]
    assert [m.body for m in sent] == [
        body("reaction", {"message_id": wamid, "emoji": "🎉"}),
        body("image", {"id": image.content["id"], "caption": "green"}),
        body("audio", {"id": audio.content["id"], "voice": True}),
        body("location", {"latitude": 52.52, "longitude": 13.405}),
        body("contacts", [{"name": {"formatted_name": "Ada", "first_name": "Ada"}}]),
        body("interactive", cta_url("example.com", "Docs", "https://example.com/docs")),
        body("interactive", reply_buttons("Here is *everything*", ("y", "Yes"), ("n", "No"))),
    ]


async def test_a_coalesced_chat_turn_reacts_to_the_newest_message() -> None:
    """Several quick messages answered as one CHAT turn: the reaction is on the newest of
    them (the one the reply answers)."""
    bot = Bot(lambda r: AgentReply(text=f"got {len(r.messages)}", reaction="👌"))
    async with Simulator(bot, mode="chat", debounce=0.5) as sim:
        user = sim.user(USER)
        first = await user.send_text("one")
        newest = await user.send_text("two")
        await sim.settle()
    [request] = bot.requests
    assert [m.id for m in request.messages] == [first, newest] and request.text == "one\ntwo"
    reaction, text = sim.emulator.messages
    assert reaction.body == body("reaction", {"message_id": newest, "emoji": "👌"})
    assert text.body == body("text", {"body": "got 2"})


async def test_a_late_reply_quotes_with_its_first_quotable_part() -> None:
    """A reply that is no longer the answer to the user's newest message quotes the message
    it answers, with its first part that can quote: the text, not the reaction before it
    (a reaction cannot quote); the later parts do not quote."""
    release = asyncio.Event()

    async def answer(request: AgentRequest) -> AgentReply:
        if request.text == "first":
            await release.wait()
            return AgentReply(text="about your first", reaction="👀", buttons=["OK"])
        return AgentReply(text="about your second")

    bot = Bot(answer)
    async with Simulator(bot, max_concurrency_per_sender=4) as sim:
        user = sim.user(USER)
        first = await user.send_text("first")
        while not bot.requests:
            await asyncio.sleep(0.01)
        await user.send_text("second")
        release.set()
        await sim.settle()
    assert [m.body for m in sim.emulator.messages] == [
        body("reaction", {"message_id": first, "emoji": "👀"}),
        body("interactive", reply_buttons("about your first", ("OK", "OK")), quoting=first),
        body("text", {"body": "about your second"}),
    ]


# ------------------------------------------------------------------ resuming a rich reply

EVERYTHING = AgentReply(
    text="All of it",
    reaction="👍",
    location=(52.52, 13.405),
    contacts=["Ada"],
    link_button=("Docs", "https://example.com/docs"),
    buttons=["Yes", "No"],
)
PARTS = ["reaction", "location", "contacts", "interactive", "interactive"]


class FailAfter:
    """A conversation listener that makes the emulator fail the next send (a 500, Meta's
    code 131000: retryable) once ``count`` parts of a reply were accepted."""

    def __init__(self, sim: Simulator, count: int) -> None:
        self.sim, self.count = sim, count

    def outbound(self, to: str, text: str, **_: Any) -> None:
        self.count -= 1
        if self.count == 0:
            self.sim.emulator.fail_next(1, 131000)

    def inbound(self, message: Any) -> None: ...
    def status(self, update: Any) -> None: ...
    def thinking(self, contact: str, on: bool) -> None: ...
    def error(self, contact: str, text: str) -> None: ...


async def test_a_send_failure_mid_reply_resumes_with_the_rest_once() -> None:
    """The third part of a five-part reply fails (500): the reply's progress was saved, so
    the retry sends parts three to five, once each, and the agent is not asked again."""
    bot = Bot(lambda r: EVERYTHING)
    async with Simulator(bot, retry=RetryPolicy.never(), sweep_interval=0.1) as sim:
        sim.interface.listeners.append(FailAfter(sim, 2))
        user = sim.user(USER)
        wamid = await user.send_text("everything")
        await sim.emulator.wait_for_messages(5, to=USER, timeout=10)
        await sim.settle()
        assert await sim.interface.store.pending(sim.interface.name, USER) == []
    statuses = [c.status for c in sim.emulator.calls if c.endpoint == "messages"]
    assert statuses == [200, 200, 500, 200, 200, 200]
    assert [m.type for m in sim.emulator.messages] == PARTS
    assert sim.emulator.messages[0].body == body("reaction", {"message_id": wamid, "emoji": "👍"})
    assert len(bot.requests) == 1 and sim.interface.stats.send_failures == 1


async def test_a_restart_mid_reply_sends_only_the_rest(tmp_path: Path) -> None:
    """The bot stops after two parts of a reply went out (the third failed and waits for a
    retry); a new process on the same SQLite inbox sends parts three to five, once, still
    reacting to the user's message, without asking the agent again."""
    store = tmp_path / "inbox.sqlite3"
    bot = Bot(lambda r: EVERYTHING)

    def interface() -> WhatsAppInterface:
        return WhatsAppInterface(bot, storage=store, sweep_interval=60.0, name="shop")

    async with Simulator(interface(), retry=RetryPolicy.never()) as before:
        before.interface.listeners.append(FailAfter(before, 2))
        wamid = await before.user(USER).send_text("everything")
        await before.emulator.wait_for_messages(2, to=USER)
        while before.interface.stats.send_failures == 0:
            await asyncio.sleep(0.01)
    async with Simulator(interface()) as after:
        await after.emulator.wait_for_messages(3, to=USER)
        await after.settle()
        assert await after.interface.store.pending("shop", USER) == []
    assert [m.type for m in before.emulator.messages] == PARTS[:2]
    assert [m.type for m in after.emulator.messages] == PARTS[2:]
    assert before.emulator.messages[0].body["reaction"]["message_id"] == wamid
    assert len(bot.requests) == 1


# ------------------------------------------------------------------ choices come back


async def menu_bot(request: AgentRequest) -> AgentReply:
    if request.choice is not None:
        return AgentReply(text=f"you chose {request.text} ({request.choice})")
    if request.text == "times":
        return AgentReply(
            text="When?",
            list_button="Times",
            buttons=[
                Choice("mon", "Mon"),
                Choice("tue", "Tue", "afternoon"),
                Choice("wed", "Wed"),
                Choice("thu", "Thu", "all day"),
            ],
        )
    return AgentReply(text="Shall we?", buttons=[("yes", "Yes"), ("no", "No")])


async def tap_round_trip(user: SimulatedUser, ask: str, tap: str) -> tuple[Reply, Reply, str]:
    await user.send_text(ask)
    offer = await user.next_reply()
    wamid = await user.tap(tap)
    return offer, await user.next_reply(), wamid


async def test_a_tapped_button_or_row_comes_back_as_title_and_choice() -> None:
    """Tapping a reply button (and a list row) posts Meta's interactive reply quoting the
    offer; the agent gets the title as ``text`` and the id as ``choice``; CHAT history keeps
    the bot's choices readably (``[choices: Yes | No]``) and the tap as its title."""
    bot = Bot(menu_bot)
    async with Simulator(bot, mode="chat") as sim:
        user = sim.user(USER)
        offer, answer, tap = await tap_round_trip(user, "hi", "Yes")
        rows, row_answer, row_tap = await tap_round_trip(user, "times", "Thu")
        await sim.settle()
        history = await sim.interface.store.get_history(sim.interface.name, USER, None)
    assert offer.buttons == (Choice("yes", "Yes"), Choice("no", "No"))
    assert answer.text == "you chose Yes (yes)" and answer.reply_to is None
    assert rows.interactive == "list" and row_answer.text == "you chose Thu (thu)"
    tapped = bot.requests[1]
    assert (tapped.text, tapped.choice) == ("Yes", "yes")
    assert tapped.message is not None and tapped.message.id == tap
    assert tapped.message.context is not None and tapped.message.context.id == offer.wamid
    assert [(t.role, t.text) for t in tapped.history] == [
        ("user", "hi"),
        ("assistant", "Shall we?\n[choices: Yes | No]"),
    ]
    row = bot.requests[3]
    assert (row.text, row.choice) == ("Thu", "thu")  # the title, not its description
    assert row.message is not None and row.message.id == row_tap
    assert [(t.role, t.text) for t in history] == [
        ("user", "hi"),
        ("assistant", "Shall we?\n[choices: Yes | No]"),
        ("user", "Yes"),
        ("assistant", "you chose Yes (yes)"),
        ("user", "times"),
        ("assistant", "When?\n[choices: Mon | Tue | Wed | Thu]"),
        ("user", "Thu"),
        ("assistant", "you chose Thu (thu)"),
    ]
    assert all(isinstance(t, Turn) for t in history)


async def test_a_template_quick_reply_comes_back_as_text_and_payload() -> None:
    """A tap on a template's quick-reply button (a ``button`` message) gives its text as
    ``text`` and its payload as ``choice``."""
    bot = Bot(menu_bot)
    async with Simulator(bot) as sim:
        await sim.deliver(
            webhooks.envelope(
                messages=[webhooks.button_reply_message(USER, "Track my order", "track-42")]
            )
        )
        await sim.settle()
    [request] = bot.requests
    assert (request.text, request.choice) == ("Track my order", "track-42")
    assert sim.emulator.messages[0].text == "you chose Track my order (track-42)"
