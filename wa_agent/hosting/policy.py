"""Which inbound messages the agent is asked to answer: the acceptance rules, once.

Both ways a webhook body enters the interface use :meth:`AcceptancePolicy.verdict`: the
full path (every parsed message) and the fast path (a body holding one text message, read
without building the event). The rules, in the order they apply:

1. a message addressed to another business number (``phone_number_id``) is *foreign*:
   ignored, with a WARNING naming both ids (one webhook subscription can serve several
   numbers);
2. a message of a type the agent does not answer (``answer_types``: reactions, edits…) is
   *ignored*; this is checked before the whitelist, so a stranger's reaction to the refusal
   cannot make the bot talk either;
3. a sender outside ``allowed_numbers`` is *refused*: they get exactly
   :data:`NOT_ALLOWED_MESSAGE` (once per message id), the agent never runs and nothing is
   stored for them;
4. everything else is *allowed*: recorded in the durable inbox and answered.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import Enum

from ..numbers import mask_number
from .settings import InterfaceSettings

__all__ = ["NOT_ALLOWED_MESSAGE", "AcceptancePolicy", "Verdict"]

logger = logging.getLogger("wa_agent.interface")

NOT_ALLOWED_MESSAGE = "This operation not allowed"
_REFUSALS_REMEMBERED = 10_000


class Verdict(Enum):
    ALLOWED = "allowed"
    IGNORED = "ignored"
    REFUSED = "refused"
    FOREIGN = "foreign"


class AcceptancePolicy:
    """Applies the acceptance rules of one interface (see the module docstring)."""

    __slots__ = ("_refused_seen", "answer_types", "name", "phone_number_id", "settings")

    def __init__(self, settings: InterfaceSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.phone_number_id = settings.phone_number_id
        self.answer_types = settings.answer_types
        self._refused_seen: OrderedDict[str, None] = OrderedDict()

    def verdict(self, kind: str, contact: str, phone_number_id: str | None) -> Verdict:
        """What happens to a message of type ``kind`` from ``contact`` to the business
        number ``phone_number_id`` (``None``: not stated in the webhook)."""
        own = self.phone_number_id
        if own and phone_number_id and phone_number_id != own:
            return Verdict.FOREIGN
        if kind not in self.answer_types:
            return Verdict.IGNORED
        if not self.settings.is_allowed(contact):
            return Verdict.REFUSED
        return Verdict.ALLOWED

    def log_foreign(self, phone_number_id: str | None) -> None:
        logger.warning(
            "message for phone_number_id %r ignored by interface %r (configured for %r)",
            phone_number_id,
            self.name,
            self.phone_number_id,
        )

    def first_refusal(self, message_id: str, contact: str) -> bool:
        """Whether ``message_id`` is refused for the first time (Meta redelivers: the
        stranger gets one refusal per message, not one per delivery)."""
        if message_id in self._refused_seen:
            return False
        self._refused_seen[message_id] = None
        while len(self._refused_seen) > _REFUSALS_REMEMBERED:
            self._refused_seen.popitem(last=False)
        logger.info(
            "refused a message from a number not in allowed_numbers (%s)", mask_number(contact)
        )
        return True


async def send_refusal(send_text: Callable[[str, str], Awaitable[object]], to: str) -> None:
    """Send :data:`NOT_ALLOWED_MESSAGE`; a failure is logged (the stranger is not retried)."""
    from ..exceptions import WhatsAppAPIError

    try:
        await send_text(to, NOT_ALLOWED_MESSAGE)
    except WhatsAppAPIError as exc:
        logger.warning("could not send the refusal to %s: %s", mask_number(to), exc.code)
