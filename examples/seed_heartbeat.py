"""The seed's heartbeat bot on wa_agent: an agent that also writes first, on a schedule.

The agent carries its own heartbeat settings, as in the seed: ``heartbeat=True``,
``heartbeat_period`` (minutes) and ``heartbeat_message`` (what the agent is asked every
period). The interface sees them and starts a heartbeat: each period it asks the agent with
that message and sends the answer to the heartbeat recipient, the first allowed user who
wrote (remembered in the store), or ``HEARTBEAT_RECIPIENT`` when set. WhatsApp only allows
free text within 24 hours of the user's last message; outside that window a beat is skipped
(and logged) unless a ``heartbeat_template`` is configured.

Serve real WhatsApp (callback URL: ``https://<your host>/whatsapp/webhook``)::

    export WHATSAPP_VERIFY_TOKEN=... WHATSAPP_APP_SECRET=... \\
           WHATSAPP_ACCESS_TOKEN=... WHATSAPP_PHONE_NUMBER_ID=...
    export ANTHROPIC_API_KEY=...                  # the agent: Claude
    export HEARTBEAT_RECIPIENT="+1 555 123 0001"  # optional
    python examples/seed_heartbeat.py             # listens on $HOST:$PORT (0.0.0.0:8000)

Without the ``WHATSAPP_*`` variables it runs a short scripted session on the local
simulator, with a heartbeat every second instead of every 30 minutes, and prints it.
Without ``ANTHROPIC_API_KEY`` the agent is the offline :class:`~wa_agent.demo.DemoAgent`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from wa_agent import InterfaceManager, InterfaceMode, LLMAgent, WhatsAppInterface
from wa_agent.demo import DemoAgent

WHATSAPP_VARIABLES = (
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
)
HEARTBEAT_PERIOD = 30  # minutes, as in the seed
HEARTBEAT_MESSAGE = (
    "Check in with the user: one short, friendly line that follows up on "
    "what you talked about last."
)


class OfflineHeartbeatAgent(DemoAgent):
    """The offline demo agent with the seed's heartbeat settings."""

    heartbeat = True

    def __init__(self, heartbeat_period: float, heartbeat_message: str) -> None:
        self.heartbeat_period = heartbeat_period
        self.heartbeat_message = heartbeat_message


def make_agent(period_minutes: float = HEARTBEAT_PERIOD) -> Any:
    """Claude when ``ANTHROPIC_API_KEY`` is set, else the offline demo agent; either way
    with ``heartbeat=True``, ``heartbeat_period`` and ``heartbeat_message``."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return LLMAgent(
            model="anthropic/claude-sonnet-4-6",
            name="WhatsAppBot",
            heartbeat=True,
            heartbeat_period=period_minutes,
            heartbeat_message=HEARTBEAT_MESSAGE,
        )
    print(
        "ANTHROPIC_API_KEY is not set: using the offline DemoAgent "
        "(set ANTHROPIC_API_KEY to use anthropic/claude-sonnet-4-6)."
    )
    return OfflineHeartbeatAgent(period_minutes, HEARTBEAT_MESSAGE)


def serve() -> None:
    """Serve real WhatsApp with the ``WHATSAPP_*`` variables (blocks until Ctrl+C)."""
    interface = WhatsAppInterface(
        make_agent(),
        name="WhatsAppBot",
        mode=InterfaceMode.CHAT,
        storage="seed_heartbeat.db",
        heartbeat_recipient=os.environ.get("HEARTBEAT_RECIPIENT") or None,
        require_signature=True,
    )
    InterfaceManager([interface]).serve(
        host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8000"))
    )


def show(who: str, text: str | None) -> None:
    lines = (text or "").splitlines() or [""]
    print(f"{who}: {lines[0]}")
    for line in lines[1:]:
        print(" " * (len(who) + 2) + line)


async def demo(beats: int = 2) -> None:
    """Alice writes once (so she becomes the heartbeat recipient, inside the 24-hour
    window); then the bot writes to her on its own, every second here."""
    from wa_agent.testing import Simulator
    from wa_agent.testing.simulator import DEFAULT_PHONE_NUMBER_ID

    agent = make_agent(period_minutes=1 / 60)
    interface = WhatsAppInterface(
        agent,
        name="WhatsAppBot",
        mode=InterfaceMode.CHAT,
        verify_token="demo-verify-token",
        app_secret="demo-app-secret",
        phone_number_id=DEFAULT_PHONE_NUMBER_ID,
    )
    try:
        async with Simulator(interface) as sim:
            alice = sim.user("15551230001", "Alice")
            show("Alice", "hello")
            show("Bot", (await alice.ask("hello", timeout=120)).text)
            for _ in range(beats):
                reply = await alice.next_reply(timeout=120)
                show("Bot (heartbeat)", reply.text)
            assert interface.heartbeat is not None
            state = interface.heartbeat.state()
            print(
                f"heartbeat: every {state['period_s']:g} s, "
                f"recipient {await interface.store.get_heartbeat_recipient(interface.name)}"
            )
    finally:
        close = getattr(agent, "aclose", None)
        if close is not None:
            await close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    missing = [name for name in WHATSAPP_VARIABLES if not os.environ.get(name)]
    if not missing:
        serve()
        return
    print(
        f"{', '.join(missing)} not set: a scripted session on the local simulator "
        "(set all four WHATSAPP_* variables to serve real WhatsApp)."
    )
    asyncio.run(demo())


if __name__ == "__main__":
    main()
