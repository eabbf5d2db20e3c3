"""Test kit for bots built on wa_agent: a local WhatsApp Cloud API emulator, a simulator
with users that send Meta-shaped signed webhooks, and a fake clock.

``Simulator`` is imported lazily (it pulls in the hosting layer and httpx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .emulator import CloudAPIEmulator

__all__ = [
    "CloudAPIEmulator",
    "FakeClock",
    "HandoffEvent",
    "Reply",
    "SimulatedOperator",
    "SimulatedUser",
    "Simulator",
    "silent_voice_note",
]


def __getattr__(name: str) -> Any:
    if name in ("Simulator", "SimulatedUser", "Reply"):
        from . import simulator

        return getattr(simulator, name)
    if name in ("SimulatedOperator", "HandoffEvent"):
        from . import operator

        return getattr(operator, name)
    if name == "silent_voice_note":
        from .audio import silent_voice_note

        return silent_voice_note
    if name == "FakeClock":
        from .clock import FakeClock

        return FakeClock
    raise AttributeError(f"module 'wa_agent.testing' has no attribute {name!r}")


if TYPE_CHECKING:
    from .audio import silent_voice_note
    from .clock import FakeClock
    from .operator import HandoffEvent, SimulatedOperator
    from .simulator import Reply, SimulatedUser, Simulator
