"""WhatsApp groups end to end through the Simulator (real uvicorn, signed webhooks, the Cloud
API emulator, a real WhatsAppInterface): a member's message is answered in the group (Meta's
"Group messaging" body: ``recipient_type: "group"``, the group id as ``to``) with only what
groups take (text and media; choices become text), a stranger in a group is not refused
privately, the Groups API webhooks are acknowledged as typed events and ignored, and a
group is one conversation with its own history."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import load_payload
from wa_agent import (
    AgentReply,
    AgentRequest,
    Event,
    GroupLifecycleEvent,
    GroupParticipantsEvent,
    GroupSettingsEvent,
    GroupStatusEvent,
    Media,
    WhatsAppInterface,
)
from wa_agent.demo import make_png
from wa_agent.interface import NOT_ALLOWED_MESSAGE
from wa_agent.testing import Simulator

GROUP = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
ALICE, BOB, MALLORY = "15551230001", "15551230002", "15551230666"


class Recorder:
    """An agent that answers with ``reply`` (default: what it was told and by whom) and
    records its requests."""

    def __init__(self, reply: AgentReply | None = None) -> None:
        self.reply = reply
        self.requests: list[AgentRequest] = []

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        return self.reply or AgentReply(text=f"{request.profile_name}: {request.text}")


class Watched(WhatsAppInterface):
    """The real interface, also keeping every event the webhook app handed it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Event] = []

    async def accept(self, events: list[Event]) -> str:
        self.events.extend(events)
        return await super().accept(events)


def group_body(kind: str, content: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "group",
        "to": GROUP,
        "type": kind,
        kind: content,
    }


async def test_a_members_message_is_answered_in_the_group_with_text_and_media() -> None:
    """An allowed member writes in the group: the agent gets the member as ``sender`` and the
    message's group id; every part of the reply goes to the group (recipient_type "group",
    ``to`` the group id, nothing to the member privately); groups take text, media and
    templates, so the reaction is dropped and the location, contact card and buttons
    become readable text (the buttons carrying the body)."""
    bot = Recorder(
        AgentReply(
            text="Lunch at noon?",
            buttons=[("y", "Yes"), ("n", "No")],
            reaction="👍",
            images=[Media(make_png(), "image/png", caption="the menu")],
            location=(52.5, 13.4),
            contacts=["Ada"],
        )
    )
    async with Simulator(bot, mode="chat", allowed_numbers=[ALICE, BOB]) as sim:
        alice = sim.user(ALICE, "Alice")
        group = sim.group(GROUP)
        await alice.send_text("hi all", group_id=GROUP)
        image, location, card, text = [await group.next_reply() for _ in range(4)]
        await sim.settle()
        sent = list(sim.emulator.messages)
    [request] = bot.requests
    assert request.sender == ALICE and request.profile_name == "Alice"
    assert request.message is not None and request.message.group_id == GROUP
    assert [m.body for m in sent] == [
        group_body("image", {"id": image.media_id, "caption": "the menu"}),
        group_body("text", {"body": "[location: 52.500000, 13.400000]"}),
        group_body("text", {"body": "[contact: Ada]"}),
        group_body("text", {"body": "Lunch at noon?\n[Yes] [No]"}),
    ]
    assert location.text == "[location: 52.500000, 13.400000]" and card.text == "[contact: Ada]"
    assert image.data == make_png() and text.text == "Lunch at noon?\n[Yes] [No]"
    assert alice.replies == [] and sim.emulator.sent_to(ALICE) == []


async def test_a_group_is_one_conversation_with_its_own_history() -> None:
    """In CHAT mode the members' messages in a group share the group's history (oldest
    first, each user turn naming its member), which is not any member's private history,
    and the reverse."""
    bot = Recorder()
    async with Simulator(bot, mode="chat", allowed_numbers=[ALICE, BOB]) as sim:
        alice, bob = sim.user(ALICE, "Alice"), sim.user(BOB, "Bob")
        group = sim.group(GROUP)
        for user, text in ((alice, "I bring bread"), (bob, "I bring cheese")):
            await user.send_text(text, group_id=GROUP)
            await group.next_reply()
            await sim.settle()
        await alice.ask("just between us")
        await bob.send_text("and wine?", group_id=GROUP)
        last = await group.next_reply()
        await sim.settle()
        store, name = sim.interface.store, sim.interface.name
        group_history = await store.get_history(name, GROUP)
        private = await store.get_history(name, ALICE)
    assert last.text == "Bob: and wine?"
    assert [r.sender for r in bot.requests] == [ALICE, BOB, ALICE, BOB]
    assert [(t.role, t.text) for t in bot.requests[3].history] == [
        ("user", "Alice: I bring bread"),
        ("assistant", "Alice: I bring bread"),
        ("user", "Bob: I bring cheese"),
        ("assistant", "Bob: I bring cheese"),
    ]
    assert bot.requests[2].history == ()  # Alice's private chat knows nothing of the group
    assert [t.text for t in group_history][-2:] == ["Bob: and wine?", "Bob: and wine?"]
    assert [(t.role, t.text) for t in private] == [
        ("user", "just between us"),
        ("assistant", "Alice: just between us"),
    ]
    assert await store.get_history(name, BOB) == []


async def test_a_members_private_chat_never_reaches_the_group() -> None:
    """What a member told the bot privately is not in the history the agent gets when that
    member writes in a group (it would be one careless answer away from the group)."""
    bot = Recorder()
    async with Simulator(bot, mode="chat") as sim:
        alice = sim.user(ALICE, "Alice")
        await alice.ask("my PIN is 4711")
        await alice.send_text("hello group", group_id=GROUP)
        await sim.group(GROUP).next_reply()
        await sim.settle()
    in_group = bot.requests[-1]
    assert in_group.message is not None and in_group.message.group_id == GROUP
    assert all("4711" not in t.text for t in in_group.history)


async def test_reset_in_a_group_clears_the_groups_history_only() -> None:
    """``/reset`` written in a group starts the group's conversation over; the member's
    private history is kept."""
    bot = Recorder()
    async with Simulator(bot, mode="chat") as sim:
        alice = sim.user(ALICE, "Alice")
        await alice.ask("private note")
        await alice.send_text("group note", group_id=GROUP)
        await sim.group(GROUP).next_reply()
        await alice.send_text("/reset", group_id=GROUP)
        await sim.group(GROUP).next_reply()
        await sim.settle()
        store, name = sim.interface.store, sim.interface.name
        group_history = await store.get_history(name, GROUP)
        private = await store.get_history(name, ALICE)
    assert group_history == []
    assert [t.text for t in private] == ["private note", "Alice: private note"]


class Thinking:
    """A conversation listener recording the "agent is thinking" indicator."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def thinking(self, contact: str, on: bool) -> None:
        self.calls.append((contact, on))

    def inbound(self, message: Any) -> None: ...
    def outbound(self, to: str, text: str, **_: Any) -> None: ...
    def status(self, update: Any) -> None: ...
    def error(self, contact: str, text: str) -> None: ...


async def test_the_thinking_indicator_of_a_group_turn_is_switched_off() -> None:
    """Listeners see the indicator turned on and off for the same conversation (the
    group), so a widget does not show a member as "thinking" forever."""
    listener = Thinking()
    async with Simulator(Recorder(), mode="chat") as sim:
        sim.interface.listeners.append(listener)
        await sim.user(ALICE).send_text("hi", group_id=GROUP)
        await sim.group(GROUP).next_reply()
        await sim.settle()
    assert listener.calls == [(GROUP, True), (GROUP, False)]


async def test_group_history_names_the_member_who_wrote() -> None:
    """In a group the agent can tell from the history who said what: each user turn names
    the member (profile name) who wrote it."""
    bot = Recorder()
    async with Simulator(bot, mode="chat") as sim:
        group = sim.group(GROUP)
        for user, text in ((sim.user(ALICE, "Alice"), "yes"), (sim.user(BOB, "Bob"), "no")):
            await user.send_text(text, group_id=GROUP)
            await group.next_reply()
            await sim.settle()
        history = await sim.interface.store.get_history(sim.interface.name, GROUP)
    users = [t.text for t in history if t.role == "user"]
    assert "Alice" in users[0] and "Bob" in users[1]


async def test_a_stranger_in_a_group_gets_no_private_refusal() -> None:
    """With ``allowed_numbers``, a non-member's message in a group is acknowledged and
    ignored: no refusal is sent to them privately (nor into the group), the agent is not
    asked. The same stranger writing privately is refused as usual."""
    bot = Recorder()
    async with Simulator(bot, allowed_numbers=[ALICE]) as sim:
        mallory = sim.user(MALLORY, "Mallory")
        wamid = await mallory.send_text("let me in", group_id=GROUP)
        await sim.settle()
        assert sim.emulator.messages == [] and sim.interface.stats.ignored == 1
        private = await mallory.ask("and now?")
        await sim.settle()
    assert wamid and bot.requests == []
    assert private.text == NOT_ALLOWED_MESSAGE
    assert [m.wa_id for m in sim.emulator.messages] == [MALLORY]
    assert sim.interface.stats.refused == 1


@pytest.mark.parametrize(
    ("payload", "kinds"),
    [
        ("group_lifecycle_create", [GroupLifecycleEvent, GroupLifecycleEvent]),
        ("group_lifecycle_delete", [GroupLifecycleEvent]),
        ("group_participants_update", [GroupParticipantsEvent] * 4),
        ("group_settings_update", [GroupSettingsEvent]),
        ("group_status_update", [GroupStatusEvent, GroupStatusEvent]),
    ],
)
async def test_groups_api_webhooks_are_typed_events_answered_ignored(
    payload: str, kinds: list[type[Event]]
) -> None:
    """Meta's Groups API webhooks (lifecycle, participants, settings, status), signed and
    posted to the real server, are answered ``200 {"status": "ignored"}``; the interface was
    handed them as typed group events (no UnknownEvent), asked no agent and sent nothing."""
    bot = Recorder()
    interface = Watched(bot, mode="chat")
    async with Simulator(interface) as sim:
        [ack] = await sim.deliver(load_payload(payload))
        await sim.settle()
    assert (ack.status_code, ack.json()) == (200, {"status": "ignored"})
    assert [type(e) for e in interface.events] == kinds
    assert bot.requests == [] and sim.emulator.messages == []
