"""The seed's chat bot on wa_agent: CHAT mode, a ``/reset`` command and a whitelist.

Each WhatsApp user has their own conversation history (kept in a SQLite file, so it survives
a restart); ``/reset`` clears only that user's history and the agent greets them afresh;
only the numbers in ``ALLOWED_NUMBERS`` may use the bot (others get "This operation not
allowed").

Serve real WhatsApp (callback URL: ``https://<your host>/whatsapp/webhook``)::

    export WHATSAPP_VERIFY_TOKEN=... WHATSAPP_APP_SECRET=... \\
           WHATSAPP_ACCESS_TOKEN=... WHATSAPP_PHONE_NUMBER_ID=...
    export ANTHROPIC_API_KEY=...                 # the agent: Claude
    export ALLOWED_NUMBERS="+1 555 123 0001, +49 151 2345678"   # optional whitelist
    python examples/seed_chat.py                 # listens on $HOST:$PORT (0.0.0.0:8000)

Without the ``WHATSAPP_*`` variables it plays a short scripted conversation on the local
simulator (nothing leaves 127.0.0.1) and prints it. Without ``ANTHROPIC_API_KEY`` the agent
is the offline :class:`~wa_agent.demo.DemoAgent`.
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


def make_agent() -> Any:
    """Claude when ``ANTHROPIC_API_KEY`` is set, else the offline demo agent."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return LLMAgent(
            model="anthropic/claude-sonnet-4-6",
            name="WhatsAppBot",
            greeting="Greet the user in one short, friendly sentence and offer your help.",
        )
    print(
        "ANTHROPIC_API_KEY is not set: using the offline DemoAgent "
        "(set ANTHROPIC_API_KEY to chat with anthropic/claude-sonnet-4-6)."
    )
    return DemoAgent()


def make_interface(
    agent: Any, allowed_numbers: list[str] | None, **options: Any
) -> WhatsAppInterface:
    """The bot: per-user history, ``/reset``, whitelist (``None``: everyone may write)."""
    return WhatsAppInterface(
        agent,
        name="WhatsAppBot",
        mode=InterfaceMode.CHAT,
        reset_command="/reset",
        allowed_numbers=allowed_numbers,
        **options,
    )


def allowed_from_env() -> list[str] | None:
    """``ALLOWED_NUMBERS="+1 555 123 0001, 4915123..."`` → a whitelist (unset: none)."""
    value = os.environ.get("ALLOWED_NUMBERS", "").strip()
    return [n.strip() for n in value.split(",") if n.strip()] or None


def serve() -> None:
    """Serve real WhatsApp with the ``WHATSAPP_*`` variables (blocks until Ctrl+C)."""
    interface = make_interface(
        make_agent(), allowed_from_env(), storage="seed_chat.db", require_signature=True
    )
    InterfaceManager([interface]).serve(
        host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8000"))
    )


def show(who: str, text: str | None) -> None:
    lines = (text or "").splitlines() or [""]
    print(f"{who}: {lines[0]}")
    for line in lines[1:]:
        print(" " * (len(who) + 2) + line)


async def demo() -> None:
    """A scripted conversation on the local simulator: history, /reset, whitelist."""
    from wa_agent.testing import Simulator
    from wa_agent.testing.simulator import DEFAULT_PHONE_NUMBER_ID

    agent = make_agent()
    interface = make_interface(
        agent,
        ["+1 555 123 0001", "+1 555-123-0002"],
        verify_token="demo-verify-token",
        app_secret="demo-app-secret",
        phone_number_id=DEFAULT_PHONE_NUMBER_ID,
    )
    try:
        async with Simulator(interface) as sim:
            alice = sim.user("15551230001", "Alice")
            bob = sim.user("15551230002", "Bob")
            mallory = sim.user("15559999999", "Mallory")
            for user, text in (
                (alice, "hello"),
                (alice, "What is 6 times 7?"),
                (bob, "hi"),
                (alice, "/reset"),
                (alice, "Do you remember me?"),
                (mallory, "hi, can I use this bot?"),
            ):
                show(user.name, text)
                reply = await user.ask(text, timeout=120)
                show("Bot", reply.text)
            await sim.settle()
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
        f"{', '.join(missing)} not set: a scripted conversation on the local simulator "
        "(set all four WHATSAPP_* variables to serve real WhatsApp)."
    )
    asyncio.run(demo())


if __name__ == "__main__":
    main()
