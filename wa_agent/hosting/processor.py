"""Answering one inbox item: from the stored message to the reply WhatsApp accepted.

For each item :meth:`Processor.process`:

1. reads the message back (from the in-memory cache of parsed messages, else from its
   stored payload) and its saved progress;
2. unless a reply was already prepared before a restart: marks the message read with the
   typing indicator, answers the reset command itself (CHAT mode), or downloads the media
   and asks the agent (with the contact's own history in CHAT mode), then turns the reply
   into parts; a reply of several parts is saved as progress before the first is sent, so a
   restart resumes rather than asks the agent again;
3. sends the parts not sent yet, saving progress after each;
4. completes the item: it leaves the inbox and the turns enter the history in one store
   step, retried in place if the store fails (the reply is out; it is never resent).

A send that fails with a retryable error saves progress and raises :class:`RetryLater`
(the scheduler backs the contact off and the sweeper brings the item back); a permanent
failure drops the reply with an ERROR; after :data:`MAX_ATTEMPTS` failures the item is
given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..agents import AgentReply, AgentRequest, Attachment, Turn, agent_attribute
from ..events import MEDIA_TYPES, Message
from ..exceptions import AuthenticationError, MediaError, TransportError, WhatsAppAPIError
from ..numbers import mask_number
from .payload import load_message
from .render import history_text, render_text, reply_history_text
from .settings import InterfaceMode

if TYPE_CHECKING:
    from .._ackgate import AckGate
    from ..parser import MessageParser
    from ..sender import Sender
    from ..stores.base import InboxItem, SessionStore
    from .beats import HeartbeatWiring
    from .delivery import Delivery
    from .intake import Backlog
    from .observers import Listeners, Stats
    from .runner import AgentRunner
    from .settings import InterfaceSettings

__all__ = ["MAX_ATTEMPTS", "Processor", "RetryLater"]

logger = logging.getLogger("wa_agent.interface")

MAX_ATTEMPTS = 8  # failed sends of one message before it is given up (logged)
MAX_BACKOFF = 300.0  # seconds between retries of a message whose send keeps failing


class RetryLater(Exception):
    """Processing of an item must be retried later (transient failure), after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class Processor:
    """Answers inbox items of one interface (see the module docstring)."""

    def __init__(self, settings: InterfaceSettings, *, store: SessionStore,
                 graph: Callable[[], Sender], runner: AgentRunner, delivery: Delivery,
                 backlog: Backlog, beats: HeartbeatWiring, listeners: Listeners, stats: Stats,
                 gate: AckGate, parser: MessageParser) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self._graph = graph
        self.runner = runner
        self.delivery = delivery
        self.backlog = backlog
        self.beats = beats
        self.listeners = listeners
        self.stats = stats
        self.gate = gate
        self.parser = parser
        self.in_flight = 0

    async def process(self, item: InboxItem, *, quote: bool,
                      more_waiting: Callable[[str], bool]) -> None:
        """Answer ``item``. ``quote``: later messages of the contact are already queued, so
        the reply quotes its message; ``more_waiting(contact)`` tells whether more arrived
        meanwhile (asked again just before sending)."""
        message = self.backlog.parsed(item.id) or load_message(item.payload, item.id,
                                                               self.parser)
        contact = item.sender
        progress: dict[str, Any] = json.loads(item.progress) if item.progress else {}
        failures = int(progress.get("failures", 0))
        if failures >= MAX_ATTEMPTS:
            logger.error("giving up on message %s from %s: its reply failed %d times", item.id,
                         mask_number(contact), failures)
            await self.complete(item)
            return
        self.in_flight += 1
        try:
            if "parts" not in progress:
                await self.store.touch_inbound(self.name, contact, message.timestamp)
                await self.beats.note_contact(contact)
                parts, turns = await self._answer(message)
                progress = {"parts": parts, "sent": 0, "turns": turns}
                if len(parts) > 1:
                    # Before the first part: a restart resumes instead of asking again.
                    await self.store.save_progress(self.name, item.id, json.dumps(progress))
            await self._send_parts(item, message, progress,
                                   quote=quote or more_waiting(contact))
            history = [Turn(role=t[0], text=t[1], message_id=t[2] if len(t) > 2 else None)
                       for t in progress.get("turns", [])]
            await self.complete(item, history)
            self.stats.processed += 1
        finally:
            self.in_flight -= 1
            self.listeners.thinking(contact, False)

    async def complete(self, item: InboxItem, history: Sequence[Turn] = ()) -> None:
        """Remove the answered item from the inbox. The reply is out: a store failure here is
        retried in place (never by resending), until it works or shutdown cancels it."""
        delay = 0.05
        while True:
            try:
                await self.store.complete(self.name, item.id, item.sender, history)
                self.backlog.release((item,))
                return
            except Exception as exc:  # noqa: BLE001 - logged, retried
                logger.warning("the reply to message %s was sent but the store could not "
                               "record it (%s); retrying in %.2f s", item.id,
                               type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- asking ---------------------------------------------------------------------------
    async def _answer(self, message: Message) -> tuple[list[dict[str, Any]], list[list[Any]]]:
        """Run the agent (or the reset command) and turn its reply into sendable parts."""
        contact = message.sender
        # Read receipt + typing indicator first, so the user sees the bot at work at once
        # (the reset greeting is generated by the agent too).
        await self.gate.turn()  # webhook acks first (Meta's time-out is short)
        with contextlib.suppress(Exception):
            await self._graph().mark_read(message.id, typing=True)
        self.listeners.thinking(contact, True)
        if self._is_reset(message):
            await self.store.clear_history(self.name, contact)
            logger.info("history of %s reset", mask_number(contact))
            greeting = await self._greeting(message)
            return await self.delivery.parts(AgentReply(text=greeting)), []
        history: tuple[Turn, ...] = ()
        chat = self.settings.mode is InterfaceMode.CHAT
        if chat:
            history = tuple(await self.store.get_history(self.name, contact,
                                                         self.settings.history_limit))
        attachments, notes = await self._attachments(message)
        request = AgentRequest(
            text=render_text(message, notes), sender=contact, attachments=attachments,
            history=history, message=message, profile_name=message.profile_name,
            interface=self.name,
        )
        reply, ok = await self.runner.answer(request, message.id)
        parts = await self.delivery.parts(reply)
        turns: list[list[Any]] = []
        if chat and ok:
            turns = [["user", history_text(request.text, request.attachments), message.id],
                     ["assistant", reply_history_text(reply)]]
        return parts, turns

    def _is_reset(self, message: Message) -> bool:
        command = self.settings.reset_command
        return (self.settings.mode is InterfaceMode.CHAT and command is not None
                and message.type == "text"
                and (message.text or "").strip().lower() == command.lower())

    async def _greeting(self, message: Message) -> str:
        """What confirms a reset: a greeting generated from the agent's workspace/greeting
        when it has one, else ``reset_message``."""
        agent = self.runner.agent
        greeting = agent_attribute(agent, "greeting") or agent_attribute(agent, "workspace")
        fallback = self.settings.reset_message
        if not greeting:
            return fallback
        request = AgentRequest(
            text=greeting if isinstance(greeting, str) else "Greet the user.",
            sender=message.sender, message=message, profile_name=message.profile_name,
            interface=self.name, purpose="greeting",
        )
        try:
            reply = await self.runner.run(request, typing_for=message.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; the plain confirmation is sent
            logger.error("agent failed to produce the reset greeting (%s)", type(exc).__name__)
            return fallback
        return reply.text if reply.text and reply.text.strip() else fallback

    async def _attachments(self, message: Message) -> tuple[tuple[Attachment, ...], list[str]]:
        if message.media is None or message.type not in MEDIA_TYPES:
            return (), []
        media = message.media
        try:
            data, mime = await self._graph().download_media(
                media.id, max_bytes=self.settings.media_max_bytes, kind=message.type)
        except (MediaError, WhatsAppAPIError) as exc:
            logger.warning("could not download %s of message %s: %s", message.type,
                           message.id, type(exc).__name__)
            return (), [f"[{message.type} could not be downloaded: {exc}]"]
        self.listeners.media_size(message.id, len(data))  # the widget shows the size
        return (Attachment(kind=message.type, data=data, mime_type=mime or media.mime_type or
                           "application/octet-stream", filename=media.filename,
                           caption=message.caption, voice=media.voice),), []

    # -- sending --------------------------------------------------------------------------
    async def _send_parts(self, item: InboxItem, message: Message, progress: dict[str, Any],
                          *, quote: bool) -> None:
        """Send the parts not sent yet (a permanent failure drops the rest of the reply).
        Quotes the message when this reply is no longer the latest turn."""
        parts: list[dict[str, Any]] = progress["parts"]
        to = message.sender
        for index in range(int(progress.get("sent", 0)), len(parts)):
            reply_to = message.id if quote and index == 0 else None
            await self.gate.turn()
            try:
                await self.delivery.send_part(to, parts[index], reply_to=reply_to)
            except TransportError as exc:
                if not exc.maybe_delivered:
                    await self._send_failed(item, to, exc, progress, index)
                logger.warning("reply part %d to %s may or may not have been delivered "
                               "(timeout after sending); not resending", index, mask_number(to))
            except AuthenticationError as exc:
                await self._send_failed(item, to, exc, progress, index)
            except WhatsAppAPIError as exc:
                if exc.retryable:
                    await self._send_failed(item, to, exc, progress, index)
                self.stats.send_failures += 1
                logger.error("reply to %s failed permanently (code %s: %s); message %s "
                             "dropped", mask_number(to), exc.code, type(exc).__name__, item.id)
                self.listeners.error(to, f"send failed: {exc.code}")
                return
            if len(parts) > 1 and index + 1 < len(parts):
                progress["sent"] = index + 1
                await self._save_progress(item, progress)

    async def _save_progress(self, item: InboxItem, progress: dict[str, Any]) -> None:
        """Record how many parts were accepted. Best effort: if the store fails, sending
        goes on (only a crash before the reply completes would repeat those parts)."""
        try:
            await self.store.save_progress(self.name, item.id, json.dumps(progress))
        except Exception as exc:  # noqa: BLE001 - logged; sending goes on
            logger.warning("could not save the progress of message %s: %s", item.id,
                           type(exc).__name__)

    async def _send_failed(self, item: InboxItem, to: str, exc: WhatsAppAPIError,
                           progress: dict[str, Any], index: int) -> None:
        """A retryable send failure: the part was not accepted, so it is resent later from
        the inbox (the parts before it are not), after a delay that doubles each time."""
        self.stats.send_failures += 1
        failures = int(progress.get("failures", 0)) + 1
        progress["sent"] = index
        progress["failures"] = failures
        await self.store.save_progress(self.name, item.id, json.dumps(progress))
        delay = min(self.settings.sweep_interval * 2 ** (failures - 1), MAX_BACKOFF)
        logger.warning("reply to %s failed (%s, code %s); kept in the inbox, retry %d in "
                       "%.1f s", mask_number(to), type(exc).__name__, exc.code, failures, delay)
        self.listeners.error(to, f"send failed: {exc.code}; will retry")
        raise RetryLater(delay) from exc
