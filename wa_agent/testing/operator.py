"""The operator's side of a handoff, driven from a test (``sim.operator``).

A :class:`SimulatedOperator` is a person at the operator console: they take a simulated
user's conversation over, write to them, and hand it back, through the same
:class:`~wa_agent.WhatsAppInterface` methods the widget uses. It also records the handoff
events the interface reports, so a test can check the escalation rules of a bot::

    async with Simulator(bot, mode="chat") as sim:
        alice = sim.user("15551230001")
        await alice.send_text("I want a refund")        # the bot answers with handoff=True
        await sim.settle()
        assert await sim.operator.is_handed_off(alice)
        await sim.operator.send(alice, "Hi, I am Sam from support.")
        await sim.operator.hand_back(alice)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..hosting.observers import QuietListener
from ..numbers import normalize_number

if TYPE_CHECKING:
    from ..hosting.handoff import Handoff, OperatorMedia
    from ..interface import WhatsAppInterface

__all__ = ["HandoffEvent", "SimulatedOperator"]


class _HasNumber(Protocol):
    @property
    def number(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HandoffEvent:
    """One handoff event an interface reported: ``kind`` is ``"handoff"`` (with ``by``,
    who asked, and ``note``), ``"resume"`` (``by``: ``"operator"`` or ``"timeout"``) or
    ``"operator"`` (a message the operator sent: ``text``)."""

    kind: str
    contact: str
    by: str | None = None
    note: str | None = None
    text: str | None = None


class _EventListener(QuietListener):
    """Collects handoff events."""

    def __init__(self, into: list[HandoffEvent]) -> None:
        self._into = into

    def handoff(self, contact: str, handoff: Handoff) -> None:
        self._into.append(HandoffEvent("handoff", contact, by=handoff.by, note=handoff.note))

    def resume(self, contact: str, by: str) -> None:
        self._into.append(HandoffEvent("resume", contact, by=by))

    def operator(self, contact: str, text: str, wamid: str | None) -> None:
        self._into.append(HandoffEvent("operator", contact, text=text))


class SimulatedOperator:
    """A person at the console of ``interface`` (see the module docstring). Users are
    given as a simulated user or a number."""

    def __init__(self, interface: WhatsAppInterface) -> None:
        self.interface = interface
        #: Every handoff, resume and operator message reported since the simulator started.
        self.events: list[HandoffEvent] = []
        interface.listeners.append(_EventListener(self.events))

    async def take_over(self, user: _HasNumber | str, note: str | None = None) -> Handoff:
        """Hand the user's conversation to this operator (the agent stops answering)."""
        return await self.interface.handoff(_number(user), note)

    async def send(
        self,
        user: _HasNumber | str,
        text: str | None = None,
        *,
        media: OperatorMedia | Sequence[OperatorMedia] = (),
    ) -> list[str]:
        """Write to the user as the operator; the message ids."""
        return await self.interface.send(_number(user), text, media=media)

    async def hand_back(self, user: _HasNumber | str) -> bool:
        """Give the conversation back to the agent."""
        return await self.interface.resume(_number(user))

    async def is_handed_off(self, user: _HasNumber | str) -> bool:
        """Whether the user's conversation is in a person's hands."""
        return await self.interface.is_handed_off(_number(user))

    async def handoffs(self) -> dict[str, Handoff]:
        """Every handed-off conversation."""
        return await self.interface.handoffs()


def _number(user: _HasNumber | str) -> str:
    return normalize_number(user if isinstance(user, str) else user.number)
