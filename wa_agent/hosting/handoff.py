"""Human handoff: a person (the operator) takes a conversation over from the agent.

The state lives in the store (one record per contact, see
:meth:`~wa_agent.SessionStore.set_handoff`), so it survives a restart and every worker on a
shared store honours it at its next turn. While a contact is handed off their messages are
acknowledged, kept in the durable inbox until recorded, shown to listeners and written to
the history, but the agent is not asked (:class:`~wa_agent.hosting.processor.Processor`
reads the record for every turn, and again before an agent's reply is sent: a takeover
during the agent's run drops that reply).

A handoff starts from Python (:meth:`Handoffs.begin`, the interface's ``handoff()``), from
the agent (``AgentReply(handoff=True)``), or from the user (the ``handoff_command``). It
ends with :meth:`Handoffs.end` (the interface's ``resume()``) or, with a
``handoff_timeout``, by itself: the expirer resumes an unattended handoff and tells the
user ``resume_message``. In TASK mode, where the agent otherwise gets no history, the
first turn after a resume carries the handed-off exchange as its history.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agents import AgentReply, Media
from ..agents import Turn as HistoryTurn
from ..exceptions import OutsideServiceWindow, WhatsAppAPIError
from ..numbers import mask_number
from .delivery import service_window_open
from .observers import Listeners
from .settings import InterfaceMode

if TYPE_CHECKING:
    from ..stores.base import SessionStore
    from .delivery import Delivery
    from .settings import InterfaceSettings
    from .tasks import TaskSet

__all__ = ["Handoff", "Handoffs", "OperatorMedia"]

#: Handoff events (taken over, resumed, timed out): ``wa-agent serve`` shows them at INFO.
logger = logging.getLogger("wa_agent.handoff")

#: Media an operator sends: a :class:`~wa_agent.Media`, bytes, or a path built by code.
OperatorMedia = Media | bytes | Path


@dataclass(frozen=True, slots=True)
class Handoff:
    """A conversation a person has taken over.

    ``by`` says who asked (``"operator"`` from Python or the widget, ``"agent"`` through
    ``AgentReply(handoff=True)``, ``"user"`` with the handoff command); ``until`` is when an
    unattended handoff resumes the agent by itself (``handoff_timeout``), else ``None``.
    ``resumed`` is internal: a TASK-mode conversation just handed back whose next turn
    carries the handed-off exchange (such a record does not count as handed off).
    """

    contact: str
    since: datetime
    by: str = "operator"
    note: str | None = None
    until: datetime | None = None
    resumed: bool = False

    @property
    def active(self) -> bool:
        """Whether the agent must stay silent (handed off, not resumed, not expired)."""
        return not self.resumed and not self.expired()

    def expired(self, now: float | None = None) -> bool:
        """Whether ``handoff_timeout`` has run out."""
        if self.until is None or self.resumed:
            return False
        return (time.time() if now is None else now) >= self.until.timestamp()

    def to_json(self) -> str:
        """The record as the store keeps it (``contact`` is the store's key)."""
        return json.dumps(
            {
                "since": self.since.timestamp(),
                "by": self.by,
                "note": self.note,
                "until": None if self.until is None else self.until.timestamp(),
                "resumed": self.resumed,
            }
        )

    @classmethod
    def from_json(cls, contact: str, text: str) -> Handoff:
        """The record :meth:`to_json` wrote for ``contact``."""
        data = json.loads(text)
        until = data.get("until")
        return cls(
            contact=contact,
            since=datetime.fromtimestamp(data["since"], UTC),
            by=str(data.get("by", "operator")),
            note=data.get("note"),
            until=None if until is None else datetime.fromtimestamp(until, UTC),
            resumed=bool(data.get("resumed", False)),
        )


class OperatorListeners:
    """The listeners as the operator's :class:`Delivery` sees them: what it sends is
    reported as ``operator()`` (``outbound()`` for listeners without it)."""

    def __init__(self, listeners: Listeners) -> None:
        self._listeners = listeners

    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> None:
        self._listeners.operator(to, text, wamid=wamid, kind=kind, media_info=media_info)


class Handoffs:
    """One interface's handoffs (see the module docstring)."""

    def __init__(
        self,
        settings: InterfaceSettings,
        *,
        store: SessionStore,
        listeners: Listeners,
        delivery: Delivery,
        operator_delivery: Delivery,
        tasks: TaskSet,
        owner: str,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self.listeners = listeners
        self.delivery = delivery
        self.operator_delivery = operator_delivery
        self.tasks = tasks
        self.owner = owner

    # -- state ----------------------------------------------------------------------------
    async def get(self, contact: str) -> Handoff | None:
        """The contact's record (active, expired or just resumed), or ``None``."""
        text = await self.store.get_handoff(self.name, contact)
        return None if text is None else _read(contact, text)

    async def is_active(self, contact: str) -> bool:
        """Whether a person answers ``contact`` now (handed off, not resumed, not expired)."""
        handoff = await self.get(contact)
        return handoff is not None and handoff.active

    async def active(self) -> dict[str, Handoff]:
        """Every contact currently handed off."""
        records = await self.store.handoffs(self.name)
        found = (_read(contact, text) for contact, text in records.items())
        return {h.contact: h for h in found if h is not None and h.active}

    async def begin(self, contact: str, *, by: str, note: str | None = None) -> Handoff:
        """Hand ``contact`` to a person (again: the note and timeout are renewed)."""
        task = self.settings.mode is InterfaceMode.TASK
        if task and await self.store.get_handoff(self.name, contact) is None:
            # TASK history holds only exchanges the agent has not been given on a resume:
            # a new handoff starts it afresh (the last one was carried, or nothing was).
            await self.store.clear_history(self.name, contact)
        timeout = self.settings.handoff_timeout
        now = time.time()
        handoff = Handoff(
            contact=contact,
            since=datetime.fromtimestamp(now, UTC),
            by=by,
            note=note,
            until=None if timeout is None else datetime.fromtimestamp(now + timeout, UTC),
        )
        await self.store.set_handoff(self.name, contact, handoff.to_json())
        logger.info(
            "conversation with %s handed off (by %s%s)",
            mask_number(contact),
            by,
            f": {note}" if note else "",
        )
        self.listeners.handoff(contact, handoff)
        return handoff

    async def end(self, contact: str, *, by: str) -> bool:
        """Give ``contact`` back to the agent; ``False`` if they were not handed off."""
        current = await self.get(contact)
        if current is None or current.resumed:
            return False
        await self._clear(current)
        logger.info("conversation with %s resumed by the agent (%s)", mask_number(contact), by)
        self.listeners.resume(contact, by)
        return True

    async def _clear(self, current: Handoff) -> None:
        """Drop the record; in TASK mode keep a ``resumed`` one so that the next turn
        carries the handed-off exchange."""
        if self.settings.mode is InterfaceMode.TASK:
            resumed = dataclasses.replace(current, resumed=True, until=None)
            await self.store.set_handoff(self.name, current.contact, resumed.to_json())
        else:
            await self.store.set_handoff(self.name, current.contact, None)

    async def carried(self, contact: str) -> None:
        """The first TASK turn after a resume has taken the handed-off exchange: later turns
        get no history again. The history itself is kept until the next handoff begins, so
        that a message recorded for the operator while the resume happened is not erased
        before anyone saw it."""
        await self.store.set_handoff(self.name, contact, None)

    # -- the operator's messages ----------------------------------------------------------
    async def send(
        self,
        contact: str,
        text: str | None = None,
        *,
        media: OperatorMedia | Sequence[OperatorMedia] = (),
        template: dict[str, Any] | None = None,
    ) -> list[str]:
        """Send an operator message (see :meth:`~wa_agent.WhatsAppInterface.send`)."""
        items = [media] if isinstance(media, Media | bytes | Path) else list(media)
        if not (text and text.strip()) and not items and template is None:
            raise ValueError("send() needs text, media or a template")
        if await service_window_open(self.store, self.name, contact):
            parts = await self.operator_delivery.parts(AgentReply(text=text, files=items))
            said = _operator_text(text, items)
        elif template is not None:
            parts = [{"type": "template", **template}]
            said = f"[template {template.get('name')}]"
        else:
            raise OutsideServiceWindow(
                f"{mask_number(contact)} has not written in the last 24 hours: only a "
                "template can be sent (pass template={'name': ..., 'language': ...})",
                code=131047,
            )
        wamids = await self.operator_delivery.send_all(contact, parts)
        await self.store.append_history(
            self.name,
            contact,
            [
                HistoryTurn(
                    role="operator",
                    text=said,
                    at=datetime.now(UTC),
                    message_id=wamids[-1] if wamids else None,
                )
            ],
        )
        return wamids

    # -- the timeout ----------------------------------------------------------------------
    def start(self) -> None:
        """Start resuming unattended handoffs (only with a ``handoff_timeout``)."""
        if self.settings.handoff_timeout is not None:
            self.tasks.spawn(self._expirer(), "handoff-expirer")

    async def _expirer(self) -> None:
        interval = min(self.settings.sweep_interval, self.settings.handoff_timeout or 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                records = await self.store.handoffs(self.name)
            except Exception as exc:  # noqa: BLE001 - logged, tried again
                logger.warning("could not list the handoffs (%s)", type(exc).__name__)
                continue
            for contact, text in records.items():
                found = _read(contact, text)
                if found is not None and found.expired():
                    await self.expire(contact)

    async def expire(self, contact: str) -> bool:
        """Resume ``contact`` if their handoff ran out, telling them ``resume_message``;
        one worker does it when several share the store (a lease, then a fresh read)."""
        lease = f"{self.name}:handoff:{contact}"
        try:
            if not await self.store.acquire_lease(lease, self.owner, 30.0):
                return False
            try:
                current = await self.get(contact)
                if current is None or not current.expired():
                    return False
                await self._clear(current)
            finally:
                await self.store.release_lease(lease, self.owner)
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            logger.warning(
                "could not resume the expired handoff of %s (%s)",
                mask_number(contact),
                type(exc).__name__,
            )
            return False
        logger.info("handoff of %s timed out: the agent answers again", mask_number(contact))
        self.listeners.resume(contact, "timeout")
        await self._tell(contact, self.settings.resume_message)
        return True

    async def _tell(self, contact: str, text: str | None) -> None:
        """Send the bot's own notice (resume message) when the window allows it."""
        if not text:
            return
        try:
            if not await service_window_open(self.store, self.name, contact):
                logger.info(
                    "not telling %s the agent is back: outside the 24-hour window",
                    mask_number(contact),
                )
                return
            await self.delivery.send_all(contact, await self.delivery.parts(AgentReply(text=text)))
            await self.store.append_history(
                self.name, contact, [HistoryTurn(role="assistant", text=text, at=datetime.now(UTC))]
            )
        except (WhatsAppAPIError, OSError) as exc:
            logger.warning(
                "could not tell %s the agent is back (%s)", mask_number(contact), type(exc).__name__
            )


def _read(contact: str, text: str) -> Handoff | None:
    """The stored record, or ``None`` (with a warning) when it cannot be read: a damaged
    record never stops the contact's messages from being answered."""
    try:
        return Handoff.from_json(contact, text)
    except (ValueError, KeyError, TypeError, OverflowError):
        logger.warning("the handoff record of %s cannot be read; ignored", mask_number(contact))
        return None


def _operator_text(text: str | None, items: list[OperatorMedia]) -> str:
    """What the history records of an operator message."""
    said = [text.strip()] if text and text.strip() else []
    for item in items:
        name = (
            item.filename
            if isinstance(item, Media)
            else (item.name if isinstance(item, Path) else None)
        )
        said.append(f"[file{': ' + name if name else ''}]")
    return "\n".join(said)
