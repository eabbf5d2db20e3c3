"""Answering one turn: from the stored messages to the reply WhatsApp accepted.

A turn (see :mod:`~wa_agent.hosting.turns`) is one or more inbox items of one contact
answered by one agent run. For each turn :meth:`Processor.process`:

1. unless a reply was already prepared before a restart: marks the newest message read
   with the typing indicator, answers the reset command itself (CHAT mode), or downloads
   the media and asks the agent (with the contact's own history in CHAT mode) with every
   message of the turn, then turns the reply into parts; a reply of several parts, or for
   several messages, is saved as progress on the turn's anchor before the first part is
   sent, so a restart resumes rather than asks the agent again;
2. in TASK mode, waits until the contact's earlier replies are out (replies keep the
   messages' order even though their agents run at once);
3. sends the parts not sent yet, saving progress after each;
4. completes the turn: its items leave the inbox and the history turns (each user message,
   then the reply) are appended in one store step, retried in place if the store fails
   (the reply is out; it is never resent).

A send that fails with a retryable error saves progress and raises :class:`RetryLater`
(the scheduler backs the contact off and the sweeper brings the turn back); a permanent
failure drops the reply with an ERROR; after :data:`MAX_ATTEMPTS` failures the turn is
given up. With ``interrupt=True`` a newer message cancels a turn's agent run
(:class:`Interrupted`): nothing of it is sent, and the turn is formed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._rich import can_quote, text_and_choice
from .._rich import history_text as reply_history_text
from ..agents import AgentReply, AgentRequest, Attachment, agent_attribute
from ..agents import Turn as HistoryTurn
from ..events import MEDIA_TYPES, Message
from ..exceptions import AuthenticationError, MediaError, TransportError, WhatsAppAPIError
from ..numbers import mask_number
from ..sender import GroupId
from .delivery import for_group
from .handoff import Handoff
from .payload import load_message
from .render import by_member, history_text, media_mark, render_text
from .settings import InterfaceMode
from .turns import ReplyOrder, Turn, progress_of

if TYPE_CHECKING:
    from .._ackgate import AckGate
    from ..parser import MessageParser
    from ..sender import Sender
    from ..stores.base import InboxItem, SessionStore
    from .beats import HeartbeatWiring
    from .delivery import Delivery
    from .handoff import Handoffs
    from .intake import Backlog
    from .observers import Listeners, Stats
    from .runner import AgentRunner
    from .settings import InterfaceSettings
    from .tasks import TaskSet

__all__ = ["MAX_ATTEMPTS", "Interrupted", "Processor", "RetryLater"]

logger = logging.getLogger("wa_agent.interface")

MAX_ATTEMPTS = 8  # failed sends of one message before it is given up (logged)
MAX_BACKOFF = 300.0  # seconds between retries of a message whose send keeps failing


class RetryLater(Exception):
    """Processing of an item must be retried later (transient failure), after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class TranscriptionFailed(Exception):
    """A voice note of the turn could not be transcribed (the user gets an apology)."""


class Interrupted(Exception):
    """The turn's agent run was cancelled by a newer message (``interrupt=True``)."""


class Processor:
    """Answers the turns of one interface (see the module docstring)."""

    def __init__(
        self,
        settings: InterfaceSettings,
        *,
        store: SessionStore,
        graph: Callable[[], Sender],
        runner: AgentRunner,
        delivery: Delivery,
        backlog: Backlog,
        beats: HeartbeatWiring,
        listeners: Listeners,
        stats: Stats,
        gate: AckGate,
        parser: MessageParser,
        tasks: TaskSet,
        handoffs: Handoffs,
    ) -> None:
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
        self.tasks = tasks
        self.handoffs = handoffs
        self.in_flight = 0
        self._agents: dict[str, asyncio.Task[tuple[AgentReply, bool]]] = {}  # interruptible

    # -- the scheduler's side -------------------------------------------------------------
    def load(self, item: InboxItem) -> Message:
        """The message an inbox item holds (parsed at intake, else read back)."""
        return self.backlog.parsed(item.id) or load_message(item.payload, item.id, self.parser)

    def turn_of(self, item: InboxItem) -> Turn:
        """A one-item turn (TASK mode)."""
        return Turn([item], [self.load(item)], progress_of(item))

    def is_reset(self, message: Message) -> bool:
        """Whether ``message`` is the CHAT-mode reset command."""
        return self.settings.mode is InterfaceMode.CHAT and _is(
            message, self.settings.reset_command
        )

    def is_handoff_command(self, message: Message) -> bool:
        """Whether ``message`` is the user's command asking for a person."""
        return _is(message, self.settings.handoff_command)

    def is_command(self, message: Message) -> bool:
        """Whether the interface answers ``message`` itself (reset or handoff command), in
        a turn of its own."""
        return self.is_reset(message) or self.is_handoff_command(message)

    def interrupt(self, contact: str) -> None:
        """A new message from ``contact``: cancel their turn's agent run if one is running
        (``interrupt=True``); the turn is then done again with everything pending."""
        task = self._agents.get(contact)
        if task is not None and not task.done():
            logger.info("a new message from %s interrupts the running turn", mask_number(contact))
            task.cancel()

    async def process(
        self, turn: Turn, *, latest: Callable[[], bool], order: ReplyOrder | None = None
    ) -> None:
        """Answer ``turn``. ``latest()`` tells, just before the reply is sent, whether the
        turn is still the contact's newest; if not, the reply quotes the turn's last
        message. With ``order`` (TASK mode), the reply is sent only after the contact's
        earlier replies."""
        contact = turn.contact
        progress = turn.progress
        failures = int(progress.get("failures", 0))
        if failures >= MAX_ATTEMPTS:
            logger.error(
                "giving up on message %s from %s: its reply failed %d times",
                turn.anchor.id,
                mask_number(contact),
                failures,
            )
            await self.complete(turn)
            return
        self.in_flight += 1
        try:
            if "parts" not in progress:
                await self.gate.turn()  # webhook acks first (Meta's time-out is short)
                await self.store.touch_inbound(self.name, contact, turn.last.timestamp)
                handoff = await self._handoff(contact)
                if handoff is not None and handoff.active:
                    await self._hold(turn)  # a person answers: recorded, not asked
                    return
                if turn.last.group_id is None:  # a group never receives the heartbeat
                    await self.beats.note_contact(contact)
                parts, turns, extra = await self._answer(turn, handoff)
                progress = turn.progress = {
                    "parts": parts,
                    "sent": 0,
                    "turns": turns,
                    "covers": turn.ids,
                    **extra,
                }
                if len(parts) > 1 or len(turn.items) > 1 or extra:
                    # Before the first part: a restart resumes instead of asking again.
                    await self.store.save_progress(self.name, turn.anchor.id, json.dumps(progress))
            if order is not None:
                blocked = await order.wait()
                if blocked is not None:  # an earlier reply waits for a retry: so does this
                    await self._save_progress(turn, progress)
                    raise RetryLater(blocked)
            if not progress.get("sent") and await self._taken_over(contact):
                await self._hold(turn, dropped=True)  # taken over while the agent ran
                return
            await self._send_parts(turn, progress, quote=not latest())
            history = [
                HistoryTurn(role=t[0], text=t[1], message_id=t[2] if len(t) > 2 else None)
                for t in progress.get("turns", [])
            ]
            await self._after_reply(turn, progress)
            await self.complete(turn, history)
            self.stats.processed += len(turn.items)
        finally:
            self.in_flight -= 1
            self.listeners.thinking(contact, False)

    async def complete(self, turn: Turn, history: Sequence[HistoryTurn] = ()) -> None:
        """Remove the answered items from the inbox (one store step). The reply is out: a
        store failure here is retried in place (never by resending), until it works or
        shutdown cancels it."""
        ids = turn.ids
        await self._after_send(
            turn,
            "record it",
            lambda: self.store.complete(
                self.name, ids[0] if len(ids) == 1 else ids, turn.contact, history
            ),
        )
        self.backlog.release(turn.items)

    async def _after_send(
        self, turn: Turn, what: str, step: Callable[[], Awaitable[object]]
    ) -> None:
        """A store step after the reply went out: retried in place until it works (or
        shutdown cancels it), never by answering again."""
        delay = 0.05
        while True:
            try:
                await step()
                return
            except Exception as exc:  # noqa: BLE001 - logged, retried
                logger.warning(
                    "the reply to message %s was sent but the store could not %s (%s); "
                    "retrying in %.2f s",
                    turn.anchor.id,
                    what,
                    type(exc).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- handoff --------------------------------------------------------------------------
    async def _handoff(self, contact: str) -> Handoff | None:
        """The contact's handoff record; one that timed out is resumed first."""
        handoff = await self.handoffs.get(contact)
        if handoff is not None and handoff.expired():
            await self.handoffs.expire(contact)
            handoff = await self.handoffs.get(contact)
        return handoff

    async def _taken_over(self, contact: str) -> bool:
        """Whether a person took the conversation over since the turn began."""
        return await self.handoffs.is_active(contact)

    async def _hold(self, turn: Turn, *, dropped: bool = False) -> None:
        """A handed-off turn: its messages go to the history (for the operator, and for
        the agent once resumed) and leave the inbox; the agent's reply, if one was
        computed, is not sent."""
        if dropped:
            logger.info(
                "the reply to %s was not sent: a person took the conversation over",
                mask_number(turn.contact),
            )
        users = [
            HistoryTurn(role="user", text=await self._heard(m), message_id=m.id)
            for m in turn.messages
        ]
        await self.complete(turn, users)
        self.stats.processed += len(turn.items)

    async def _heard(self, message: Message) -> str:
        """A held message for the history; a voice note is transcribed when the interface
        has a transcriber (the operator cannot listen to it in the widget), else named."""
        if self.settings.transcriber is None or message.type != "audio":
            return _said(message)
        try:
            text, found, _, _ = await self._read(message)
        except TranscriptionFailed:
            return _said(message)
        return by_member(message, history_text(text, found))

    async def _after_reply(self, turn: Turn, progress: dict[str, Any]) -> None:
        """What a sent reply asked for: a handoff (the agent's or the user's command), or
        forgetting the handed-off exchange the turn carried (TASK mode). Retried in place
        if the store fails: the reply is out and must not be sent again."""
        contact, by = turn.contact, progress.get("handoff")
        if by:
            note = progress.get("handoff_note")
            await self._after_send(
                turn, "hand it off", lambda: self.handoffs.begin(contact, by=by, note=note)
            )
        elif progress.get("carried"):
            await self._after_send(
                turn, "forget the handed-off exchange", lambda: self.handoffs.carried(contact)
            )

    # -- asking ---------------------------------------------------------------------------
    async def _answer(
        self, turn: Turn, handoff: Handoff | None
    ) -> tuple[list[dict[str, Any]], list[list[Any]], dict[str, Any]]:
        """Run the agent (or a command) and turn its reply into sendable parts; the third
        item is what to do once the reply is out (see :meth:`_after_reply`)."""
        last = turn.last
        contact = turn.contact  # the user, or the group a group message belongs to
        # Read receipt + typing indicator first, so the user sees the bot at work at once
        # (the reset greeting is generated by the agent too). Marking the newest message
        # read marks the earlier ones too.
        if last.group_id is None:  # no typing indicator in a group
            with contextlib.suppress(Exception):
                await self._graph().mark_read(last.id, typing=True)
        self.listeners.thinking(contact, True)
        if len(turn.messages) == 1 and self.is_reset(last):
            await self.store.clear_history(self.name, contact)
            logger.info("history of %s reset", mask_number(contact))
            greeting = await self._greeting(last)
            return await self.delivery.parts(AgentReply(text=greeting)), [], {}
        if len(turn.messages) == 1 and self.is_handoff_command(last):
            logger.info("%s asks for a person", mask_number(contact))
            asked = [["user", _said(last), last.id], ["assistant", self.settings.handoff_message]]
            return (
                await self.delivery.parts(AgentReply(text=self.settings.handoff_message)),
                asked,
                {"handoff": "user", "handoff_note": "the user asked for a person"},
            )
        chat = self.settings.mode is InterfaceMode.CHAT
        carried = not chat and handoff is not None and handoff.resumed
        history: tuple[HistoryTurn, ...] = ()
        if chat or carried:
            history = tuple(
                await self.store.get_history(self.name, contact, self.settings.history_limit)
            )
        texts: list[str] = []
        attachments: list[Attachment] = []
        notes: list[str] = []
        users: list[list[Any]] = []
        choice: str | None = None
        for message in turn.messages:
            try:
                text, found, noted, choice = await self._read(message)
            except TranscriptionFailed:
                return [{"type": "text", "text": self.settings.voice_apology}], [], {}
            said = by_member(message, history_text(text, found))  # in a group: who said it
            if text and len(turn.messages) > 1:
                text = by_member(message, text)
            texts.append(text)
            attachments.extend(found)
            notes.extend(noted)
            users.append(["user", said, message.id])
        request = AgentRequest(
            text="\n".join(t for t in texts if t),
            sender=last.sender,
            attachments=tuple(attachments),
            history=history,
            message=last,
            messages=tuple(turn.messages),
            profile_name=last.profile_name,
            interface=self.name,
            choice=choice,
            notes=tuple(notes),
        )
        reply, ok = await self._run(request, last.id)
        parts = await self.delivery.parts(reply)
        if last.group_id is not None:
            parts = for_group(parts)
        turns = [*users, ["assistant", reply_history_text(reply)]] if chat and ok else []
        extra: dict[str, Any] = {"carried": True} if carried else {}
        if ok and reply.handoff:
            extra = {"handoff": "agent", "handoff_note": "the agent handed over"}
            if not chat:  # the operator will want to see what was asked
                turns = [*users, ["assistant", reply_history_text(reply)]]
        return parts, turns, extra

    async def _read(
        self, message: Message
    ) -> tuple[str, tuple[Attachment, ...], list[str], str | None]:
        """One message as the agent gets it: its text (a tapped choice's title, a voice
        note's transcript), its downloaded media, notes about what could not be read, and
        the tapped choice's id."""
        found, notes = await self._attachments(message)
        text, choice = text_and_choice(message, render_text(message))
        transcriber = self.settings.transcriber
        if transcriber is not None and message.type == "audio" and found:
            audio = found[0]
            try:
                text = (await transcriber(audio.data, audio.mime_type)).strip()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "could not transcribe the voice note %s (%s)", message.id, type(exc).__name__
                )
                self.listeners.error(message.sender, "transcription failed")
                raise TranscriptionFailed from exc
            self.listeners.transcript(message.id, text)
        return text, found, notes, choice

    async def _run(self, request: AgentRequest, message_id: str) -> tuple[AgentReply, bool]:
        """Ask the agent; with ``interrupt=True`` as a task a newer message may cancel."""
        if not self.settings.interrupt:
            return await self.runner.answer(request, message_id)
        contact = request.sender
        task = self._agents[contact] = self.tasks.spawn(
            self.runner.answer(request, message_id), "agent"
        )
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise Interrupted from None  # a newer message, not a shutdown
            raise
        finally:
            if self._agents.get(contact) is task:
                del self._agents[contact]

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
            sender=message.sender,
            message=message,
            profile_name=message.profile_name,
            interface=self.name,
            purpose="greeting",
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
                media.id, max_bytes=self.settings.media_max_bytes, kind=message.type
            )
        except (MediaError, WhatsAppAPIError) as exc:
            logger.warning(
                "could not download %s of message %s: %s",
                message.type,
                message.id,
                type(exc).__name__,
            )
            note = (
                f"the {message.type} the user sent could not be downloaded ({type(exc).__name__})"
            )
            return (), [note]
        self.listeners.media_size(message.id, len(data))  # the widget shows the size
        return (
            Attachment(
                kind=message.type,
                data=data,
                mime_type=mime or media.mime_type or "application/octet-stream",
                filename=media.filename,
                caption=message.caption,
                voice=media.voice,
            ),
        ), []

    # -- sending --------------------------------------------------------------------------
    async def _send_parts(self, turn: Turn, progress: dict[str, Any], *, quote: bool) -> None:
        """Send the parts not sent yet (a permanent failure drops the rest of the reply).
        Quotes the turn's last message when this reply is no longer the latest turn."""
        parts: list[dict[str, Any]] = progress["parts"]
        last = turn.last
        to = GroupId(last.group_id) if last.group_id is not None else turn.contact
        quoting = next((i for i, part in enumerate(parts) if can_quote(part)), None)
        for index in range(int(progress.get("sent", 0)), len(parts)):
            reply_to = last.id if quote and index == quoting else None
            await self.gate.turn()
            try:
                await self.delivery.send_part(
                    to, parts[index], reply_to=reply_to, answering=last.id
                )
            except TransportError as exc:
                if not exc.maybe_delivered:
                    await self._send_failed(turn, exc, progress, index)
                logger.warning(
                    "reply part %d to %s may or may not have been delivered "
                    "(timeout after sending); not resending",
                    index,
                    mask_number(to),
                )
            except AuthenticationError as exc:
                await self._send_failed(turn, exc, progress, index)
            except WhatsAppAPIError as exc:
                if exc.retryable:
                    await self._send_failed(turn, exc, progress, index)
                self.stats.send_failures += 1
                logger.error(
                    "reply to %s failed permanently (code %s: %s); message %s dropped",
                    mask_number(to),
                    exc.code,
                    type(exc).__name__,
                    turn.anchor.id,
                )
                self.listeners.error(to, f"send failed: {exc.code}")
                return
            if len(parts) > 1 and index + 1 < len(parts):
                progress["sent"] = index + 1
                await self._save_progress(turn, progress)

    async def _save_progress(self, turn: Turn, progress: dict[str, Any]) -> None:
        """Record the turn's progress. Best effort: if the store fails, sending goes on
        (only a crash before the reply completes would repeat those parts)."""
        try:
            await self.store.save_progress(self.name, turn.anchor.id, json.dumps(progress))
        except Exception as exc:  # noqa: BLE001 - logged; sending goes on
            logger.warning(
                "could not save the progress of message %s: %s", turn.anchor.id, type(exc).__name__
            )

    async def _send_failed(
        self, turn: Turn, exc: WhatsAppAPIError, progress: dict[str, Any], index: int
    ) -> None:
        """A retryable send failure: the part was not accepted, so it is resent later from
        the inbox (the parts before it are not), after a delay that doubles each time."""
        self.stats.send_failures += 1
        failures = int(progress.get("failures", 0)) + 1
        progress["sent"] = index
        progress["failures"] = failures
        await self.store.save_progress(self.name, turn.anchor.id, json.dumps(progress))
        delay = min(self.settings.sweep_interval * 2 ** (failures - 1), MAX_BACKOFF)
        to = turn.contact
        logger.warning(
            "reply to %s failed (%s, code %s); kept in the inbox, retry %d in %.1f s",
            mask_number(to),
            type(exc).__name__,
            exc.code,
            failures,
            delay,
        )
        self.listeners.error(to, f"send failed: {exc.code}; will retry")
        raise RetryLater(delay) from exc


def _is(message: Message, command: str | None) -> bool:
    """Whether ``message`` is exactly ``command`` (any case, surrounding spaces ignored)."""
    return (
        command is not None
        and message.type == "text"
        and (message.text or "").strip().lower() == command.lower()
    )


def _said(message: Message) -> str:
    """A message as the history records it when the agent does not read it (handed off,
    or a command): its text or a description of its media, with the member's name in a
    group."""
    said = text_and_choice(message, render_text(message))[0]
    media = message.media
    if media is not None and message.type in MEDIA_TYPES:
        mark = media_mark(message.type, media.voice, media.filename)
        said = f"{mark} {said}" if said else mark
    return by_member(message, said)
