"""From a verified webhook body to messages safely in the durable inbox.

:class:`Intake` is what the webhook app hands a body's events to. It applies the
:class:`~wa_agent.hosting.policy.AcceptancePolicy`, records the allowed messages in the
store's inbox (deduplicated there by wamid) within the :class:`Backlog` bounds, and only
then lets the webhook be answered ``200``; each contact with a new message is handed to the
scheduler. Delivery statuses go to the status tracker, refusals are sent in the background.

:meth:`Intake.accept_body` is the fast path for the most common body, one text message and
nothing else: it records the raw body as the item's payload without building the event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..asgi import Overloaded
from ..events import Event, Message, StatusUpdate
from ..exceptions import StoreError
from ..stores.base import InboxItem, make_item
from .payload import dump_message, lone_text_message
from .policy import Verdict

if TYPE_CHECKING:
    from .._ackgate import AckGate
    from ..stores.base import SessionStore
    from .observers import Listeners, Stats
    from .policy import AcceptancePolicy
    from .settings import InterfaceSettings

__all__ = ["Backlog", "Intake"]

logger = logging.getLogger("wa_agent.interface")

MESSAGE_CACHE = 2000  # parsed messages kept from accept() to processing (per interface)


class Backlog:
    """Unanswered inbox items this process knows of, per contact, within two bounds:
    ``max_pending_per_sender`` and ``max_pending`` (a receiver-only interface counts
    nothing: it answers nothing). Also keeps the messages parsed at intake (bounded) so
    processing need not parse the stored payload again."""

    def __init__(self, settings: InterfaceSettings) -> None:
        self.per_contact = settings.max_pending_per_sender
        self.limit = settings.max_pending
        self.counting = not settings.receive_only
        self.counts: dict[str, int] = {}
        self.total = 0
        self._parsed: dict[str, Message] = {}

    def admit(self, items: list[InboxItem]) -> tuple[list[InboxItem], int]:
        """Split off the items of contacts at their bound (or beyond the overall one): the
        rest are counted and returned, with the number held back."""
        if not self.counting:
            return items, 0
        kept: list[InboxItem] = []
        counts = self.counts
        for item in items:
            count = counts.get(item.sender, 0)
            if count >= self.per_contact or self.total >= self.limit:
                continue
            counts[item.sender] = count + 1
            self.total += 1
            kept.append(item)
        held = len(items) - len(kept)
        if held:
            logger.warning(
                "backlog bound reached (%d per sender, %d in all): %d message(s) "
                "refused with 503 for Meta to redeliver later",
                self.per_contact,
                self.limit,
                held,
            )
        return kept, held

    def sync(self, contact: str, count: int) -> None:
        """Set the contact's count to what the store holds (the truth)."""
        self.total += count - self.counts.get(contact, 0)
        if count:
            self.counts[contact] = count
        else:
            self.counts.pop(contact, None)

    def release(self, items: Iterable[InboxItem]) -> None:
        """The items are answered (or were not recorded after all)."""
        if not self.counting:
            return
        for item in items:
            self.sync(item.sender, max(0, self.counts.get(item.sender, 0) - 1))

    def remember(self, wamid: str, message: Message) -> None:
        cache = self._parsed
        if len(cache) >= MESSAGE_CACHE:  # oldest first: answered elsewhere age out
            del cache[next(iter(cache))]
        cache[wamid] = message

    def parsed(self, wamid: str) -> Message | None:
        return self._parsed.pop(wamid, None)


class Intake:
    """Receives one interface's webhook events (see the module docstring)."""

    def __init__(
        self,
        settings: InterfaceSettings,
        *,
        policy: AcceptancePolicy,
        store: SessionStore,
        backlog: Backlog,
        schedule: Callable[[str, InboxItem], None],
        on_status: Callable[[StatusUpdate], None],
        on_refused: Callable[[Message], None],
        listeners: Listeners,
        stats: Stats,
        gate: AckGate,
        max_depth: int,
    ) -> None:
        self.name = settings.name
        self.policy = policy
        self.store = store
        self.backlog = backlog
        self.schedule = schedule
        self.on_status = on_status
        self.on_refused = on_refused
        self.listeners = listeners
        self.stats = stats
        self.gate = gate
        self.max_depth = max_depth

    async def accept(self, events: list[Event]) -> str:
        """Record new messages durably and schedule them (the full path)."""
        self.gate.webhook()
        items: list[InboxItem] = []
        messages: list[Message] = []
        refused: list[Message] = []
        now = time.time()
        policy, stats = self.policy, self.stats
        for event in events:
            if isinstance(event, Message):
                verdict = policy.verdict(event.type, event.sender, event.phone_number_id)
                if verdict is Verdict.FOREIGN:
                    policy.log_foreign(event.phone_number_id)
                    stats.ignored += 1
                    continue
                self.listeners.inbound(event)
                if verdict is Verdict.IGNORED or (
                    verdict is Verdict.REFUSED and event.group_id is not None
                ):
                    stats.ignored += 1  # no private refusal for a group member
                elif verdict is Verdict.REFUSED:
                    refused.append(event)
                else:
                    # A group's messages are one conversation (history, order, replies).
                    items.append(
                        InboxItem(
                            id=event.id,
                            sender=event.group_id or event.sender,
                            payload=dump_message(event),
                            received_at=now,
                        )
                    )
                    messages.append(event)
            elif isinstance(event, StatusUpdate):
                stats.statuses += 1
                self.on_status(event)
        for message in refused:
            stats.refused += 1
            if policy.first_refusal(message.id, message.sender):
                self.on_refused(message)
        return await self.record(items, messages)

    async def accept_body(self, body: bytes) -> str | None:
        """The fast path: a body holding one allowed text message and nothing else is
        recorded exactly as :meth:`accept` would record it; ``None`` for any other body,
        having done nothing (the webhook app then parses it and calls :meth:`accept`)."""
        found = lone_text_message(body, self.max_depth)
        if found is None:
            return None
        wamid, contact, pnid = found
        if self.policy.verdict("text", contact, pnid) is not Verdict.ALLOWED:
            return None
        self.gate.webhook()
        return await self.record([make_item(wamid, contact, body.decode(), time.time())], None)

    async def record(self, items: list[InboxItem], messages: list[Message] | None) -> str:
        """Record ``items`` in the inbox (within the backlog bounds) and schedule the new
        ones; ``messages`` are their parsed events, kept for processing when given."""
        parsed = (
            {id(item): message for item, message in zip(items, messages, strict=True)}
            if messages is not None
            else None
        )
        backlog = self.backlog
        items, held = backlog.admit(items)
        if not items and not held:
            return "ignored"
        gate = self.gate
        gate.acks_waiting += 1
        try:
            added = await self.store.add_inbound(self.name, items) if items else []
        except StoreError:
            backlog.release(items)
            raise
        except Exception as exc:
            backlog.release(items)
            raise StoreError(f"could not record inbound messages: {exc}") from exc
        finally:
            gate.acks_waiting -= 1
        accepted = False
        stats = self.stats
        for item, new in zip(items, added, strict=True):
            if not new:
                backlog.release((item,))
                stats.duplicates += 1
                continue
            accepted = True
            stats.received += 1
            if parsed:
                message = parsed.get(id(item))
                if message is not None:
                    backlog.remember(item.id, message)
            self.schedule(item.sender, item)
        if held:
            # Recorded the others; Meta redelivers the whole body later (they dedupe).
            stats.overloaded += 1
            raise Overloaded(f"{held} message(s) over the backlog bound")
        return "processing" if accepted else "ignored"
