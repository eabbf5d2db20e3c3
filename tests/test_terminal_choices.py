"""The terminal demo prints a bot's choices numbered and takes the number as a tap (the bot
here sends its choices itself, see test_simulator_rich.py)."""

from __future__ import annotations

from typing import Any

from tests.test_simulator_rich import menu, start
from wa_agent.terminal import _describe, _exchange, parse_line, tap_or_text


async def _type(sim: Any, user: Any, line: str, offered: Any) -> list[Any]:
    """What the terminal does with a typed line while ``offered`` is the last reply with
    choices: the bot's answers."""
    action = parse_line(line)
    assert action is not None and not isinstance(action, str)
    replies = await _exchange(sim, user, tap_or_text(action, offered), 10.0, offered)
    assert not isinstance(replies, str), replies
    return replies


async def test_choices_are_numbered_and_a_number_taps() -> None:
    """Reply buttons and list rows print as a numbered list (the list's label too); typing
    a number taps that choice; a number out of range, or with nothing offered, is sent as
    text."""
    sim, bot = await start(menu)
    try:
        user = sim.user("15551230001")
        offer = await user.ask("hi")
        assert _describe(offer) == "Coffee or tea?\n  1. Coffee\n  2. Tea"
        assert (await _type(sim, user, "2", offer))[0].text == "You chose Tea (tea)"
        rows = await user.ask("more")
        assert _describe(rows).splitlines()[:3] == ["Pick a time", "  [Times]", "  1. 9:00 (free)"]
        assert (await _type(sim, user, "5", rows))[0].text == "You chose 13:00 (t13)"
        await _type(sim, user, "7", rows)  # not a choice: just text
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
