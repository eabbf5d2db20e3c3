"""How to test your own bot with the simulator: no Meta account, no network.

Run it with ``pytest examples/test_my_bot.py``. The ``wa_simulator`` fixture comes from
wa_agent's pytest plugin, registered automatically when wa_agent is installed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from wa_agent import AgentReply, AgentRequest

pytestmark = pytest.mark.anyio


async def my_agent(request: AgentRequest) -> str | AgentReply:
    """The bot under test: remembers names in CHAT mode, counts photos, asks for a rating
    with buttons and understands voice notes when it has a transcriber."""
    if request.choice is not None:  # a tapped button: the title is the text, the id here
        return f"Thanks for the {request.choice} rating!"
    if request.text.lower() == "rate us":
        return AgentReply(text="How was it?", buttons=[("good", "👍 Good"), ("bad", "👎 Bad")])
    if any(attachment.voice for attachment in request.attachments):
        return f"I heard: {request.text}" if request.text else "Please type it."
    if request.attachments:
        return f"Nice {request.attachments[0].kind}!"
    if request.text.lower().startswith("my name is "):
        return f"Hi {request.text[11:].strip()}!"
    for turn in reversed(request.history):
        if turn.role == "user" and turn.text.lower().startswith("my name is "):
            return f"You are {turn.text[11:].strip()}."
    return "Tell me your name."


async def test_remembers_each_users_name(wa_simulator: Callable[..., Awaitable[Any]]) -> None:
    """In CHAT mode each user's history is their own."""
    sim = await wa_simulator(my_agent, mode="chat")
    alice, bob = sim.user("15551230001", "Alice"), sim.user("15551230002", "Bob")
    assert (await alice.ask("my name is Alice")).text == "Hi Alice!"
    assert (await bob.ask("my name is Bob")).text == "Hi Bob!"
    assert (await alice.ask("who am I?")).text == "You are Alice."
    assert (await bob.ask("who am I?")).text == "You are Bob."


async def test_photos_reach_the_agent(wa_simulator: Callable[..., Awaitable[Any]]) -> None:
    """A photo arrives at the agent as an attachment; the reply goes back to the sender."""
    sim = await wa_simulator(my_agent)
    user = sim.user("15551230003")
    await user.send_image(b"\xff\xd8\xff fake jpeg", "image/jpeg", caption="my cat")
    assert (await user.next_reply()).text == "Nice image!"


async def test_survives_duplicate_deliveries(wa_simulator: Callable[..., Awaitable[Any]]) -> None:
    """Meta delivers webhooks at least once: three copies still give one reply."""
    from wa_agent.testing import webhooks

    sim = await wa_simulator(my_agent)
    message = webhooks.text_message("15551230004", "my name is Dee")
    responses = await sim.deliver(webhooks.envelope(messages=[message]), times=3)
    assert sorted(r.json()["status"] for r in responses) == ["ignored", "ignored", "processing"]
    await sim.settle()
    assert sim.emulator.texts_to("15551230004") == ["Hi Dee!"]


async def test_tapping_a_button(wa_simulator: Callable[..., Awaitable[Any]]) -> None:
    """The bot's buttons arrive as choices; tapping one sends what WhatsApp sends, and the
    agent gets the button's title as text and its id as ``request.choice``."""
    sim = await wa_simulator(my_agent)
    user = sim.user("15551230005")
    offer = await user.ask("rate us")
    assert offer.text == "How was it?"
    assert [choice.title for choice in offer.buttons] == ["👍 Good", "👎 Bad"]
    await user.tap("👍 Good")
    assert (await user.next_reply()).text == "Thanks for the good rating!"


async def test_voice_notes_are_transcribed(wa_simulator: Callable[..., Awaitable[Any]]) -> None:
    """With a transcriber (here a stand-in for Whisper), a voice note's transcript is the
    request's text; the recording itself stays an attachment."""

    async def transcriber(audio: bytes, mime_type: str) -> str:
        return "my name is Vera" if audio and mime_type.startswith("audio/ogg") else ""

    sim = await wa_simulator(my_agent, transcriber=transcriber)
    user = sim.user("15551230006")
    await user.send_voice()  # one second of OGG/Opus silence
    assert (await user.next_reply()).text == "I heard: my name is Vera"
