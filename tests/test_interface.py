"""WhatsAppInterface end to end: real uvicorn on 127.0.0.1 (the bot and the Cloud API
emulator, both through the Simulator), signed Meta-shaped webhooks, real replies.

Covers SPEC §2 Hosting and §4 Behaviour: TASK/CHAT, reset, whitelist, every message type,
replies (read/typing, Markdown, splitting, media, apologies), quoting of follow-ups, and
isolation of 50 concurrent senders.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import load_payload
from wa_agent.agents import AgentReply, AgentRequest, Media
from wa_agent.demo import make_png
from wa_agent.interface import (
    DEFAULT_ANSWER_TYPES,
    DEFAULT_APOLOGY,
    DEFAULT_RESET_MESSAGE,
    NOT_ALLOWED_MESSAGE,
    WhatsAppInterface,
    normalize_number,
)
from wa_agent.testing import webhooks
from wa_agent.testing.simulator import Simulator

ALICE = "15551230001"  # also the sender of the tests/payloads samples
BOB = "15551230002"

Handler = Callable[[AgentRequest], Awaitable["str | AgentReply"]]


class Recorder:
    """An agent that records every request and answers with ``handler`` (default: echo)."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[AgentRequest] = []
        self._handler = handler

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        if self._handler is None:
            return AgentReply(text=f"echo: {request.text}")
        result = await self._handler(request)
        return result if isinstance(result, AgentReply) else AgentReply(text=result)

    def texts(self, sender: str | None = None) -> list[str]:
        return [r.text for r in self.requests if sender is None or r.sender == sender]


class GreetingRecorder(Recorder):
    """A Recorder whose agent has a ``greeting`` (as LLMAgent(greeting=...) has)."""

    greeting = "Welcome the user back to the tea shop."

    def __init__(self) -> None:
        async def handler(request: AgentRequest) -> str:
            if request.purpose == "greeting":
                return f"Hello again! ({request.text})"
            return f"echo: {request.text}"

        super().__init__(handler)


def texts_of(sim: Simulator, number: str) -> list[str]:
    return sim.emulator.texts_to(number)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


# -- modes -----------------------------------------------------------------------------------
async def test_task_mode_each_message_alone() -> None:
    """TASK mode: every message reaches the agent with no history, and is answered."""
    agent = Recorder()
    async with Simulator(agent, mode="task") as sim:
        alice = sim.user(ALICE, "Alice")
        assert (await alice.ask("one")).text == "echo: one"
        assert (await alice.ask("two")).text == "echo: two"
        assert (await alice.ask("three")).text == "echo: three"
        await sim.settle()
        assert agent.texts() == ["one", "two", "three"]
        assert all(r.history == () for r in agent.requests)
        assert all(r.purpose == "message" and r.sender == ALICE for r in agent.requests)
        assert agent.requests[0].profile_name == "Alice"
        assert await sim.interface.store.get_history(sim.interface.name, ALICE) == []


async def test_chat_mode_history_per_sender_in_order() -> None:
    """CHAT mode: each request carries that sender's own turns, oldest first; another
    sender's turns never appear."""
    agent = Recorder()
    async with Simulator(agent, mode="chat") as sim:
        alice, bob = sim.user(ALICE, "Alice"), sim.user(BOB, "Bob")
        await alice.ask("a1")
        await bob.ask("b1")
        await alice.ask("a2")
        await bob.ask("b2")
        await alice.ask("a3")
        await sim.settle()
        by_text = {r.text: r for r in agent.requests}
        assert by_text["a1"].history == ()
        assert [(t.role, t.text) for t in by_text["a3"].history] == [
            ("user", "a1"),
            ("assistant", "echo: a1"),
            ("user", "a2"),
            ("assistant", "echo: a2"),
        ]
        assert [(t.role, t.text) for t in by_text["b2"].history] == [
            ("user", "b1"),
            ("assistant", "echo: b1"),
        ]
        assert by_text["a1"].history == () and by_text["b1"].history == ()
        # The user turns carry their wamid (for quoting/audits).
        assert by_text["a3"].history[0].message_id == alice.sent[0]


async def test_mode_accepts_enum_and_any_case_string() -> None:
    """``mode`` takes the enum or "task"/"chat" in any case; anything else is a ValueError."""
    from wa_agent.interface import InterfaceMode

    for value, expected in (
        (InterfaceMode.CHAT, InterfaceMode.CHAT),
        ("chat", InterfaceMode.CHAT),
        ("CHAT", InterfaceMode.CHAT),
        ("Task", InterfaceMode.TASK),
    ):
        assert WhatsAppInterface(Recorder(), mode=value).mode is expected
    with pytest.raises(ValueError, match="task' or 'chat"):
        WhatsAppInterface(Recorder(), mode="group")


# -- reset -----------------------------------------------------------------------------------
async def test_reset_clears_only_that_senders_history() -> None:
    """``/reset`` in CHAT mode clears the sender's history only, confirms with the default
    message, does not run the agent, and is marked read."""
    agent = Recorder()
    async with Simulator(agent, mode="chat") as sim:
        alice, bob = sim.user(ALICE), sim.user(BOB)
        await alice.ask("a1")
        await bob.ask("b1")
        reply = await alice.ask("  /RESET ")
        assert reply.text == DEFAULT_RESET_MESSAGE
        assert agent.texts() == ["a1", "b1"]
        await alice.ask("a2")
        await bob.ask("b2")
        await sim.settle()
        by_text = {r.text: r for r in agent.requests}
        assert by_text["a2"].history == ()
        assert [t.text for t in by_text["b2"].history] == ["b1", "echo: b1"]
        store, name = sim.interface.store, sim.interface.name
        assert [t.text for t in await store.get_history(name, ALICE)] == ["a2", "echo: a2"]
        assert len(await store.get_history(name, BOB)) == 4
        assert alice.sent[1] in {r.message_id for r in sim.emulator.reads}


async def test_reset_confirmation_is_the_agents_greeting() -> None:
    """With an agent that has ``greeting``, the reset confirmation is generated by the agent
    (purpose="greeting", from the greeting text, with no history)."""
    agent = GreetingRecorder()
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        await alice.ask("hi")
        reply = await alice.ask("/reset")
        assert reply.text == f"Hello again! ({GreetingRecorder.greeting})"
        greeting = agent.requests[-1]
        assert greeting.purpose == "greeting"
        assert greeting.text == GreetingRecorder.greeting
        assert greeting.history == () and greeting.sender == ALICE


async def test_reset_greeting_failure_falls_back_to_the_default_message() -> None:
    """If the agent fails while generating the greeting, the user still gets the default
    confirmation and the history is still cleared."""

    class Broken(Recorder):
        greeting = "Say hi."

    async def handler(request: AgentRequest) -> str:
        if request.purpose == "greeting":
            raise RuntimeError("model down")
        return "ok"

    agent = Broken(handler)
    async with Simulator(agent, mode="chat", reset_message="Cleared.") as sim:
        alice = sim.user(ALICE)
        await alice.ask("hi")
        assert (await alice.ask("/reset")).text == "Cleared."
        await sim.settle()
        assert await sim.interface.store.get_history(sim.interface.name, ALICE) == []


async def test_reset_command_none_disables_reset() -> None:
    """``reset_command=None``: "/reset" is ordinary text that reaches the agent, and the
    history is kept."""
    agent = Recorder()
    async with Simulator(agent, mode="chat", reset_command=None) as sim:
        alice = sim.user(ALICE)
        await alice.ask("a1")
        assert (await alice.ask("/reset")).text == "echo: /reset"
        await alice.ask("a2")
        await sim.settle()
        assert agent.texts() == ["a1", "/reset", "a2"]
        assert [t.text for t in agent.requests[-1].history] == [
            "a1",
            "echo: a1",
            "/reset",
            "echo: /reset",
        ]


async def test_reset_in_task_mode_is_just_text() -> None:
    """TASK mode has no history to reset: "/reset" goes to the agent like any text."""
    agent = Recorder()
    async with Simulator(agent, mode="task") as sim:
        assert (await sim.user(ALICE).ask("/reset")).text == "echo: /reset"


async def test_custom_reset_command() -> None:
    """A custom ``reset_command`` works; the default one then is plain text."""
    agent = Recorder()
    async with Simulator(agent, mode="chat", reset_command="!new") as sim:
        alice = sim.user(ALICE)
        await alice.ask("a1")
        assert (await alice.ask("/reset")).text == "echo: /reset"
        assert (await alice.ask("!NEW")).text == DEFAULT_RESET_MESSAGE
        await alice.ask("a2")
        await sim.settle()
        assert agent.requests[-1].history == ()


# -- whitelist -------------------------------------------------------------------------------
def test_allowed_numbers_are_normalised() -> None:
    """``+``, spaces, dashes, parentheses and a 00 prefix are tolerated on both sides."""
    interface = WhatsAppInterface(
        Recorder(), allowed_numbers=["+1 555-123-0001", "0049 (151) 234567", 15551230003]
    )
    assert interface.allowed_numbers == frozenset({"15551230001", "49151234567", "15551230003"})
    assert interface.is_user_allowed("15551230001")
    assert interface.is_user_allowed("+1 (555) 123 0001")
    assert interface.is_user_allowed("49151234567")
    assert interface.is_user_allowed("15551230003")
    assert not interface.is_user_allowed("15551230002")
    assert WhatsAppInterface(Recorder()).is_user_allowed("anyone")
    assert normalize_number("+49 151-234 567") == "49151234567"
    assert normalize_number(" US.13491208655302741918 ") == "US.13491208655302741918"


async def test_whitelist_refuses_others_and_stores_nothing_for_them() -> None:
    """A sender not in ``allowed_numbers`` gets exactly "This operation not allowed" once
    (even when Meta delivers the message three times); the agent never runs for them and the
    store holds no history, inbox item or last-inbound time for them."""
    agent = Recorder()
    async with Simulator(agent, mode="chat", allowed_numbers=["+1 555-123-0001"]) as sim:
        alice, mallory = sim.user(ALICE), sim.user(BOB)
        assert (await alice.ask("hi")).text == "echo: hi"
        item = webhooks.text_message(BOB, "let me in")
        body = webhooks.envelope(messages=[item])
        responses = await sim.deliver(body, times=3)
        assert all(r.status_code == 200 for r in responses)
        await sim.settle()
        reply = await mallory.next_reply(timeout=5)
        assert reply.text == NOT_ALLOWED_MESSAGE
        # A later redelivery still sends nothing more.
        await sim.deliver(body)
        await mallory.send_text("again")
        await sim.settle()
        await sim.emulator.wait_for_messages(2, to=BOB)
        assert texts_of(sim, BOB) == [NOT_ALLOWED_MESSAGE, NOT_ALLOWED_MESSAGE]
        assert agent.texts() == ["hi"]
        store, name = sim.interface.store, sim.interface.name
        assert await store.get_history(name, BOB) == []
        assert await store.pending(name, BOB) == []
        assert await store.last_inbound(name, BOB) is None
        assert await store.last_inbound(name, ALICE) is not None
        assert sim.interface.health()["refused"] == 5


async def test_refused_sender_reactions_get_no_refusal() -> None:
    """Messages that would not be answered anyway (a reaction to the refusal, say) from a
    refused sender are ignored silently, so a stranger cannot make the bot talk."""
    async with Simulator(Recorder(), allowed_numbers=[ALICE]) as sim:
        mallory = sim.user(BOB)
        await mallory.send_text("hi")
        refusal = await mallory.next_reply()
        await mallory.react(refusal.wamid, "\N{THUMBS DOWN SIGN}")
        await sim.settle()
        assert texts_of(sim, BOB) == [NOT_ALLOWED_MESSAGE]


# -- inbound message types -------------------------------------------------------------------
VIDEO = b"\x00\x00\x00\x18ftypmp42" + os.urandom(200)
VOICE = b"OggS" + os.urandom(300)
PDF = b"%PDF-1.4\n" + os.urandom(500)
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + os.urandom(100)


async def test_every_media_type_reaches_the_agent_as_bytes() -> None:
    """image, video, voice note, document (filename + caption) and sticker are downloaded and
    given to the agent as attachments with mime type, filename, caption and voice flag."""
    agent = Recorder()
    png = make_png(8, 8)
    async with Simulator(agent) as sim:
        alice = sim.user(ALICE)
        await alice.send_image(png, "image/png", caption="my cat")
        await alice.send_media("video", VIDEO, "video/mp4", caption="a clip")
        await alice.send_voice(VOICE)
        await alice.send_document(PDF, "report.pdf", caption="Q3 numbers")
        await alice.send_media("sticker", WEBP, "image/webp")
        await sim.settle()
        assert len(texts_of(sim, ALICE)) == 5
    got = {r.attachments[0].kind: r for r in agent.requests}
    assert set(got) == {"image", "video", "audio", "document", "sticker"}
    image = got["image"].attachments[0]
    assert (image.data, image.mime_type, image.caption) == (png, "image/png", "my cat")
    assert got["image"].text == "my cat"
    video = got["video"].attachments[0]
    assert (video.data, video.mime_type, video.caption) == (VIDEO, "video/mp4", "a clip")
    voice = got["audio"].attachments[0]
    assert voice.data == VOICE and voice.voice and voice.mime_type.startswith("audio/ogg")
    doc = got["document"].attachments[0]
    assert (doc.data, doc.filename, doc.caption, doc.mime_type) == (
        PDF,
        "report.pdf",
        "Q3 numbers",
        "application/pdf",
    )
    sticker = got["sticker"].attachments[0]
    assert (sticker.data, sticker.mime_type) == (WEBP, "image/webp")
    assert all(len(r.attachments) == 1 for r in agent.requests)


async def test_chat_history_names_media_turns() -> None:
    """CHAT mode: a media message (even without a caption) and a media-only reply leave
    readable turns in the history, not empty ones a model would drop."""
    png = make_png(4, 4)

    async def handler(request: AgentRequest) -> AgentReply:
        if request.text == "draw":
            return AgentReply(images=[png])
        return AgentReply(text="noted")

    agent = Recorder(handler)
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        # One at a time, each answered before the next (quick follow-ups would be
        # coalesced into one turn: see the coalescing tests).
        await alice.send_image(png, "image/png", caption="my cat")
        await sim.settle()
        await alice.send_voice(VOICE)
        await sim.settle()
        await alice.send_document(PDF, "report.pdf")
        await sim.settle()
        await alice.send_text("draw")
        await sim.settle()
        await alice.send_text("what did we share?")
        await sim.settle()
    assert [(t.role, t.text) for t in agent.requests[-1].history] == [
        ("user", "[image] my cat"),
        ("assistant", "noted"),
        ("user", "[voice note]"),
        ("assistant", "noted"),
        ("user", '[document "report.pdf"]'),
        ("assistant", "noted"),
        ("user", "draw"),
        ("assistant", "[sent 1 image]"),
    ]


async def test_media_download_failure_gives_the_agent_a_note() -> None:
    """A media lookup the Cloud API refuses, or media over the size cap, reaches the agent as
    a structured note (``AgentRequest.notes``, no attachment) while ``text`` stays exactly
    what the user wrote (the caption), so the failure's wording cannot change its meaning;
    the user still gets an answer."""
    agent = Recorder()
    async with Simulator(agent, media_max_bytes=1000) as sim:
        alice = sim.user(ALICE)
        sim.emulator.fail_next(1, 100, endpoint="media")
        await alice.send_image(make_png(4, 4), "image/png", caption="look")
        assert ((await alice.next_reply()).text or "").startswith("echo: look")
        await alice.send_document(os.urandom(5000), "big.pdf")
        await alice.next_reply()
        await sim.settle()
    first, second = agent.requests
    assert first.attachments == () and first.text == "look"
    note = "the image the user sent could not be downloaded (InvalidRequestError)"
    assert first.notes == (note,)
    assert second.attachments == () and second.text == ""
    assert len(second.notes) == 1 and "document" in second.notes[0]


async def test_structured_messages_are_rendered_as_readable_text() -> None:
    """Locations, contacts, interactive button/list replies, template buttons and orders
    reach the agent as readable text (the raw Message is attached too); a tapped button or
    list row gives its title as the text and its id as ``AgentRequest.choice``."""
    agent = Recorder()
    async with Simulator(agent) as sim:
        alice = sim.user(ALICE)
        await alice.send_location(
            52.520008, 13.404954, name="Alexanderplatz", address="10178 Berlin"
        )
        await alice.share_contact("Grace Hopper", ["+1 555 0100"])
        await alice.tap_button("yes-1", "Yes, please")
        await alice.choose_row("slot-14", "14:00", description="Afternoon slot")
        await sim.deliver(
            webhooks.envelope(
                messages=[webhooks.button_reply_message(ALICE, "Stop promotions", "STOP")]
            )
        )
        await sim.deliver(load_payload("order"))
        await sim.settle()
        assert len(texts_of(sim, ALICE)) == 6
    texts = agent.texts()
    assert texts[0] == "[location: 52.520008, 13.404954 — Alexanderplatz, 10178 Berlin]"
    assert texts[1] == "[contact: Grace Hopper, +1 555 0100]"
    assert texts[2] == "Yes, please"
    assert texts[3] == "14:00"
    assert [r.choice for r in agent.requests] == [None, None, "yes-1", "slot-14", "STOP", None]
    assert texts[4] == "Stop promotions"
    assert texts[5] == (
        "[order: 2 x sku-tea-01 at 4.5 EUR; 1 x sku-mug-07 at 12.0 EUR]\nPlease deliver after 5pm"
    )
    assert [r.message.type if r.message else None for r in agent.requests] == [
        "location",
        "contacts",
        "interactive",
        "interactive",
        "button",
        "order",
    ]
    interactive = agent.requests[2].message
    assert interactive is not None and interactive.interactive is not None
    assert interactive.interactive.id == "yes-1"


OPT_IN = ("reaction", "edit", "revoke", "system", "unsupported")


async def _send_opt_in_types(sim: Simulator) -> None:
    await sim.user(ALICE).react("wamid.earlier", "\N{THUMBS UP SIGN}")
    for name in ("edit", "revoke", "system_user_changed_number", "unsupported"):
        await sim.deliver(load_payload(name))
    await sim.user(ALICE).send_text("ping")
    await sim.settle()


async def test_reactions_edits_revokes_system_unsupported_not_answered_by_default() -> None:
    """By default reactions, edits, revokes, system and unsupported messages never reach the
    agent and get no reply (the text after them is answered normally)."""
    agent = Recorder()
    async with Simulator(agent) as sim:
        await _send_opt_in_types(sim)
        assert agent.texts() == ["ping"]
        assert texts_of(sim, ALICE) == ["echo: ping"]
        assert sim.interface.health()["ignored"] == 5
    assert not set(OPT_IN) & DEFAULT_ANSWER_TYPES


async def test_opted_in_types_are_answered_as_readable_text() -> None:
    """With ``answer_types`` listing them, those messages reach the agent as readable text."""
    agent = Recorder()
    async with Simulator(agent, answer_types=DEFAULT_ANSWER_TYPES | set(OPT_IN)) as sim:
        await _send_opt_in_types(sim)
        assert len(texts_of(sim, ALICE)) == 6
    texts = agent.texts()
    assert texts[0] == "[reaction \N{THUMBS UP SIGN} to wamid.earlier]"
    assert texts[1] == "[edited an earlier message] Hello, bot! (edited)"
    assert texts[2] == "[deleted an earlier message]"
    assert texts[3] == "User A changed from 15551230001 to 15551230077"
    assert texts[4] == "[unsupported message]"
    assert texts[5] == "ping"


# -- replies ---------------------------------------------------------------------------------
async def test_mark_read_and_typing_before_the_agent_finishes() -> None:
    """The message is marked read with the typing indicator while the agent still works."""
    release = asyncio.Event()

    async def handler(request: AgentRequest) -> str:
        await release.wait()
        return "done"

    async with Simulator(Recorder(handler)) as sim:
        wamid = await sim.user(ALICE).send_text("think hard")
        await wait_until(lambda: any(r.message_id == wamid for r in sim.emulator.reads))
        assert sim.emulator.messages == []  # the agent has not answered yet
        read = next(r for r in sim.emulator.reads if r.message_id == wamid)
        assert read.typing
        release.set()
        assert (await sim.user(ALICE).next_reply()).text == "done"


async def test_markdown_is_converted_and_long_replies_split_in_order() -> None:
    """``**b**`` becomes ``*b*``; a reply over 4096 characters arrives as several messages,
    each within the limit, in order, together holding the whole text."""
    paragraphs = [
        f"Paragraph {i}: " + " ".join(f"word{i}-{j}" for j in range(120)) for i in range(12)
    ]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text) > 3 * 4096

    async def handler(request: AgentRequest) -> str:
        return "**bold** and [a link](https://example.com)" if request.text == "md" else long_text

    async with Simulator(Recorder(handler)) as sim:
        alice = sim.user(ALICE)
        assert (await alice.ask("md")).text == "*bold* and a link (https://example.com)"
        alice.take_replies()
        await alice.send_text("long")
        await sim.settle()
        parts = [r.text or "" for r in alice.take_replies()]
    assert len(parts) >= 4
    assert all(len(p) <= 4096 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(long_text.split())
    assert parts[0].startswith("Paragraph 0:")


async def test_reply_media_is_uploaded_and_sent(tmp_path: Path) -> None:
    """Images and files in an AgentReply (bytes, Path, a str path inside ``media_dir``,
    Media, link) are uploaded (or linked) and sent after the text, with captions and file
    names."""
    png = make_png(16, 16)
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(64)
    pic = tmp_path / "pic.png"
    pic.write_bytes(make_png(4, 4, (255, 0, 0)))
    doc = tmp_path / "invoice.pdf"
    doc.write_bytes(PDF)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"plain notes")

    async def handler(request: AgentRequest) -> AgentReply:
        return AgentReply(
            text="Here you go",
            images=[
                png,
                pic,
                Media(data=jpeg, mime_type="image/jpeg", caption="a jpeg"),
                "https://example.com/cat.jpg",
            ],
            files=[
                doc,
                Media(
                    data=b"hello, file",
                    mime_type="text/plain",
                    filename="hi.txt",
                    caption="greetings",
                ),
                "notes.txt",
            ],
        )

    async with Simulator(Recorder(handler), media_dir=tmp_path) as sim:
        alice = sim.user(ALICE)
        await alice.send_text("send stuff")
        await sim.settle()
        replies = alice.take_replies()
    assert [r.type for r in replies] == ["text"] + ["image"] * 4 + ["document"] * 3
    assert replies[0].text == "Here you go"
    assert replies[1].data == png and replies[1].mime_type == "image/png"
    assert replies[2].data == pic.read_bytes()
    assert replies[3].data == jpeg and replies[3].text == "a jpeg"
    assert replies[4].raw["image"] == {"link": "https://example.com/cat.jpg"}
    assert (replies[5].data, replies[5].filename) == (PDF, "invoice.pdf")
    assert (replies[6].data, replies[6].filename, replies[6].text) == (
        b"hello, file",
        "hi.txt",
        "greetings",
    )
    assert (replies[7].data, replies[7].filename) == (b"plain notes", "notes.txt")


async def test_unsendable_reply_media_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Media the agent returns that cannot be sent (a missing file, an unsupported type) is
    logged with the stack and skipped; the rest of the reply is still sent once, and a reply
    with nothing sendable becomes the apology instead of being retried forever."""

    async def handler(request: AgentRequest) -> AgentReply:
        if request.text == "only bad":
            return AgentReply(files=[tmp_path / "missing.pdf"])
        return AgentReply(
            text="text survives",
            images=[make_png(2, 2)],
            files=[
                tmp_path / "missing.pdf",
                Media(data=b"PK\x03\x04zip", mime_type="application/zip"),
            ],
        )

    agent = Recorder(handler)
    with caplog.at_level(logging.ERROR, logger="wa_agent.interface"):
        async with Simulator(agent) as sim:
            alice = sim.user(ALICE)
            await alice.send_text("mixed")
            await sim.settle()
            assert [r.type for r in alice.take_replies()] == ["text", "image"]
            await alice.send_text("only bad")
            await sim.settle()
            assert [r.text for r in alice.take_replies()] == [DEFAULT_APOLOGY]
            assert await sim.interface.store.pending(sim.interface.name) == []
    assert len(agent.requests) == 2
    failures = [r for r in caplog.records if "could not be sent" in r.getMessage()]
    assert len(failures) == 3 and all(r.exc_info for r in failures)


async def test_agent_exception_gives_the_apology_and_logs_the_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An agent exception: the user gets the short apology (never the exception text or a
    stack trace), the ERROR log has the exception's type and stack but not its text (which
    may quote user data: that is logged at DEBUG only), the message is not retried; the
    apology is configurable."""

    async def handler(request: AgentRequest) -> str:
        raise RuntimeError(f"db password is {request.text[::-1]}")  # from the user

    for apology in (None, "Oops, try later."):
        agent = Recorder(handler)
        options: dict[str, Any] = {} if apology is None else {"apology": apology}
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="wa_agent.interface"):
            async with Simulator(agent, mode="chat", **options) as sim:
                reply = await sim.user(ALICE).ask("2retnuh")
                await sim.settle()
                assert reply.text == (apology or DEFAULT_APOLOGY)
                assert texts_of(sim, ALICE) == [reply.text]
                assert sim.interface.health()["agent_errors"] == 1
                assert await sim.interface.store.pending(sim.interface.name) == []
        assert "hunter2" not in (reply.text or "") and "Traceback" not in (reply.text or "")
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("RuntimeError" in m and "in handler" in m for m in errors), errors
        assert not any("hunter2" in m for m in errors)
        assert not [
            r.getMessage() for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR
        ]
        assert len(agent.requests) == 1
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="wa_agent.interface"):
        async with Simulator(Recorder(handler)) as sim:
            await sim.user(ALICE).ask("2retnuh")
    debug = [r for r in caplog.records if r.exc_info and r.levelno == logging.DEBUG]
    assert debug and isinstance(debug[0].exc_info[1], RuntimeError)  # type: ignore[index]


async def test_sync_agent_function_runs_in_a_thread() -> None:
    """A plain function agent works end to end (it runs off the event loop)."""
    import threading

    threads: list[str] = []

    def agent(request: AgentRequest) -> str:
        threads.append(threading.current_thread().name)
        return request.text.upper()

    async with Simulator(agent) as sim:
        assert (await sim.user(ALICE).ask("shout")).text == "SHOUT"
    assert threads and threads[0] != threading.main_thread().name


async def test_agent_timeout_gives_the_apology() -> None:
    """An agent slower than ``agent_timeout`` is cancelled and the user gets the apology."""
    cancelled = asyncio.Event()

    async def handler(request: AgentRequest) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    async with Simulator(Recorder(handler), agent_timeout=0.2, apology="Timed out.") as sim:
        assert (await sim.user(ALICE).ask("slow")).text == "Timed out."
        assert cancelled.is_set()


async def test_framework_agent_in_chat_mode_gets_history_in_its_prompt() -> None:
    """An object of another framework (``arun(prompt)``) works end to end; in CHAT mode its
    prompt carries the sender's own earlier turns."""

    class FrameworkAgent:
        def __init__(self) -> None:
            self.prompts: list[str] = []

        async def arun(self, prompt: str) -> Any:
            self.prompts.append(prompt)
            return type("RunResponse", (), {"content": f"#{len(self.prompts)}"})()

    agent = FrameworkAgent()
    async with Simulator(agent, mode="chat") as sim:
        assert (await sim.user(ALICE).ask("first")).text == "#1"
        assert (await sim.user(BOB).ask("other")).text == "#2"
        assert (await sim.user(ALICE).ask("second")).text == "#3"
    assert agent.prompts[0] == "first"
    assert agent.prompts[2] == "user: first\nassistant: #1\nuser: second"


# -- ordering and quoting --------------------------------------------------------------------
async def test_chat_follow_ups_are_coalesced_into_one_turn_and_first_reply_quotes() -> None:
    """CHAT: follow-ups sent while the first message is being answered are not dropped:
    the first reply quotes its message (it is no longer the latest turn); the two
    follow-ups are answered together in ONE next turn (text joined in order, each message
    in ``messages``, the first exchange in its history), not quoted; history keeps each user
    message as its own turn."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: AgentRequest) -> str:
        if request.text == "first":
            started.set()
            await release.wait()
        return f"re: {request.text}"

    agent = Recorder(handler)
    async with Simulator(agent, mode="chat") as sim:
        alice = sim.user(ALICE)
        first = await alice.send_text("first")
        await started.wait()
        second = await alice.send_text("second")
        third = await alice.send_text("third")
        release.set()
        await sim.settle()
        replies = alice.take_replies()
        stored = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert [r.text for r in replies] == ["re: first", "re: second\nthird"]
    assert replies[0].reply_to == first
    assert replies[1].reply_to is None
    assert agent.texts() == ["first", "second\nthird"]
    request = agent.requests[1]
    assert [m.id for m in request.messages] == [second, third]
    assert request.message is not None and request.message.id == third
    assert [t.text for t in request.history] == ["first", "re: first"]
    assert [(t.role, t.text, t.message_id) for t in stored] == [
        ("user", "first", first),
        ("assistant", "re: first", None),
        ("user", "second", second),
        ("user", "third", third),
        ("assistant", "re: second\nthird", None),
    ]


async def test_task_follow_ups_run_at_once_and_replies_keep_their_order() -> None:
    """TASK: follow-ups sent while the first message's agent still runs are answered
    concurrently (each on its own), but every reply waits for the earlier ones: the user
    gets them in the order they wrote; replies that are no longer the latest quote their
    message."""
    release = asyncio.Event()
    running: set[str] = set()
    overlapped = asyncio.Event()

    async def handler(request: AgentRequest) -> str:
        running.add(request.text)
        if len(running) == 3:
            overlapped.set()
        if request.text == "first":
            await release.wait()  # the slowest: the others finish before it
        return f"re: {request.text}"

    agent = Recorder(handler)
    async with Simulator(agent, mode="task") as sim:
        alice = sim.user(ALICE)
        first = await alice.send_text("first")
        second = await alice.send_text("second")
        await alice.send_text("third")
        await asyncio.wait_for(overlapped.wait(), 5)  # all three agents ran at once
        await asyncio.sleep(0.05)
        assert alice.take_replies() == []  # "second" and "third" wait for "first"
        release.set()
        await sim.settle()
        replies = alice.take_replies()
    assert [r.text for r in replies] == ["re: first", "re: second", "re: third"]
    assert replies[0].reply_to == first and replies[1].reply_to == second
    assert replies[2].reply_to is None


async def test_lone_message_reply_is_not_quoted() -> None:
    """A reply to the latest message of the conversation does not quote it."""
    async with Simulator(Recorder()) as sim:
        assert (await sim.user(ALICE).ask("hi")).reply_to is None


# -- isolation under concurrency -------------------------------------------------------------
class Concurrency:
    """Counts how many agent calls overlap."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    async def run(self, seconds: float) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1


SENDERS = [f"1555990{n:04d}" for n in range(50)]


async def test_fifty_senders_at_once_task_mode_each_gets_its_own_answer() -> None:
    """50 senders write at once to an agent that sleeps ~1 s and echoes: each gets exactly
    its own answer, once, and the calls really overlap."""
    gauge = Concurrency()

    async def handler(request: AgentRequest) -> str:
        await gauge.run(1.0)
        return f"{request.sender} said {request.text}"

    async with Simulator(Recorder(handler), statuses=False, max_concurrency=64) as sim:
        users = [sim.user(n) for n in SENDERS]
        await asyncio.gather(*(u.send_text(f"hello {i}") for i, u in enumerate(users)))
        await sim.settle()
        for i, number in enumerate(SENDERS):
            assert texts_of(sim, number) == [f"{number} said hello {i}"]
        assert len(sim.emulator.messages) == 50
    assert gauge.peak >= 10  # one at a time would be 1; bounded by load on a busy machine


async def test_fifty_senders_chat_mode_histories_never_leak_and_reset_is_per_sender() -> None:
    """CHAT mode, 50 concurrent senders over two rounds with a ~1 s agent: every answer is
    built from that sender's own history only; one sender's reset (followed at once by a
    queued message) clears its history and leaves the 49 others' histories intact."""
    gauge = Concurrency()

    async def handler(request: AgentRequest) -> str:
        await gauge.run(1.0)
        own = "|".join(t.text for t in request.history)
        return f"{request.sender}:{request.text}[{own}]"

    async with Simulator(Recorder(handler), mode="chat", statuses=False, max_concurrency=64) as sim:
        users = [sim.user(n) for n in SENDERS]
        await asyncio.gather(*(u.send_text(f"r1-{i}") for i, u in enumerate(users)))
        await sim.settle()

        async def second_round(i: int, user: Any) -> None:
            if i == 0:
                await user.send_text("/reset")
                await user.send_text("after")
            else:
                await user.send_text(f"r2-{i}")

        await asyncio.gather(*(second_round(i, u) for i, u in enumerate(users)))
        await sim.settle()
        store, name = sim.interface.store, sim.interface.name
        for i, number in enumerate(SENDERS):
            r1 = f"{number}:r1-{i}[]"
            if i == 0:
                after = f"{number}:after[]"
                assert texts_of(sim, number) == [r1, DEFAULT_RESET_MESSAGE, after]
                expected = ["after", after]
            else:
                r2 = f"{number}:r2-{i}[r1-{i}|{r1}]"
                assert texts_of(sim, number) == [r1, r2], number
                expected = [f"r1-{i}", r1, f"r2-{i}", r2]
            assert [t.text for t in await store.get_history(name, number)] == expected
        assert len(sim.emulator.messages) == 101
    assert gauge.peak >= 10  # one at a time would be 1; bounded by load on a busy machine


async def test_health_shows_the_send_rate_and_store_failures() -> None:
    """``/health`` shows the Sender's effective rate limit (rate, burst, whether read
    receipts count, the throttle pause) and how many webhooks the store failed to record."""
    async with Simulator(Recorder()) as sim:
        await sim.user(ALICE).ask("hi")
        assert sim.bot_url is not None
        health = sim.interface.health()
    assert health["store_failures"] == 0
    rate = health["send_rate"]
    assert rate["read_receipts_count"] is False and rate["throttled_for"] == 0.0
    assert set(rate) == {"messages_per_second", "burst", "read_receipts_count", "throttled_for"}
