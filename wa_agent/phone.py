"""A chat box that acts as a phone on the :class:`~wa_agent.testing.Simulator`, for notebooks.

::

    sim = Simulator(manager)
    await sim.start()
    phone = sim.phone("15551230001", "Alice")    # or PhoneWidget(sim, number=..., name=...)
    phone                                         # shows the chat box in the notebook
    replies = await phone.send("hello")           # the same, from code: returns the replies

The widget (extra ``notebook``) has a user picker (and fields to create a new simulated
user), the conversation as bubbles (the user's messages on the right with read ticks, the
bot's on the left; images inline, other media as placeholders; locations, contact cards and
link buttons as text; the bot's reactions on the user's bubbles; under a voice note, what
the bot's transcriber heard), the choices of the bot's last message as buttons to tap (reply
buttons, or a list's rows under its label), a text box with a Send button, an "Attach image"
upload and a "Voice note" button. Pressing Send returns at once: the message is posted
by a background task and the bot's replies appear when the emulator receives them, while no
cell runs. Every string shown is HTML-escaped.

Code (and CI, which cannot click) uses :meth:`PhoneWidget.send`,
:meth:`PhoneWidget.send_image`, :meth:`PhoneWidget.tap`, :meth:`PhoneWidget.send_voice` and
:meth:`PhoneWidget.select`, and reads the state back with
:meth:`PhoneWidget.transcript`. All of it must run on the event loop the simulator runs on
(the notebook kernel's loop).
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import mimetypes
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, final

from ._loops import on_loop
from .numbers import normalize_number

__all__ = ["PhoneMessage", "PhoneSimulator", "PhoneUser", "PhoneWidget"]


# What the phone needs from the simulator, as protocols: the phone is a view on top of
# wa_agent.testing.Simulator and never imports it (no import cycle between the two).
class _Stored(Protocol):
    @property
    def mime_type(self) -> str: ...
    @property
    def data(self) -> bytes: ...


class _Receipt(Protocol):
    @property
    def message_id(self) -> str: ...


class _Outbound(Protocol):
    """A message the bot sent (the emulator's ``SentMessage``)."""

    @property
    def type(self) -> str: ...
    @property
    def wamid(self) -> str: ...
    @property
    def wa_id(self) -> str: ...
    @property
    def time(self) -> float: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def content(self) -> dict[str, Any]: ...
    @property
    def text(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...


class _Emulator(Protocol):
    @property
    def media(self) -> Mapping[str, _Stored]: ...
    @property
    def reads(self) -> Sequence[_Receipt]: ...
    def subscribe(self, callback: Callable[[Any], Any]) -> Callable[[], None]: ...


class PhoneUser(Protocol):
    """What the phone needs of a simulated user (``wa_agent.testing.SimulatedUser``)."""

    @property
    def number(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def replies(self) -> Sequence[Any]: ...
    async def send_text(self, text: str, *, reply_to: str | None = None) -> str: ...
    async def send_image(
        self, data: bytes | Path, mime_type: str = ..., *, caption: str | None = None
    ) -> str: ...
    async def send_document(
        self,
        data: bytes | Path,
        filename: str | None = None,
        mime_type: str = ...,
        *,
        caption: str | None = None,
    ) -> str: ...
    async def send_voice(self, data: bytes | None = None, mime_type: str = ...) -> str: ...
    async def tap(self, choice: str, *, on: Any = None) -> str: ...


class PhoneSimulator(Protocol):
    """What the phone needs of a simulator (``wa_agent.testing.Simulator``)."""

    @property
    def users(self) -> Mapping[str, PhoneUser]: ...
    @property
    def display_phone_number(self) -> str: ...
    @property
    def emulator(self) -> _Emulator: ...
    def user(self, number: str = ..., name: str | None = None) -> PhoneUser: ...
    async def settle(self, timeout: float = ...) -> None: ...


logger = logging.getLogger(__name__)

#: Images shown inline (others, and larger ones, get a placeholder). No SVG: it can script.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
INLINE_IMAGE_MAX = 256 * 1024


@dataclass(slots=True)
class PhoneMessage:
    """One bubble on the phone: ``sender`` is ``"me"`` (the simulated user) or ``"bot"``."""

    sender: Literal["me", "bot"]
    kind: str
    text: str | None
    time: datetime
    wamid: str | None = None
    caption: str | None = None
    mime_type: str | None = None
    size: int | None = None
    filename: str | None = None
    extra: str | None = None  # buttons of an interactive message, template name, ...
    reply_to: str | None = None
    failed: str | None = None  # why sending failed (for the user's own messages)
    data: bytes | None = None  # kept only for small images shown inline
    choices: tuple[tuple[str, str, str | None], ...] = ()  # (id, title, description)
    list_button: str | None = None  # the label opening a list message
    reaction: str | None = None  # the bot's reaction to this (user's) message
    transcript: str | None = None  # what the bot understood of this (user's) voice note

    def as_dict(self, status: str | None = None) -> dict[str, Any]:
        """A JSON-friendly summary (no media bytes)."""
        out: dict[str, Any] = {
            "from": self.sender,
            "kind": self.kind,
            "text": self.text,
            "time": self.time.isoformat(),
            "wamid": self.wamid,
        }
        for key in (
            "caption",
            "mime_type",
            "size",
            "filename",
            "extra",
            "reply_to",
            "failed",
            "list_button",
            "reaction",
            "transcript",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.choices:
            out["choices"] = [title for _id, title, _description in self.choices]
        if self.sender == "me":
            out["status"] = status
        return out


_CSS = """<style>
.wa-phone{font:13px sans-serif;width:360px;border:8px solid #222;border-radius:22px;
  background:#efeae2;overflow:hidden}
.wa-phone-head{background:#075e54;color:#fff;padding:8px 10px}
.wa-phone-name{font-weight:600}
.wa-phone-number{opacity:.8;margin-left:6px;font-size:12px}
.wa-phone-scroll{display:flex;flex-direction:column-reverse;height:340px;overflow-y:auto}
.wa-phone-msgs{display:flex;flex-direction:column;gap:4px;padding:8px}
.wa-phone-empty{align-self:center;color:#667781;font-style:italic;margin-top:40px}
.wa-phone-bubble{max-width:80%;padding:5px 8px;border-radius:8px;white-space:pre-wrap;
  overflow-wrap:anywhere;box-shadow:0 1px 0 rgba(0,0,0,.08)}
.wa-phone-me{align-self:flex-end;background:#d9fdd3}
.wa-phone-bot{align-self:flex-start;background:#fff}
.wa-phone-media{color:#54656f;font-style:italic}
.wa-phone-img{display:block;max-width:220px;max-height:220px;border-radius:6px;margin-bottom:3px}
.wa-phone-extra{display:block;color:#128c7e;margin-top:3px}
.wa-phone-meta{font-size:11px;color:#667781;margin-left:8px;float:right}
.wa-phone-read{color:#53bdeb}
.wa-phone-failed{color:#d93025;font-weight:600}
.wa-phone-transcript{display:block;color:#54656f;font-style:italic;margin-top:3px}
.wa-phone-reaction{display:inline-block;background:#fff;border-radius:10px;padding:0 4px;
  margin-top:2px;box-shadow:0 1px 1px rgba(0,0,0,.15)}
</style>"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _import_ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "PhoneWidget needs ipywidgets: pip install 'wa-agent-host[notebook]' "
            "(or pip install ipywidgets)"
        ) from exc
    return ipywidgets


def _interactive_extra(message: _Outbound) -> str | None:
    content = message.content
    if message.type == "template":
        name = content.get("name")
        return f"template {name}" if isinstance(name, str) else "template"
    if message.type != "interactive":
        return None
    action = content.get("action")
    if not isinstance(action, dict):
        return None
    titles: list[str] = []
    for button in action.get("buttons") or []:
        reply = button.get("reply") if isinstance(button, dict) else None
        if isinstance(reply, dict) and isinstance(reply.get("title"), str):
            titles.append(f"[{reply['title']}]")
    for section in action.get("sections") or []:
        for row in (section.get("rows") or []) if isinstance(section, dict) else []:
            if isinstance(row, dict) and isinstance(row.get("title"), str):
                titles.append(f"• {row['title']}")
    if not titles and isinstance(action.get("button"), str):
        titles.append(f"[{action['button']}]")
    return " ".join(titles) or None


def _choices(message: _Outbound) -> tuple[tuple[tuple[str, str, str | None], ...], str | None]:
    """The choices of an interactive message (reply buttons or list rows) and the label of
    the button that opens a list."""
    if message.type != "interactive":
        return (), None
    action = message.content.get("action")
    if not isinstance(action, dict):
        return (), None
    out: list[tuple[str, str, str | None]] = []
    for button in action.get("buttons") or []:
        reply = button.get("reply") if isinstance(button, dict) else None
        if isinstance(reply, dict) and isinstance(reply.get("title"), str):
            out.append((str(reply.get("id")), reply["title"], None))
    for section in action.get("sections") or []:
        for row in (section.get("rows") or []) if isinstance(section, dict) else []:
            if isinstance(row, dict) and isinstance(row.get("title"), str):
                description = row.get("description")
                out.append(
                    (
                        str(row.get("id")),
                        row["title"],
                        description if isinstance(description, str) else None,
                    )
                )
    label = action.get("button") if message.content.get("type") == "list" else None
    return tuple(out), label if isinstance(label, str) else None


def _link(message: _Outbound) -> tuple[str, str] | None:
    """``(label, url)`` of a CTA URL message."""
    if message.type != "interactive" or message.content.get("type") != "cta_url":
        return None
    action = message.content.get("action")
    parameters = action.get("parameters") if isinstance(action, dict) else None
    if not isinstance(parameters, dict):
        return None
    return str(parameters.get("display_text")), str(parameters.get("url"))


def _card_line(card: dict[str, Any]) -> str:
    name = card.get("name")
    formatted = name.get("formatted_name") if isinstance(name, dict) else None
    phones = [
        str(p.get("phone"))
        for p in card.get("phones") or []
        if isinstance(p, dict) and p.get("phone")
    ]
    return f"👤 {formatted or 'contact'}" + (f" · {', '.join(phones)}" if phones else "")


def _bubble(entry: PhoneMessage, status: str | None) -> str:
    """One bubble of the phone's screen (every text escaped); ``status`` is the user's
    message's state (``None`` for the bot's)."""
    parts: list[str] = []
    if entry.data is not None and entry.mime_type:
        mime = entry.mime_type.split(";")[0].strip().lower()
        src = f"data:{mime};base64,{base64.b64encode(entry.data).decode()}"
        parts.append(
            f'<img class="wa-phone-img" src="{_e(src)}" alt="{_e(entry.filename or entry.kind)}">'
        )
    elif entry.kind not in ("text", "interactive", "reaction", "location", "contacts"):
        bits = [entry.kind] + [b for b in (_size(entry.size), entry.filename, entry.mime_type) if b]
        parts.append(f'<span class="wa-phone-media">[{_e(" · ".join(bits))}]</span>')
    if entry.caption:
        parts.append(f'<span class="wa-phone-caption">{_e(entry.caption)}</span>')
    if entry.text:
        if parts:
            parts.append("<br>")
        parts.append(f'<span class="wa-phone-text">{_e(entry.text)}</span>')
    if entry.extra:
        parts.append(f'<span class="wa-phone-extra">{_e(entry.extra)}</span>')
    if entry.transcript:
        parts.append(f'<span class="wa-phone-transcript">“{_e(entry.transcript)}”</span>')
    if entry.reaction:
        parts.append(f'<span class="wa-phone-reaction">{_e(entry.reaction)}</span>')
    meta = _e(entry.time.astimezone().strftime("%H:%M"))
    if status == "failed":
        meta += f' <span class="wa-phone-failed" title="{_e(entry.failed)}">✗ not sent</span>'
    elif status is not None:
        ticks = {"sending": "🕓", "sent": "✓", "read": "✓✓"}[status]
        meta += f' <span class="wa-phone-ticks wa-phone-{status}">{ticks}</span>'
    title = f' title="{_e(entry.wamid)}"' if entry.wamid else ""
    return (
        f'<div class="wa-phone-bubble wa-phone-{entry.sender}" '
        f'data-kind="{_e(entry.kind)}"{title}>{"".join(parts)}'
        f'<span class="wa-phone-meta">{meta}</span></div>'
    )


@final
class PhoneWidget:
    """A phone for the :class:`~wa_agent.testing.Simulator`: pick a simulated user, type,
    attach an image, and watch the bot answer (see the module docstring).

    :param simulator: a started (or soon started) simulator; the phone hears every message
        its emulator accepts.
    :param number: the simulated user to start with (created if new).
    :param name: that user's profile name.
    :param max_messages: bubbles kept per user (older ones are dropped).
    """

    def __init__(
        self,
        simulator: PhoneSimulator,
        *,
        number: str = "15551230001",
        name: str | None = "Alice",
        max_messages: int = 200,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        widgets = _import_ipywidgets()
        self.sim = simulator
        self.max_messages = max_messages
        self._messages: dict[str, deque[PhoneMessage]] = {}
        self._read: set[str] = set()
        self._reads_seen = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._updating = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.user: PhoneUser = simulator.user(number, name)

        self.contact = widgets.Dropdown(description="User", options=[])
        self.new_number = widgets.Text(
            placeholder="new number, e.g. 447700900123", layout=widgets.Layout(width="190px")
        )
        self.new_name = widgets.Text(placeholder="name", layout=widgets.Layout(width="100px"))
        self.add_button = widgets.Button(
            description="Add user", icon="user-plus", layout=widgets.Layout(width="110px")
        )
        self.screen = widgets.HTML()
        self.text = widgets.Text(placeholder="Type a message", layout=widgets.Layout(width="220px"))
        self.send_button = widgets.Button(
            description="Send",
            button_style="success",
            icon="paper-plane",
            layout=widgets.Layout(width="90px"),
        )
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=False, description="Attach image"
        )
        self.status = widgets.HTML()
        #: The choices of the bot's last message, as buttons to tap (empty when it has none).
        self.choices = widgets.Box(layout=widgets.Layout(flex_flow="row wrap", max_width="376px"))
        self.choices.add_class("wa-phone-choices")
        self._choices_key: str | None = None
        self.voice_button = widgets.Button(
            description="Voice note",
            icon="microphone",
            layout=widgets.Layout(width="120px"),
            tooltip="Send a recorded voice note (silence)",
        )
        self.box = widgets.VBox(
            children=(
                widgets.HBox(children=(self.contact,)),
                widgets.HBox(children=(self.new_number, self.new_name, self.add_button)),
                self.screen,
                self.choices,
                widgets.HBox(children=(self.text, self.send_button)),
                widgets.HBox(children=(self.upload, self.voice_button)),
                self.status,
            )
        )
        self.box.add_class("wa-phone-widget")

        self.send_button.on_click(self._on_send_click)
        self.voice_button.on_click(self._on_voice_click)
        self.add_button.on_click(self._on_add_click)
        self.upload.observe(self._on_upload, names="value")
        self.contact.observe(self._on_contact, names="value")
        self._unsubscribe = simulator.emulator.subscribe(self._on_bot_message)
        self._refresh_contacts()
        self._render()

    # -- state -------------------------------------------------------------------------
    @property
    def number(self) -> str:
        """The number of the simulated user the phone shows."""
        return self.user.number

    @property
    def pending(self) -> int:
        """Sends started from the widget (Send button, upload) that have not finished."""
        return sum(1 for t in self._tasks if not t.done())

    def messages(self, number: str | None = None) -> list[PhoneMessage]:
        """The bubbles kept for ``number`` (default: the shown user), oldest first."""
        return list(self._messages.get(self._digits(number) if number else self.number, ()))

    def transcript(self, number: str | None = None) -> list[dict[str, Any]]:
        """:meth:`messages` as JSON-friendly dicts; the user's own messages carry a
        ``status``: ``sent``, ``read`` (the bot marked it read) or ``failed``."""
        self._sync_reads()
        self._sync_transcripts()
        return [m.as_dict(self._status(m)) for m in self.messages(number)]

    @property
    def html(self) -> str:
        """The HTML the phone screen shows now."""
        return str(self.screen.value)

    def select(self, number: str, name: str | None = None) -> PhoneUser:
        """Show (and create if needed) the simulated user ``number``."""
        self.user = self.sim.user(number, name)
        self._refresh_contacts()
        self._render()
        return self.user

    # -- sending from code -------------------------------------------------------------
    async def send(self, text: str, *, timeout: float = 30.0) -> list[Any]:
        """Send ``text`` as the shown user and wait until the bot has answered everything
        (:meth:`Simulator.settle`); return the replies this user got meanwhile."""
        user = self.user
        start = len(user.replies)
        await self._send_text(user, text)
        await self.sim.settle(timeout)
        return list(user.replies[start:])

    async def send_image(
        self,
        data: bytes | Path,
        mime_type: str | None = None,
        *,
        caption: str | None = None,
        filename: str | None = None,
        timeout: float = 30.0,
    ) -> list[Any]:
        """Send an image (bytes or a file) as the shown user; like :meth:`send`."""
        if isinstance(data, Path):
            filename = filename or data.name
            mime_type = mime_type or mimetypes.guess_type(data.name)[0]
            data = await asyncio.to_thread(data.read_bytes)
        user = self.user
        start = len(user.replies)
        await self._send_media(
            user, "image", data, mime_type or "image/jpeg", caption=caption, filename=filename
        )
        await self.sim.settle(timeout)
        return list(user.replies[start:])

    async def tap(self, choice: str, *, timeout: float = 30.0) -> list[Any]:
        """Tap a choice of the bot's messages (by title or id) as the shown user, like the
        choice buttons under the screen do; waits like :meth:`send` and returns the
        replies."""
        user = self.user
        start = len(user.replies)
        await self._tap(user, choice, None)
        await self.sim.settle(timeout)
        return list(user.replies[start:])

    async def send_voice(self, data: bytes | None = None, *, timeout: float = 30.0) -> list[Any]:
        """Send a voice note (OGG/Opus bytes; default a second of silence) as the shown
        user; like :meth:`send`."""
        user = self.user
        start = len(user.replies)
        await self._send_voice(user, data)
        await self.sim.settle(timeout)
        return list(user.replies[start:])

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait for sends started from the widget, then for the bot to settle."""
        if self._tasks:
            await asyncio.wait_for(
                asyncio.gather(*list(self._tasks), return_exceptions=True), timeout
            )
        await self.sim.settle(timeout)

    # -- the actual sending ------------------------------------------------------------
    async def _send_text(self, user: PhoneUser, text: str) -> PhoneMessage:
        entry = PhoneMessage("me", "text", text, datetime.now(UTC))
        self._add(user.number, entry)
        try:
            entry.wamid = await user.send_text(text)
        except BaseException as exc:
            entry.failed = str(exc) or type(exc).__name__
            raise
        finally:
            self._changed(user.number)
        return entry

    async def _send_media(
        self,
        user: PhoneUser,
        kind: str,
        data: bytes,
        mime_type: str,
        *,
        caption: str | None,
        filename: str | None,
    ) -> PhoneMessage:
        entry = PhoneMessage(
            "me",
            kind,
            None,
            datetime.now(UTC),
            caption=caption,
            mime_type=mime_type,
            size=len(data),
            filename=filename,
            data=self._inline(mime_type, data),
        )
        self._add(user.number, entry)
        try:
            if kind == "image":
                entry.wamid = await user.send_image(data, mime_type, caption=caption)
            else:
                entry.wamid = await user.send_document(data, filename, mime_type, caption=caption)
        except BaseException as exc:
            entry.failed = str(exc) or type(exc).__name__
            raise
        finally:
            self._changed(user.number)
        return entry

    async def _tap(self, user: PhoneUser, choice: str, on: str | None) -> PhoneMessage:
        offered = next(
            (
                m
                for m in reversed(self._messages.get(user.number, ()))
                if m.choices and (on is None or m.wamid == on)
            ),
            None,
        )
        title = choice
        if offered is not None:
            title = next((t for i, t, _d in offered.choices if choice in (i, t)), choice)
        entry = PhoneMessage(
            "me", "interactive", title, datetime.now(UTC), reply_to=offered.wamid if offered else on
        )
        self._add(user.number, entry)
        try:
            entry.wamid = await user.tap(choice, on=on)
        except BaseException as exc:
            entry.failed = str(exc) or type(exc).__name__
            raise
        finally:
            self._changed(user.number)
        return entry

    async def _send_voice(self, user: PhoneUser, data: bytes | None) -> PhoneMessage:
        entry = PhoneMessage(
            "me",
            "audio",
            None,
            datetime.now(UTC),
            extra="voice note",
            mime_type="audio/ogg; codecs=opus",
            size=len(data) if data is not None else None,
        )
        self._add(user.number, entry)
        try:
            entry.wamid = await user.send_voice(data)
        except BaseException as exc:
            entry.failed = str(exc) or type(exc).__name__
            raise
        finally:
            self._changed(user.number)
        return entry

    # -- widget callbacks (the kernel calls these on its loop thread) ------------------
    def _on_voice_click(self, _button: Any = None) -> None:
        self._spawn(self._send_voice(self.user, None))

    def _on_choice_click(self, button: Any) -> None:
        choice_id, wamid = button._wa_choice
        self._spawn(self._tap(self.user, choice_id, wamid))

    def _on_send_click(self, _button: Any = None) -> None:
        text = str(self.text.value).strip()
        if not text:
            return
        self.text.value = ""
        self._spawn(self._send_text(self.user, text))

    def _on_add_click(self, _button: Any = None) -> None:
        number = str(self.new_number.value).strip()
        if not self._digits(number):
            self._set_status("Enter the new user's phone number (digits).", error=True)
            return
        self.select(number, str(self.new_name.value).strip() or None)
        self.new_number.value = ""
        self.new_name.value = ""
        self._set_status("")

    def _on_contact(self, change: dict[str, Any]) -> None:
        if self._updating or not change["new"] or change["new"] == self.number:
            return
        self.user = self.sim.user(change["new"])
        self._render()

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        caption = str(self.text.value).strip() or None
        self.text.value = ""
        for item in files:
            data = bytes(item["content"])
            mime = item.get("type") or mimetypes.guess_type(item.get("name") or "")[0]
            mime = mime or "application/octet-stream"
            kind = "image" if mime.startswith("image/") else "document"
            self._spawn(
                self._send_media(
                    self.user, kind, data, mime, caption=caption, filename=item.get("name")
                )
            )
            caption = None
        self.upload.value = ()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        def start(loop: asyncio.AbstractEventLoop) -> None:
            task = loop.create_task(coro, name="wa_agent-phone-send")
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

        if not on_loop(self._loop, start):
            coro.close()
            self._set_status("No running event loop: use `await phone.send(...)`.", error=True)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning("phone: sending failed: %s", exc)
            self._set_status(f"Sending failed: {exc}", error=True)

    def _on_bot_message(self, message: _Outbound) -> None:
        """Emulator subscriber: a message the bot sent (to any number)."""
        content = message.content
        media_id = content.get("id") if isinstance(content.get("id"), str) else None
        stored = self.sim.emulator.media.get(media_id) if media_id else None
        text: str | None = None
        caption: str | None = None
        extra = _interactive_extra(message)
        choices: tuple[tuple[str, str, str | None], ...] = ()
        list_button: str | None = None
        if message.type in ("text", "interactive"):
            text = message.text
            choices, list_button = _choices(message)
            link = _link(message)
            if link is not None:
                extra = f"🔗 {link[0]}: {link[1]}"
        elif message.type == "reaction":
            target = self._find(message.wa_id, content.get("message_id"))
            if target is not None:  # shown on the user's message, as WhatsApp does
                target.reaction = content.get("emoji") or None
                self._changed(message.wa_id)
                return
            text = f"reacted {content.get('emoji') or '(removed)'}"
        elif message.type == "location":
            place = " — ".join(str(content[k]) for k in ("name", "address") if content.get(k))
            text = (
                f"📍 {place + chr(10) if place else ''}"
                f"{content.get('latitude')}, {content.get('longitude')}"
            )
        elif message.type == "contacts":
            text = "\n".join(
                _card_line(c) for c in message.body.get("contacts") or [] if isinstance(c, dict)
            )
        elif isinstance(content.get("caption"), str):
            caption = content["caption"]
        if message.type == "audio" and content.get("voice") is True:
            extra = "voice note"
        entry = PhoneMessage(
            "bot",
            message.type,
            text,
            datetime.fromtimestamp(message.time, UTC),
            wamid=message.wamid,
            caption=caption,
            mime_type=stored.mime_type if stored else None,
            size=len(stored.data) if stored else None,
            filename=content.get("filename") if isinstance(content.get("filename"), str) else None,
            extra=extra,
            reply_to=message.reply_to,
            data=self._inline(stored.mime_type, stored.data) if stored else None,
            choices=choices,
            list_button=list_button,
        )
        self._add(message.wa_id, entry)
        self._changed(message.wa_id)

    # -- rendering -----------------------------------------------------------------------
    @staticmethod
    def _digits(number: str) -> str:
        number = normalize_number(number)
        return number if number.isdigit() else ""

    def _find(self, number: str, wamid: Any) -> PhoneMessage | None:
        if not isinstance(wamid, str):
            return None
        return next((m for m in self._messages.get(number, ()) if m.wamid == wamid), None)

    def _inline(self, mime_type: str, data: bytes) -> bytes | None:
        base = mime_type.split(";")[0].strip().lower()
        return data if base in INLINE_IMAGE_TYPES and len(data) <= INLINE_IMAGE_MAX else None

    def _add(self, number: str, entry: PhoneMessage) -> None:
        box = self._messages.get(number)
        if box is None:
            box = self._messages[number] = deque(maxlen=self.max_messages)
        box.append(entry)

    def _changed(self, number: str) -> None:
        if number not in self.sim.users:
            self.sim.user(number)
        if not any(number == value for _label, value in self.contact.options):
            self._refresh_contacts()
        if number == self.number:
            self._render()

    def _sync_reads(self) -> None:
        reads = self.sim.emulator.reads
        for receipt in reads[self._reads_seen :]:
            self._read.add(receipt.message_id)
        self._reads_seen = len(reads)

    def _sync_transcripts(self) -> None:
        """Attach the transcripts the bot made of the user's voice notes (a simulator
        without ``transcripts`` has none)."""
        known: Mapping[str, str] = getattr(self.sim, "transcripts", None) or {}
        if not known:
            return
        for box in self._messages.values():
            for entry in box:
                heard = known.get(entry.wamid) if entry.wamid is not None else None
                if heard is not None and entry.sender == "me":
                    entry.transcript = heard

    def _status(self, entry: PhoneMessage) -> str | None:
        if entry.sender != "me":
            return None
        if entry.failed is not None:
            return "failed"
        if entry.wamid is None:
            return "sending"
        return "read" if entry.wamid in self._read else "sent"

    def _refresh_contacts(self) -> None:
        numbers = list(dict.fromkeys([*self.sim.users, *self._messages]))
        options = []
        for number in numbers:
            user = self.sim.users.get(number)
            label = f"{user.name} (+{number})" if user is not None else f"+{number}"
            options.append((label, number))
        self._updating = True
        try:
            if list(self.contact.options) != options:
                self.contact.options = options
            if self.contact.value != self.number:
                self.contact.value = self.number
        finally:
            self._updating = False

    def render(self) -> str:
        """HTML of the phone screen for the shown user (every string escaped)."""
        self._sync_reads()
        self._sync_transcripts()
        user = self.user
        head = (
            f'<span class="wa-phone-name">{_e(user.name)}</span>'
            f'<span class="wa-phone-number">+{_e(user.number)} → bot '
            f"+{_e(self.sim.display_phone_number)}</span>"
        )
        bubbles = [_bubble(m, self._status(m)) for m in self._messages.get(user.number, ())]
        if not bubbles:
            bubbles = ['<div class="wa-phone-empty">No messages yet: say hi!</div>']
        return (
            f'{_CSS}<div class="wa-phone" data-number="{_e(user.number)}">'
            f'<div class="wa-phone-head">{head}</div>'
            f'<div class="wa-phone-scroll"><div class="wa-phone-msgs">{"".join(bubbles)}'
            "</div></div></div>"
        )  # column-reverse: scrolled to the newest message

    def _render(self) -> None:
        if self._closed:
            return
        value = self.render()
        if self.screen.value != value:
            self.screen.value = value
        self._render_choices()

    def offered(self) -> list[str]:
        """Titles of the choices the tap buttons show now: those of the bot's last message
        to the shown user, if it offered any."""
        last = next(
            (m for m in reversed(self._messages.get(self.number, ())) if m.sender == "bot"), None
        )
        return [t for _i, t, _d in last.choices] if last is not None else []

    def _render_choices(self) -> None:
        widgets = _import_ipywidgets()
        last = next(
            (m for m in reversed(self._messages.get(self.number, ())) if m.sender == "bot"), None
        )
        key = f"{self.number}:{last.wamid}" if last is not None and last.choices else None
        if key == self._choices_key:
            return
        self._choices_key = key
        old = list(self.choices.children)
        children: list[Any] = []
        if last is not None and last.choices:
            if last.list_button:
                label = widgets.HTML(
                    f'<span class="wa-phone-list">☰ {_e(last.list_button)}</span>'
                )
                children.append(label)
            for choice_id, title, description in last.choices:
                button = widgets.Button(
                    description=title,
                    tooltip=description or title,
                    layout=widgets.Layout(width="auto"),
                )
                button._wa_choice = (choice_id, last.wamid)
                button.add_class("wa-phone-choice")
                button.on_click(self._on_choice_click)
                children.append(button)
        self.choices.children = tuple(children)
        for child in old:
            child.close()

    def _set_status(self, text: str, *, error: bool = False) -> None:
        if self._closed:
            return
        style = ' style="color:#d93025"' if error else ""
        self.status.value = f"<span{style}>{_e(text)}</span>" if text else ""

    # -- lifecycle / display -----------------------------------------------------------
    def close(self) -> None:
        """Stop listening to the simulator and close the ipywidgets models."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for child in (
            *self.choices.children,
            self.contact,
            self.new_number,
            self.new_name,
            self.add_button,
            self.screen,
            self.choices,
            self.text,
            self.send_button,
            self.upload,
            self.voice_button,
            self.status,
        ):
            child.close()
        for row in self.box.children:
            if row is not self.screen and hasattr(row, "children"):
                row.close()
        self.box.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<PhoneWidget user={self.user!r} messages={len(self.messages())}>"
