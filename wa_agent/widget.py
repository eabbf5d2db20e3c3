"""Live view of WhatsApp conversations for Jupyter.

Two layers:

* :class:`ConversationLog` is pure Python (no extra needed): a bounded, thread-safe model of
  the conversations the bot has, one entry per contact, fed by the hosting layer with
  :meth:`~ConversationLog.inbound`, :meth:`~ConversationLog.outbound`,
  :meth:`~ConversationLog.status`, :meth:`~ConversationLog.thinking`,
  :meth:`~ConversationLog.error` and, for human handoff, :meth:`~ConversationLog.handoff`,
  :meth:`~ConversationLog.resume` and :meth:`~ConversationLog.operator`. Listeners registered with
  :meth:`~ConversationLog.subscribe` hear about every change.
* :class:`ConversationsWidget` (extra ``notebook``: ``pip install 'wa-agent-host[notebook]'``) shows
  a log with core ipywidgets: one :class:`ipywidgets.HTML` row per contact, message bubbles in
  (left) and out (right) with time, delivery ticks, media placeholders, an agent-thinking
  indicator and highlighted errors. Every user-controlled string is HTML-escaped, only the
  changed contact's row is resent, and changes made on another thread are handed to the
  kernel's event loop, so the view updates live from background tasks while no cell runs.
  Given an ``operator`` (a :class:`~wa_agent.WhatsAppInterface`) it is an operator console
  for human handoff: "Take over" / "Hand back" and a reply box under each conversation
  (:mod:`wa_agent._operator_console`); handed-off conversations and the operator's messages
  are marked as such.

``import wa_agent`` never imports this module; importing it never imports ipywidgets (the
widget imports it when it is created).
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, final

from .events import MEDIA_TYPES, STATUS_RANK

if TYPE_CHECKING:
    from ._operator_console import Operator, OperatorConsole, RowControls
    from .events import Message, StatusUpdate
    from .hosting.handoff import Handoff

__all__ = [
    "Conversation",
    "ConversationLog",
    "ConversationsWidget",
    "LogEntry",
    "MediaInfo",
    "render_conversation",
]

logger = logging.getLogger(__name__)

Direction = Literal["in", "out", "error", "operator", "note"]
Listener = Callable[[str], None]

_PENDING_STATUSES = 1000  # statuses whose outbound message is not logged yet (race with send)


@dataclass(slots=True)
class MediaInfo:
    """What the view shows for a media message instead of the media itself."""

    type: str
    size: int | None = None
    caption: str | None = None
    filename: str | None = None
    mime_type: str | None = None

    @classmethod
    def coerce(cls, value: MediaInfo | Mapping[str, Any] | None, kind: str) -> MediaInfo | None:
        """Accept a ``MediaInfo``, a mapping with the same keys, or ``None``."""
        if value is None or isinstance(value, MediaInfo):
            return value
        data = dict(value)
        data.setdefault("type", kind)
        unknown = set(data) - {"type", "size", "caption", "filename", "mime_type"}
        if unknown:
            raise TypeError(f"unknown media_info keys: {sorted(unknown)}")
        return cls(**data)


@dataclass(slots=True)
class LogEntry:
    """One line of a conversation.

    ``direction`` is ``"in"`` (from the user), ``"out"`` (from the bot), ``"operator"`` (from
    a person who took the conversation over), ``"error"`` (a note that processing failed) or
    ``"note"`` (the conversation was handed off or back). ``status`` is the delivery state of
    an outbound or operator message: ``None``
    until Meta reports one, then ``sent`` < ``delivered`` < ``read`` < ``played``, or ``failed``
    (final), with the reason in ``error``.
    """

    direction: Direction
    text: str
    time: datetime
    kind: str = "text"
    media: MediaInfo | None = None
    wamid: str | None = None
    status: str | None = None
    error: str | None = None
    transcript: str | None = None  # what the bot's transcriber heard (a voice note)

    @property
    def ticks(self) -> str:
        """WhatsApp-style ticks for the delivery state (``""`` for inbound messages)."""
        if self.direction not in ("out", "operator"):
            return ""
        return _TICKS.get(self.status or "", "…")


_TICKS = {"sent": "✓", "delivered": "✓✓", "read": "✓✓", "played": "✓✓", "failed": "✗"}


@dataclass(slots=True)
class Conversation:
    """Everything the log keeps about one contact (``contact`` is the WhatsApp number/id).

    ``handed_off`` is true while a person has the conversation (the bot does not answer);
    ``handoff_by`` says who handed it off (``"operator"``, ``"agent"``, ``"user"``…) and
    ``handoff_note`` why, when given.
    """

    contact: str
    name: str | None = None
    messages: deque[LogEntry] = field(default_factory=deque)
    thinking: bool = False
    error: str | None = None
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    dropped: int = 0  # messages evicted by the per-contact bound
    handed_off: bool = False
    handoff_by: str | None = None
    handoff_note: str | None = None

    def set_handoff(self, by: str | None, note: str | None = None) -> None:
        """In a person's hands (``by``: who asked), or with ``by=None`` back with the bot."""
        self.handed_off, self.handoff_by, self.handoff_note = by is not None, by, note


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _describe(message: Message) -> str:
    """A readable one-liner for an inbound message (its caption is shown with the media)."""
    if message.text:
        return message.text
    if message.location is not None:
        loc = message.location
        place = " ".join(p for p in (loc.name, loc.address) if p)
        return f"location: {place} ({loc.latitude}, {loc.longitude})".replace(":  (", ": (")
    if message.contacts:
        names = ", ".join(c.formatted_name or "?" for c in message.contacts)
        return f"contact card: {names}"
    if message.reaction is not None:
        if message.reaction.emoji:
            return f"reacted {message.reaction.emoji}"
        return "removed a reaction"
    if message.order is not None:
        return f"order: {len(message.order.product_items)} item(s)"
    if message.type in MEDIA_TYPES:
        return ""
    return f"[{message.type}]"


@final
class ConversationLog:
    """A bounded model of the bot's conversations, one :class:`Conversation` per contact.

    Keeps the last ``max_messages`` entries per contact and, if ``max_contacts`` is set, only
    the most recently active contacts. Delivery states only move forward
    (sent < delivered < read < played; failed is final); a status that arrives before its
    outbound message is logged is kept (bounded) and applied when the message shows up.
    Thread-safe; listeners are called after each change, outside the lock, with the contact.
    """

    def __init__(
        self,
        max_messages: int = 200,
        *,
        max_contacts: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_contacts is not None and max_contacts < 1:
            raise ValueError("max_contacts must be at least 1 (or None for no limit)")
        self.max_messages = max_messages
        self.max_contacts = max_contacts
        self._clock = clock
        self._lock = threading.RLock()
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self._by_wamid: dict[str, tuple[str, LogEntry]] = {}
        self._pending: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self._listeners: list[Listener] = []
        self._order: dict[str, int] = {}  # contact -> first-seen sequence number (display order)
        self._seq = 0

    # -- reading ---------------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """Hold this while reading a :class:`Conversation` that another thread may change."""
        return self._lock

    @property
    def contacts(self) -> list[str]:
        """Contacts in the order they first appeared."""
        with self._lock:
            return sorted(self._conversations, key=lambda c: self._order[c])

    def get(self, contact: str) -> Conversation | None:
        """The conversation with ``contact``, or ``None``."""
        return self._conversations.get(contact)

    def __getitem__(self, contact: str) -> Conversation:
        return self._conversations[contact]

    def __contains__(self, contact: object) -> bool:
        return contact in self._conversations

    def __len__(self) -> int:
        return len(self._conversations)

    def __iter__(self) -> Iterator[str]:
        return iter(self.contacts)

    # -- listeners -------------------------------------------------------------------------
    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(contact)`` after every change; returns a function that unsubscribes.

        A contact whose conversation was evicted is reported too (``get()`` then gives
        ``None``). Exceptions raised by a listener are logged and do not reach the caller.
        """
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def _notify(self, contacts: list[str]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for contact in contacts:
            for callback in listeners:
                try:
                    callback(contact)
                except Exception:
                    logger.warning("conversation listener %r failed", callback, exc_info=True)

    # -- writing ---------------------------------------------------------------------------
    def _conversation(self, contact: str, changed: list[str]) -> Conversation:
        """Get or create ``contact``'s conversation and mark it most recently active."""
        conv = self._conversations.get(contact)
        if conv is None:
            self._seq += 1
            self._order[contact] = self._seq
            conv = Conversation(contact=contact, updated=self._clock())
            self._conversations[contact] = conv
            if self.max_contacts is not None:
                while len(self._conversations) > self.max_contacts:
                    old, dropped = self._conversations.popitem(last=False)
                    self._order.pop(old, None)
                    for entry in dropped.messages:
                        if entry.wamid:
                            self._by_wamid.pop(entry.wamid, None)
                    changed.append(old)
        else:
            self._conversations.move_to_end(contact)
        conv.updated = self._clock()
        changed.append(contact)
        return conv

    def _append(self, conv: Conversation, entry: LogEntry) -> None:
        conv.messages.append(entry)
        if entry.wamid:
            self._by_wamid[entry.wamid] = (conv.contact, entry)
        while len(conv.messages) > self.max_messages:
            old = conv.messages.popleft()
            conv.dropped += 1
            if old.wamid and self._by_wamid.get(old.wamid, (None, None))[1] is old:
                del self._by_wamid[old.wamid]

    def inbound(self, message: Message, *, media_size: int | None = None) -> LogEntry:
        """Record a message from a user (a :class:`wa_agent.events.Message`).

        Uses ``sender``, ``profile_name``, ``type``, ``text``/``caption`` and ``media``;
        ``media_size`` (bytes) is shown in the media placeholder when known. A new inbound
        message clears the conversation's error banner.
        """
        media = None
        if message.type in MEDIA_TYPES or message.media is not None:
            ref = message.media
            media = MediaInfo(
                type=message.type,
                size=media_size,
                caption=message.caption,
                filename=ref.filename if ref else None,
                mime_type=ref.mime_type if ref else None,
            )
        entry = LogEntry(
            direction="in",
            text=_describe(message),
            time=message.timestamp,
            kind=message.type,
            media=media,
            wamid=message.id,
        )
        changed: list[str] = []
        with self._lock:
            conv = self._conversation(message.sender, changed)
            if message.profile_name:
                conv.name = message.profile_name
            conv.error = None
            self._append(conv, entry)
        self._notify(changed)
        return entry

    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: MediaInfo | Mapping[str, Any] | None = None,
    ) -> LogEntry:
        """Record a message the bot sent to ``to`` (``wamid`` from the send response).

        ``media_info`` (a :class:`MediaInfo` or a mapping with ``type``, ``size``,
        ``caption``, ``filename``, ``mime_type``) describes attached media.
        """
        entry = LogEntry(
            direction="out",
            text=text,
            time=self._clock(),
            kind=kind,
            media=MediaInfo.coerce(media_info, kind),
            wamid=wamid,
        )
        return self._add(to, entry)

    def _add(
        self, contact: str, entry: LogEntry, mark: Callable[[Conversation], None] | None = None
    ) -> LogEntry:
        """Append ``entry`` to ``contact``'s conversation (with the delivery status that
        arrived before it, if any; ``mark`` changes the conversation's state too)."""
        changed: list[str] = []
        with self._lock:
            conv = self._conversation(contact, changed)
            wamid = entry.wamid
            if wamid is not None and wamid in self._pending:
                entry.status, entry.error = self._pending.pop(wamid)
            if mark is not None:
                mark(conv)
            self._append(conv, entry)
        self._notify(changed)
        return entry

    def media_size(self, wamid: str, size: int) -> LogEntry | None:
        """Fill in the size of a logged message's media once it is known (inbound media is
        logged on arrival, before the bot downloads it). Returns the entry, or ``None`` when
        ``wamid`` is not in the log or has no media."""
        with self._lock:
            found = self._by_wamid.get(wamid)
            if found is None or found[1].media is None or found[1].media.size == size:
                return None
            contact, entry = found
            assert entry.media is not None
            entry.media.size = size
        self._notify([contact])
        return entry

    def transcript(self, wamid: str, text: str) -> LogEntry | None:
        """Show what the bot's transcriber heard under the voice note ``wamid``. Returns
        the entry, or ``None`` when ``wamid`` is not in the log."""
        with self._lock:
            found = self._by_wamid.get(wamid)
            if found is None or found[1].transcript == text:
                return None
            contact, entry = found
            entry.transcript = text
        self._notify([contact])
        return entry

    def set_wamid(self, entry: LogEntry, wamid: str) -> None:
        """Attach the wamid to an outbound entry logged before the send returned."""
        with self._lock:
            located = next(
                (c for c, conv in self._conversations.items() if entry in conv.messages), None
            )
            if located is None:
                return
            entry.wamid = wamid
            self._by_wamid[wamid] = (located, entry)
            if wamid in self._pending:
                entry.status, entry.error = self._pending.pop(wamid)
        self._notify([located])

    def status(self, update: StatusUpdate) -> LogEntry | None:
        """Apply a delivery status (a :class:`wa_agent.events.StatusUpdate`).

        Returns the updated entry, or ``None`` when the message is not (yet) in the log or
        the status would move backwards.
        """
        error = None
        if update.status == "failed":
            details = [e.message or e.title or e.details for e in update.errors]
            codes = [f" ({e.code})" if e.code is not None else "" for e in update.errors]
            error = "; ".join(f"{d or 'failed'}{c}" for d, c in zip(details, codes, strict=True))
            error = error or "failed"
        with self._lock:
            found = self._by_wamid.get(update.id)
            if found is None:
                old_status = self._pending.get(update.id, (None, None))[0]
                if _rank(update.status) > _rank(old_status):
                    self._pending[update.id] = (update.status, error)
                    self._pending.move_to_end(update.id)
                    while len(self._pending) > _PENDING_STATUSES:
                        self._pending.popitem(last=False)
                return None
            contact, entry = found
            if _rank(update.status) <= _rank(entry.status):
                return None
            entry.status = update.status
            entry.error = error
        self._notify([contact])
        return entry

    def thinking(self, contact: str, on: bool) -> None:
        """Show (``on=True``) or hide the agent-thinking indicator for ``contact``."""
        changed: list[str] = []
        with self._lock:
            conv = self._conversations.get(contact)
            if conv is None:
                if not on:
                    return
                conv = self._conversation(contact, changed)
            elif conv.thinking == on:
                return
            else:
                changed.append(contact)
            conv.thinking = on
        self._notify(changed)

    def error(self, contact: str, text: str) -> LogEntry:
        """Record that processing ``contact``'s message failed: an error note in the
        conversation and a highlighted banner until the contact writes again."""
        entry = LogEntry(direction="error", text=text, time=self._clock(), kind="error")
        changed: list[str] = []
        with self._lock:
            conv = self._conversation(contact, changed)
            conv.error = text
            self._append(conv, entry)
        self._notify(changed)
        return entry

    def operator(self, contact: str, text: str, wamid: str | None = None) -> LogEntry:
        """Record a message a person sent to ``contact`` while the conversation is handed off
        (shown as the operator's, with delivery ticks once ``wamid`` gets statuses)."""
        entry = LogEntry(direction="operator", text=text, time=self._clock(), wamid=wamid)
        return self._add(contact, entry)

    def handoff(self, contact: str, handoff: Handoff) -> LogEntry:
        """Record that a person took ``contact``'s conversation over (a
        :class:`wa_agent.Handoff`; its ``by`` and ``note`` are shown): the row is marked
        until :meth:`resume`."""
        by, note = str(handoff.by), handoff.note
        text = f"handed off ({by})" + (f": {note}" if note else "")
        entry = LogEntry(direction="note", text=text, time=self._clock(), kind="handoff")
        return self._add(contact, entry, lambda conv: conv.set_handoff(by, note))

    def resume(self, contact: str, by: str) -> LogEntry:
        """Record that the bot answers ``contact`` again (``by`` who handed it back)."""
        entry = LogEntry(
            direction="note",
            text=f"handed back to the agent ({by})",
            time=self._clock(),
            kind="resume",
        )
        return self._add(contact, entry, lambda conv: conv.set_handoff(None))

    def clear(self) -> None:
        """Forget every conversation (listeners hear about each contact)."""
        with self._lock:
            contacts = list(self._conversations)
            self._conversations.clear()
            self._by_wamid.clear()
            self._pending.clear()
            self._order.clear()
        self._notify(contacts)


def _rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "", 0)


# -- rendering ------------------------------------------------------------------------------

_CSS = """
<style>
.wa-title{font:600 15px sans-serif;margin:4px 0}
.wa-count{font:12px sans-serif;color:#667781;margin-left:8px}
.wa-row{font:13px sans-serif;border:1px solid #d1d7db;border-radius:8px;margin:6px 0;
  padding:6px 8px;background:#efeae2;max-width:640px}
.wa-row.wa-has-error{border:2px solid #d93025}
.wa-head{margin-bottom:4px}
.wa-name{font-weight:600}
.wa-number{color:#667781;margin-left:6px}
.wa-thinking{color:#128c7e;font-style:italic;margin-left:8px}
.wa-banner{background:#fde7e9;color:#b3261e;border-radius:6px;padding:3px 6px;margin:4px 0}
.wa-msgs{display:flex;flex-direction:column;gap:3px;max-height:360px;overflow-y:auto}
.wa-bubble{max-width:75%;padding:4px 8px;border-radius:8px;white-space:pre-wrap;
  overflow-wrap:anywhere;box-shadow:0 1px 0 rgba(0,0,0,.08)}
.wa-in{align-self:flex-start;background:#fff}
.wa-out{align-self:flex-end;background:#d9fdd3}
.wa-error{align-self:center;background:#fde7e9;color:#b3261e}
.wa-typing{align-self:flex-end;background:#d9fdd3;color:#667781;font-style:italic}
.wa-media{color:#54656f;font-style:italic}
.wa-caption{display:block}
.wa-transcript{font-style:italic;color:#54656f}
.wa-meta{font-size:11px;color:#667781;margin-left:8px;float:right}
.wa-tick-read,.wa-tick-played{color:#53bdeb}
.wa-tick-failed{color:#d93025;font-weight:600}
.wa-earlier{align-self:center;color:#667781;font-size:11px}
.wa-operator{align-self:flex-end;background:#fff3c4;border:1px solid #e8c547}
.wa-label{display:block;font-size:11px;font-weight:600;color:#8a6d00}
.wa-note{align-self:center;background:#e7f0fd;color:#1a4f8b;font-size:12px}
.wa-row.wa-handed-off{border:2px solid #e8a317}
.wa-handoff{background:#e8a317;color:#fff;border-radius:10px;padding:1px 8px;margin-left:8px;
  font-size:12px;font-weight:600}
.wa-handoff-note{color:#8a6d00;margin-left:6px;font-style:italic}
.wa-console-error{color:#b3261e;font:12px sans-serif}
</style>
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _render_entry(entry: LogEntry) -> str:
    parts: list[str] = []
    if entry.direction == "operator":
        parts.append('<span class="wa-label">operator</span>')
    if entry.media is not None:
        m = entry.media
        bits = [m.type] + [b for b in (_size(m.size), m.filename, m.mime_type) if b]
        parts.append(f'<span class="wa-media">[{_e(" · ".join(bits))}]</span>')
        if m.caption:
            parts.append(f'<span class="wa-caption">{_e(m.caption)}</span>')
        if entry.transcript is not None:
            parts.append(f'<br><span class="wa-transcript">“{_e(entry.transcript)}”</span>')
    if entry.text:
        if entry.media is not None:
            parts.append("<br>")
        parts.append(f'<span class="wa-text">{_e(entry.text)}</span>')
    when = entry.time.astimezone()
    meta = f'<span class="wa-time">{_e(when.strftime("%H:%M:%S"))}</span>'
    if entry.direction in ("out", "operator"):
        state = entry.status or "pending"
        tip = entry.error if entry.status == "failed" and entry.error else state
        meta += (
            f' <span class="wa-ticks wa-tick-{_e(state)}" title="{_e(tip)}">'
            f"{_e(entry.ticks)}</span>"
        )
        if entry.status == "failed" and entry.error:
            parts.append(f'<br><span class="wa-fail">{_e(entry.error)}</span>')
    title = f' title="{_e(entry.wamid)}"' if entry.wamid else ""
    return (
        f'<div class="wa-bubble wa-{entry.direction}" data-kind="{_e(entry.kind)}"{title}>'
        f'{"".join(parts)}<span class="wa-meta">{meta}</span></div>'
    )


def render_conversation(conv: Conversation, *, max_visible: int | None = None) -> str:
    """HTML for one contact's row. All user-controlled text is escaped.

    ``max_visible`` shows only the last N messages (with a note of how many are hidden).
    """
    messages = list(conv.messages)
    hidden = conv.dropped
    if max_visible is not None and len(messages) > max_visible:
        hidden += len(messages) - max_visible
        messages = messages[len(messages) - max_visible :]
    cls = "wa-row wa-has-error" if conv.error else "wa-row"
    head = f'<span class="wa-name">{_e(conv.name or conv.contact)}</span>'
    head += f'<span class="wa-number">{_e(conv.contact)}</span>'
    if conv.handed_off:
        cls += " wa-handed-off"
        head += f'<span class="wa-handoff">handed off — {_e(conv.handoff_by or "operator")}</span>'
        if conv.handoff_note:
            head += f'<span class="wa-handoff-note">{_e(conv.handoff_note)}</span>'
    if conv.thinking:
        head += '<span class="wa-thinking">agent is thinking…</span>'
    out = [f'<div class="{cls}" data-contact="{_e(conv.contact)}">']
    out.append(f'<div class="wa-head">{head}</div>')
    if conv.error:
        out.append(f'<div class="wa-banner">⚠ {_e(conv.error)}</div>')
    out.append('<div class="wa-msgs">')
    if hidden:
        out.append(f'<div class="wa-earlier">{hidden} earlier message(s) not shown</div>')
    out.extend(_render_entry(entry) for entry in messages)
    if conv.thinking:
        out.append('<div class="wa-bubble wa-typing">typing…</div>')
    out.append("</div></div>")
    return "".join(out)


def _import_ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "ConversationsWidget needs ipywidgets: pip install 'wa-agent-host[notebook]' "
            "(or pip install ipywidgets)"
        ) from exc
    return ipywidgets


@final
class ConversationsWidget:
    """An ipywidgets view of a :class:`ConversationLog`, updating live.

    ``widget.box`` is the displayed ``VBox`` (displaying the object itself works too);
    ``widget.rows`` maps each contact to its ``ipywidgets.HTML`` row and ``widget.log`` is the
    model. Changes made on the thread that created the widget (the kernel's loop thread, where
    the server and its background tasks run) update the rows at once; changes made on other
    threads are handed to that event loop with ``call_soon_threadsafe``. Only the changed
    contact's row is resent. Call :meth:`close` to stop following the log.

    With an ``operator`` (a :class:`~wa_agent.WhatsAppInterface`, or anything with its async
    ``handoff``/``resume``/``send``) the view is an operator console: under each row a
    "Take over" / "Hand back" button (its label follows the conversation), a reply box and
    "Send" (``widget.controls[contact]``). Clicks schedule the call on the event loop and
    return at once; a failure shows as an error in the row; :meth:`wait` waits for them. The
    log must hear the operator's events (it is one of the interface's ``listeners``).
    """

    def __init__(
        self,
        log: ConversationLog | None = None,
        *,
        title: str = "WhatsApp conversations",
        max_visible: int | None = 50,
        loop: asyncio.AbstractEventLoop | None = None,
        operator: Operator | None = None,
    ) -> None:
        widgets = _import_ipywidgets()
        self.log = log if log is not None else ConversationLog()
        self.title = title
        self.max_visible = max_visible
        self.rows: dict[str, Any] = {}
        self._items: dict[str, Any] = {}  # what the box shows per contact (row + controls)
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        self._thread = threading.get_ident()
        self._closed = False
        self.header = widgets.HTML(value=self._header_html())
        self._widgets = widgets
        self._rows_box = widgets.VBox(children=())
        self.console: OperatorConsole | None = None
        if operator is not None:
            from ._operator_console import OperatorConsole

            self.console = OperatorConsole(widgets, self.log, operator, loop)
        self.box = widgets.VBox(children=(self.header, self._rows_box))
        self.box.add_class("wa-conversations")
        self._unsubscribe = self.log.subscribe(self._on_change)
        for contact in self.log.contacts:
            self._refresh(contact)

    def _header_html(self) -> str:
        n = len(self.log)
        count = f"{n} conversation{'s' if n != 1 else ''}" if n else "waiting for messages…"
        return (
            f'{_CSS}<div class="wa-title">{_e(self.title)}'
            f'<span class="wa-count">{_e(count)}</span></div>'
        )

    def _on_change(self, contact: str) -> None:
        loop = self._loop
        if (
            threading.get_ident() != self._thread
            and loop is not None
            and not loop.is_closed()
            and loop.is_running()
        ):
            loop.call_soon_threadsafe(self._refresh, contact)
        else:
            self._refresh(contact)

    def _refresh(self, contact: str) -> None:
        """Re-render ``contact``'s row (or drop it) by assigning new trait values."""
        if self._closed:
            return
        with self.log.lock:
            conv = self.log.get(contact)
            value = (
                None if conv is None else render_conversation(conv, max_visible=self.max_visible)
            )
            handed_off = conv is not None and conv.handed_off
        row = self.rows.get(contact)
        if value is None:
            if row is not None:
                self._drop_row(contact, row)
        elif row is None:
            row = self._widgets.HTML(value=value)
            row.add_class("wa-contact")
            self.rows[contact] = row
            item = row if self.console is None else self.console.wrap(contact, row)
            self._items[contact] = item
            self._rows_box.children = (*self._rows_box.children, item)
        elif row.value != value:
            row.value = value
        if self.console is not None:
            self.console.sync(contact, handed_off)
        header = self._header_html()
        if self.header.value != header:
            self.header.value = header

    def _drop_row(self, contact: str, row: Any) -> None:
        del self.rows[contact]
        item = self._items.pop(contact, row)
        self._rows_box.children = tuple(c for c in self._rows_box.children if c is not item)
        if self.console is not None:
            self.console.drop(contact)
        if item is not row:
            item.close()
        row.close()

    @property
    def controls(self) -> dict[str, RowControls]:
        """Each contact's operator controls (empty without an ``operator``)."""
        return {} if self.console is None else self.console.controls

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait until the operator actions started from the buttons have finished."""
        if self.console is not None:
            await self.console.wait(timeout)

    def refresh(self) -> None:
        """Re-render every row (normally not needed: rows follow the log)."""
        for contact in list(self.rows) + [c for c in self.log.contacts if c not in self.rows]:
            self._refresh(contact)

    def close(self) -> None:
        """Stop following the log and close the ipywidgets models."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        if self.console is not None:
            self.console.close()
        for contact, row in self.rows.items():
            item = self._items.get(contact, row)
            if item is not row:
                item.close()
            row.close()
        self.rows = {}
        self._items = {}
        self._rows_box.close()
        self.header.close()
        self.box.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<ConversationsWidget contacts={len(self.rows)} title={self.title!r}>"
