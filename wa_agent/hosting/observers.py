"""Who is told what happens: counters, conversation listeners and delivery statuses.

* :class:`Stats` — the counters ``GET /health`` shows.
* :class:`Listeners` — the interface's ``listeners`` list (the live widget is one): a plain
  list that also fans each event out to every listener, so the rest of the hosting layer
  says ``listeners.outbound(...)`` once instead of looping. A failing listener is logged at
  DEBUG and never disturbs the others or the reply.
* :class:`StatusTracker` — ``sent``/``delivered``/``read``/``failed`` webhooks: recorded in
  the store (monotonic), then shown to listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..events import STATUS_RANK, Message, StatusUpdate
from ..numbers import mask_number

if TYPE_CHECKING:
    from ..stores.base import SessionStore

__all__ = [
    "ConversationListener",
    "Listeners",
    "OutboundSink",
    "QuietListener",
    "Stats",
    "StatusTracker",
]

logger = logging.getLogger("wa_agent.interface")


class ConversationListener(Protocol):
    """What the live widget (or any observer) is told. Every method must be cheap and
    must not raise; they run on the event loop. A listener may also have
    ``media_size(wamid, size)``, called when an inbound media's size becomes known,
    ``transcript(wamid, text)``, called when a voice note has been transcribed, and the
    handoff events: ``handoff(contact, handoff)`` (a person took the conversation over;
    ``handoff`` is a :class:`~wa_agent.Handoff`), ``resume(contact, by)`` (the agent answers
    again; ``by`` is ``"operator"`` or ``"timeout"``) and ``operator(contact, text, wamid)``
    (an operator message was sent; without this method the listener gets it as
    ``outbound``)."""

    def inbound(self, message: Message) -> object: ...
    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> object: ...
    def status(self, update: StatusUpdate) -> object: ...
    def thinking(self, contact: str, on: bool) -> object: ...
    def error(self, contact: str, text: str) -> object: ...


class QuietListener:
    """A :class:`ConversationListener` that ignores every event: subclass it and define
    only the events you want (the optional ones included)."""

    def inbound(self, message: Message) -> None:
        """A message arrived (ignored)."""

    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> None:
        """A reply went out (ignored)."""

    def status(self, update: StatusUpdate) -> None:
        """A delivery status arrived (ignored)."""

    def thinking(self, contact: str, on: bool) -> None:
        """The agent started or stopped answering (ignored)."""

    def error(self, contact: str, text: str) -> None:
        """Answering failed (ignored)."""


class OutboundSink(Protocol):
    """Where :class:`~wa_agent.hosting.delivery.Delivery` reports what it sent."""

    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> None: ...


class Stats:
    """Counters of one interface (shown by ``GET /health``)."""

    __slots__ = (
        "agent_errors",
        "deferred",
        "duplicates",
        "ignored",
        "overloaded",
        "processed",
        "received",
        "refused",
        "send_failures",
        "statuses",
    )

    def __init__(self) -> None:
        self.received = self.processed = self.duplicates = self.send_failures = 0
        self.refused = self.ignored = self.agent_errors = self.statuses = 0
        self.deferred = 0  # senders left in the inbox for the sweeper (queue full)
        self.overloaded = 0  # webhooks answered 503: a backlog bound was reached


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:
        logger.debug("listener %r failed", fn, exc_info=True)


def _outbound(
    listener: ConversationListener,
    to: str,
    text: str,
    wamid: str | None,
    kind: str,
    media_info: dict[str, Any] | None,
) -> None:
    """``listener.outbound``, with the media keywords only for media (older listeners take
    just ``wamid``)."""
    if media_info is None:
        _call(listener.outbound, to, text, wamid=wamid)
    else:
        _call(listener.outbound, to, text, wamid=wamid, kind=kind, media_info=media_info)


class Listeners(list[ConversationListener]):
    """The interface's listeners, with one fan-out method per event."""

    def inbound(self, message: Message) -> None:
        for listener in self:
            _call(listener.inbound, message)

    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> None:
        for listener in self:
            _outbound(listener, to, text, wamid, kind, media_info)

    def operator(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> None:
        """An operator's message went out: ``operator(contact, text, wamid)`` for listeners
        that have it, ``outbound`` for the others."""
        for listener in self:
            method = getattr(listener, "operator", None)
            if method is not None:
                _call(method, to, text, wamid)
            else:
                _outbound(listener, to, text, wamid, kind, media_info)

    def status(self, update: StatusUpdate) -> None:
        for listener in self:
            _call(listener.status, update)

    def thinking(self, contact: str, on: bool) -> None:
        for listener in self:
            _call(listener.thinking, contact, on)

    def error(self, contact: str, text: str) -> None:
        for listener in self:
            _call(listener.error, contact, text)

    def media_size(self, wamid: str, size: int) -> None:
        self._optional("media_size", wamid, size)

    def transcript(self, wamid: str, text: str) -> None:
        """A voice note's transcript is known (listeners may have ``transcript()``)."""
        self._optional("transcript", wamid, text)

    def handoff(self, contact: str, handoff: Any) -> None:
        """A person took the conversation with ``contact`` over."""
        self._optional("handoff", contact, handoff)

    def resume(self, contact: str, by: str) -> None:
        """The agent answers ``contact`` again."""
        self._optional("resume", contact, by)

    def _optional(self, name: str, *args: Any) -> None:
        for listener in self:
            method = getattr(listener, name, None)
            if method is not None:
                _call(method, *args)


class StatusTracker:
    """Applies delivery-status webhooks: the store keeps each message's state monotonic
    (a redelivered or overtaken status does not advance and is dropped), listeners see the
    ones that advanced, failures are logged and passed to ``on_failed``."""

    def __init__(
        self,
        interface: str,
        store: SessionStore,
        listeners: Listeners,
        on_failed: Callable[[StatusUpdate], None],
    ) -> None:
        self.interface = interface
        self.store = store
        self.listeners = listeners
        self.on_failed = on_failed

    async def apply(self, update: StatusUpdate) -> None:
        if update.status not in STATUS_RANK:
            return
        try:
            advanced = await self.store.advance_status(self.interface, update.id, update.status)
        except Exception:
            logger.warning("could not record a status update", exc_info=True)
            return
        if not advanced:
            return
        self.listeners.status(update)
        if update.status == "failed":
            codes = ",".join(str(e.code) for e in update.errors) or "?"
            logger.warning(
                "message %s to %s failed (codes %s)",
                update.id,
                mask_number(update.recipient),
                codes,
            )
            self.on_failed(update)
