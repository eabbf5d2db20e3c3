"""The terminal demo prints a bot's choices numbered and takes the number as a tap (the bot
here sends its choices itself, see test_simulator_rich.py)."""

from __future__ import annotations

import io

from tests.test_simulator_rich import menu, start
from wa_agent.terminal import _describe, _send_line


async def test_choices_are_numbered_and_a_number_taps() -> None:
    """Reply buttons and list rows print as a numbered list (the list's label too); typing
    a number taps that choice; a number out of range, or with nothing offered, is sent as
    text."""
    sim, bot = await start(menu)
    out = io.StringIO()
    try:
        user = sim.user("15551230001")
        offer = await user.ask("hi")
        assert _describe(offer) == "Coffee or tea?\n  1. Coffee\n  2. Tea"
        await _send_line(user, "2", out, offer)
        assert (await user.next_reply()).text == "You chose Tea (tea)"
        rows = await user.ask("more")
        assert _describe(rows).splitlines()[:3] == ["Pick a time", "  [Times]", "  1. 9:00 (free)"]
        await _send_line(user, "5", out, rows)
        assert (await user.next_reply()).text == "You chose 13:00 (t13)"
        await _send_line(user, "7", out, rows)  # not a choice: just text
        await user.next_reply()
        await sim.settle()
    finally:
        await sim.stop()
    assert bot.requests[-1].text == "7" and bot.requests[-1].message.choice is None  # type: ignore[union-attr]


async def test_other_rich_replies_read_as_text() -> None:
    """A reaction, a location, a contact card and a link button each print readably, with
    control sequences stripped."""
    sim, _ = await start(menu)
    try:
        user = sim.user("15551230001")
        await user.send_text("everything")
        printed = [_describe(await user.next_reply()) for _ in range(4)]
        await sim.settle()
    finally:
        await sim.stop()
    assert printed == [
        "[reacted 👍]",
        "[location 52.52, 13.405: Brandenburger Tor]",
        "[contact Ada Lovelace: +44 20 7946 0000]",
        "Here\n  [Open map: https://maps.example/berlin]",
    ]
