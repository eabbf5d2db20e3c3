"""PhoneWidget: the notebook chat box acting as a phone on the Simulator (no kernel needed:
ipywidgets models work without a front end, and the simulator runs on the test's loop)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wa_agent.agents import AgentReply, AgentRequest
from wa_agent.demo import DemoAgent, make_png
from wa_agent.phone import PhoneWidget
from wa_agent.testing import Simulator

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(DemoAgent(), mode="chat") as simulator:
        yield simulator


def _bubbles(html: str) -> list[str]:
    return re.findall(r'<div class="wa-phone-bubble wa-phone-(me|bot)"', html)


async def test_send_returns_replies_and_records_both_sides(sim: Simulator) -> None:
    """send() posts the text as the shown user, waits for the bot and returns its replies;
    the transcript holds the user's message (read by the bot) and the reply, in order."""
    phone = sim.phone("15551230001", "Alice")
    replies = await phone.send("hello")
    assert [r.text for r in replies] == [
        (
            "Hello Alice! I'm the wa_agent demo bot. Send me text, a photo, a document or a "
            "location, or ask me for a picture."
        )
    ]
    transcript = phone.transcript()
    assert [(m["from"], m["kind"]) for m in transcript] == [("me", "text"), ("bot", "text")]
    assert transcript[0]["text"] == "hello" and transcript[0]["status"] == "read"
    assert transcript[1]["text"] == replies[0].text
    assert transcript[1]["wamid"] == replies[0].wamid
    assert _bubbles(phone.html) == ["me", "bot"]
    assert "wa-phone-read" in phone.html
    phone.close()


async def test_everything_shown_is_escaped(sim: Simulator) -> None:
    """Message text, the bot's echo of it, captions and the user's name are shown as text:
    no tag from user input reaches the screen's HTML."""
    phone = sim.phone("15551230002", name=f"Eve {IMG}")
    await phone.send(f"look {SCRIPT} and {IMG}")
    await phone.send_image(make_png(), "image/png", caption=SCRIPT)
    html = phone.html
    assert "<script>window" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "Eve &lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;" in html
    bot_texts = [m["text"] for m in phone.transcript() if m["from"] == "bot"]
    assert SCRIPT in bot_texts[0]  # the bot echoed it; the screen still shows it as text
    phone.close()


async def test_send_button_runs_in_the_background_and_updates_live(sim: Simulator) -> None:
    """Clicking Send clears the box and returns at once; the message is posted by a
    background task and the screen changes again when the bot's reply arrives."""
    phone = sim.phone()
    screens: list[str] = []
    phone.screen.observe(lambda change: screens.append(change["new"]), names="value")
    phone.text.value = "  what time is it?  "
    phone.send_button.click()
    assert phone.text.value == ""
    assert phone.pending == 1 and phone.messages() == []  # nothing happened synchronously
    await phone.wait()
    assert phone.pending == 0
    transcript = phone.transcript()
    assert [(m["from"], m["text"]) for m in transcript] == [
        ("me", "what time is it?"),
        ("bot", 'You said: "what time is it?" (4 words, 16 characters).'),
    ]
    assert next(_bubbles(s) for s in screens) == ["me"]  # shown before the bot answered
    assert _bubbles(screens[-1]) == ["me", "bot"]
    phone.send_button.click()  # empty box: nothing is sent
    assert phone.pending == 0
    phone.close()


async def test_attach_image_sends_it_with_the_typed_caption(sim: Simulator) -> None:
    """A file put in the upload is sent as an image with the text box as caption, shown
    inline; the upload is reset; the bot answers about the image it downloaded."""
    phone = sim.phone()
    png = make_png(8, 8)
    phone.text.value = "my <b>cat</b>"
    # what the kernel does when the browser sends the picked file
    phone.upload.set_state(
        {
            "value": [
                {
                    "name": "cat.png",
                    "type": "image/png",
                    "size": len(png),
                    "content": memoryview(png),
                    "last_modified": 0,
                }
            ]
        }
    )
    assert phone.upload.value == () and phone.text.value == ""
    await phone.wait()
    me, bot = phone.transcript()
    assert (me["kind"], me["caption"], me["size"], me["mime_type"]) == (
        "image",
        "my <b>cat</b>",
        len(png),
        "image/png",
    )
    assert bot["text"].startswith(f"Got your image: image/png, {len(png)} bytes")
    assert '<img class="wa-phone-img" src="data:image/png;base64,' in phone.html
    assert "my &lt;b&gt;cat&lt;/b&gt;" in phone.html
    user = sim.users[phone.number]
    assert [r.type for r in user.replies] == ["text"]
    phone.close()


async def test_only_safe_small_images_are_inlined(sim: Simulator) -> None:
    """SVG (which can carry script) and large images get a placeholder, not an <img>."""
    phone = sim.phone()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    await phone.send_image(svg, "image/svg+xml")
    await phone.send_image(b"\xff\xd8" + b"\0" * 300_000, "image/jpeg", filename="big.jpg")
    html = phone.html
    assert "data:image/svg" not in html and "<svg" not in html
    assert f"[image · {len(svg)} B · image/svg+xml]" in html
    assert "[image · 293.0 KB · big.jpg · image/jpeg]" in html
    assert "<img" not in html
    phone.close()


async def test_bot_media_is_shown(sim: Simulator) -> None:
    """An image the bot sends appears inline with its caption in the bot's bubble."""
    phone = sim.phone()
    replies = await phone.send("send me a picture")
    assert [r.type for r in replies] == ["text", "image"]
    bot = [m for m in phone.transcript() if m["from"] == "bot"]
    assert bot[1]["kind"] == "image" and bot[1]["caption"] == "A green square"
    assert bot[1]["mime_type"] == "image/png" and bot[1]["size"] == len(replies[1].data or b"")
    assert phone.html.count('<img class="wa-phone-img" src="data:image/png;base64,') == 1
    phone.close()


async def test_users_are_separate_and_can_be_added_from_the_widget(sim: Simulator) -> None:
    """Add user creates and shows a new simulated user; each user has their own thread; the
    dropdown switches between them; a missing number is refused with a message."""
    phone = sim.phone("15551230001", "Alice")
    await phone.send("first")
    phone.add_button.click()
    assert "phone number" in phone.status.value and phone.number == "15551230001"
    phone.new_number.value = "+44 7700 900123"
    phone.new_name.value = "Bob"
    phone.add_button.click()
    assert phone.number == "447700900123" and phone.user.name == "Bob"
    assert phone.messages() == [] and "No messages yet" in phone.html
    await phone.send("second")
    assert {v: k for k, v in phone.contact.options} == {
        "15551230001": "Alice (+15551230001)",
        "447700900123": "Bob (+447700900123)",
    }
    phone.contact.value = "15551230001"
    assert phone.number == "15551230001"
    assert [m["text"] for m in phone.transcript() if m["from"] == "me"] == ["first"]
    assert [m["text"] for m in phone.transcript("447700900123") if m["from"] == "me"] == ["second"]
    phone.close()


async def test_replies_to_a_user_not_shown_are_kept(sim: Simulator) -> None:
    """A reply to another user (say one driven by SimulatedUser.ask) is recorded for that
    user, and the user appears in the dropdown, without changing the shown screen."""
    phone = sim.phone("15551230001", "Alice")
    before = phone.html
    reply = await sim.user("15559990000", "Zed").ask("hi")
    await sim.settle()
    assert phone.html == before
    assert [m["text"] for m in phone.transcript("15559990000")] == [reply.text]
    assert "15559990000" in [v for _k, v in phone.contact.options]
    phone.close()


async def test_sending_when_the_simulator_is_down_is_reported() -> None:
    """After the simulator stopped: send() raises, the bubble is marked not sent; a click
    shows the error in the status line instead of losing it."""
    sim = Simulator(DemoAgent())
    async with sim:
        phone = sim.phone()
    with pytest.raises(RuntimeError, match="not running"):
        await phone.send("anyone?")
    assert phone.transcript()[0]["status"] == "failed"
    assert "not sent" in phone.html
    phone.text.value = "hello?"
    phone.send_button.click()
    await asyncio.gather(*phone._tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert "Sending failed" in phone.status.value and "not running" in phone.status.value
    phone.close()


async def test_memory_is_bounded_per_user() -> None:
    """Only the last max_messages bubbles per user are kept."""

    async def quiet(request: AgentRequest) -> AgentReply:
        return AgentReply(text=f"ok {request.text}")

    async with Simulator(quiet) as sim:
        phone = PhoneWidget(sim, max_messages=3)
        for i in range(3):
            await phone.send(f"m{i}")
        texts: list[Any] = [m["text"] for m in phone.transcript()]
        assert texts == ["ok m1", "m2", "ok m2"]
        assert len(_bubbles(phone.html)) == 3
        phone.close()
    with pytest.raises(ValueError):
        PhoneWidget(sim, max_messages=0)


# ------------------------------------------------------------------ rich replies on the phone


async def test_choices_are_tappable_buttons_under_the_screen() -> None:
    """When the bot's last message offers choices they appear as buttons under the screen;
    clicking one taps it in the background (the bot gets the choice), the tap shows as the
    user's bubble, and the buttons go away when the bot answers without choices."""
    from tests.test_simulator_rich import menu, start

    sim, bot = await start(menu)
    try:
        phone = sim.phone("15551230009", "Bea")
        await phone.send("hi")
        buttons = list(phone.choices.children)
        assert [b.description for b in buttons] == ["Coffee", "Tea"]
        assert phone.offered() == ["Coffee", "Tea"]
        buttons[1].click()
        assert phone.pending == 1
        await phone.wait()
        transcript = phone.transcript()
        assert [(m["from"], m["kind"], m["text"]) for m in transcript] == [
            ("me", "text", "hi"),
            ("bot", "interactive", "Coffee or tea?"),
            ("me", "interactive", "Tea"),
            ("bot", "text", "You chose Tea (tea)"),
        ]
        assert transcript[1]["choices"] == ["Coffee", "Tea"]
        assert transcript[2]["status"] == "read"
        assert phone.choices.children == () and phone.offered() == []
        assert all(b.comm is None for b in buttons)  # the old buttons were closed
        assert bot.requests[-1].message is not None
        assert bot.requests[-1].message.choice == "tea"
        phone.close()
    finally:
        await sim.stop()


async def test_list_choices_and_tap_from_code() -> None:
    """A list message shows its label and one button per row (descriptions as tooltips);
    phone.tap() taps from code and returns the replies."""
    from tests.test_simulator_rich import menu, start

    sim, _ = await start(menu)
    try:
        phone = sim.phone()
        await phone.send("more")
        label, *rows = phone.choices.children
        assert "☰ Times" in label.value
        assert [r.description for r in rows] == ["9:00", "10:00", "11:00", "12:00", "13:00"]
        assert rows[0].tooltip == "free" and rows[1].tooltip == "10:00"
        replies = await phone.tap("12:00")
        assert [r.text for r in replies] == ["You chose 12:00 (t12)"]
        with pytest.raises(LookupError):
            await phone.tap("nope")
        assert phone.transcript()[-1]["status"] == "failed"
        phone.close()
    finally:
        await sim.stop()


async def test_reaction_location_contacts_link_and_voice_on_the_phone() -> None:
    """The bot's reaction shows on the user's own bubble; a location, a contact card and a
    link button read as text (escaped); the voice button sends a voice note."""
    from tests.test_simulator_rich import menu, start

    sim, bot = await start(menu)
    try:
        phone = sim.phone()
        await phone.send("everything")
        transcript = phone.transcript()
        assert transcript[0]["from"] == "me" and transcript[0]["reaction"] == "👍"
        kinds = [(m["kind"], m["text"]) for m in transcript[1:]]
        assert kinds[0] == ("location", "📍 Brandenburger Tor\n52.52, 13.405")
        assert kinds[1] == ("contacts", "👤 Ada Lovelace · +44 20 7946 0000")
        assert kinds[2] == ("interactive", "Here")
        assert transcript[3]["extra"] == "🔗 Open map: https://maps.example/berlin"
        assert '<span class="wa-phone-reaction">👍</span>' in phone.html
        phone.voice_button.click()
        await phone.wait()
        assert bot.requests[-1].attachments[0].voice
        assert phone.transcript()[-2]["extra"] == "voice note"
        phone.close()
    finally:
        await sim.stop()
