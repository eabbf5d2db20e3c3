"""A local WhatsApp: the Cloud API emulator, a bot wired to it, and simulated users.

::

    async with Simulator(my_agent, mode="chat") as sim:
        alice = sim.user("15551230001", name="Alice")
        reply = await alice.ask("hello")
        assert "hello" in reply.text

The simulator starts a :class:`~wa_agent.testing.CloudAPIEmulator` and the bot (an agent, a
:class:`~wa_agent.WhatsAppInterface` or an :class:`~wa_agent.InterfaceManager`) on loopback
ports, points the bot's Sender at the emulator, and posts signed webhooks shaped exactly
like Meta's. Replies the emulator accepts are routed to the simulated user they were sent
to; ``sent``/``delivered``/``read`` status webhooks are posted back to the bot like Meta
would. Meta's awkward behaviours can be injected: duplicate deliveries
(:meth:`Simulator.deliver` with ``times=``), batches, out-of-order statuses
(``statuses="shuffle"``) and Cloud API faults (``sim.emulator.fail_next(...)``).

A user can write in a WhatsApp group (``user.send_text("hi all", group_id=...)``); what the
bot sends into the group is received by :meth:`Simulator.group`. When the bot transcribes a
voice note (``WhatsAppInterface(transcriber=...)``), the transcript is in
:attr:`Simulator.transcripts` under the voice note's wamid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import httpx

from ..agents import Choice, Contact, LinkButton
from ..events import Location
from ..hosting.observers import QuietListener
from ..interface import InterfaceMode, WhatsAppInterface
from ..manager import InterfaceManager
from ..numbers import normalize_number
from ..sender import RetryPolicy, Sender
from ..server import BackgroundServer
from ..signature import SignatureVerifier
from . import webhooks
from .audio import silent_voice_note
from .emulator import CloudAPIEmulator, SentMessage
from .operator import SimulatedOperator

if TYPE_CHECKING:
    from ..phone import PhoneWidget

__all__ = ["Reply", "SimulatedUser", "Simulator"]

logger = logging.getLogger(__name__)

DEFAULT_PHONE_NUMBER_ID = "100000000000001"
DEFAULT_DISPLAY_NUMBER = "15550000000"


@dataclass(frozen=True, slots=True)
class Reply:
    """One message the bot sent to a simulated user.

    ``text`` is the text body, a media caption or an interactive message's body. What else
    the bot sent is read into typed fields: ``buttons`` (the choices of reply buttons or of a
    list message, as :class:`~wa_agent.Choice`; ``list_button`` labels the list),
    ``link_button`` (a CTA URL button), ``reaction`` (and ``reacted_to``, the wamid it is
    on), ``location``, ``contacts`` (as :class:`~wa_agent.Contact`) and ``voice`` (audio sent
    as a voice note). ``raw`` is the whole request body.
    """

    type: str
    text: str | None
    wamid: str
    reply_to: str | None
    media_id: str | None
    mime_type: str | None
    filename: str | None
    data: bytes | None
    raw: dict[str, Any]
    interactive: str | None = None  # "button", "list", "cta_url", ...
    buttons: tuple[Choice, ...] = ()
    list_button: str | None = None
    link_button: LinkButton | None = None
    reaction: str | None = None
    reacted_to: str | None = None
    location: Location | None = None
    contacts: tuple[Contact, ...] = ()
    voice: bool = False

    @property
    def size(self) -> int | None:
        """Size in bytes of the media sent, if any."""
        return len(self.data) if self.data is not None else None

    def choice(self, title_or_id: str) -> Choice | None:
        """The choice of this reply titled ``title_or_id`` (or with that id), if any."""
        for choice in self.buttons:
            if choice.title == title_or_id:
                return choice
        return next((c for c in self.buttons if c.id == title_or_id), None)


def _rich_fields(message: SentMessage) -> dict[str, Any]:
    """The typed fields of :class:`Reply` read from the body the bot sent."""
    content = message.content
    fields: dict[str, Any] = {}
    if message.type == "interactive":
        fields["interactive"] = content.get("type")
        raw_action = content.get("action")
        action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
        choices: list[Choice] = []
        for button in action.get("buttons") or []:
            reply = button.get("reply") if isinstance(button, dict) else None
            if isinstance(reply, dict):
                choices.append(Choice(str(reply.get("id")), str(reply.get("title"))))
        for section in action.get("sections") or []:
            for row in (section.get("rows") or []) if isinstance(section, dict) else []:
                if isinstance(row, dict):
                    description = row.get("description")
                    choices.append(
                        Choice(
                            str(row.get("id")),
                            str(row.get("title")),
                            description if isinstance(description, str) else None,
                        )
                    )
        fields["buttons"] = tuple(choices)
        if content.get("type") == "list" and isinstance(action.get("button"), str):
            fields["list_button"] = action["button"]
        parameters = action.get("parameters")
        if content.get("type") == "cta_url" and isinstance(parameters, dict):
            fields["link_button"] = LinkButton(
                str(parameters.get("display_text")), str(parameters.get("url"))
            )
    elif message.type == "reaction":
        fields["reaction"] = content.get("emoji") or None
        fields["reacted_to"] = content.get("message_id")
    elif message.type == "location":
        fields["location"] = Location(
            **{k: content[k] for k in ("latitude", "longitude", "name", "address") if k in content}
        )
    elif message.type == "contacts":
        cards = message.body.get("contacts")
        fields["contacts"] = tuple(
            _contact_from_card(c) for c in cards or [] if isinstance(c, dict)
        )
    elif message.type == "audio":
        fields["voice"] = content.get("voice") is True
    return fields


def _contact_from_card(card: dict[str, Any]) -> Contact:
    raw_name, raw_org = card.get("name"), card.get("org")
    name: dict[str, Any] = raw_name if isinstance(raw_name, dict) else {}
    org: dict[str, Any] = raw_org if isinstance(raw_org, dict) else {}

    def values(key: str, inner: str) -> tuple[str, ...]:
        items = card.get(key)
        return (
            tuple(str(i[inner]) for i in items if isinstance(i, dict) and i.get(inner))
            if isinstance(items, list)
            else ()
        )

    return Contact(
        str(name.get("formatted_name") or "contact"),
        values("phones", "phone"),
        values("emails", "email"),
        org.get("company"),
        values("urls", "url"),
    )


class SimulatedUser:
    """A WhatsApp user talking to the bot. Created with :meth:`Simulator.user`."""

    def __init__(self, sim: Simulator, number: str, name: str | None) -> None:
        self.sim = sim
        self.number = number
        self.name = name or f"User {number[-4:]}"
        self.replies: list[Reply] = []
        self._queue: asyncio.Queue[Reply] = asyncio.Queue()
        self.sent: list[str] = []

    def __repr__(self) -> str:
        return f"SimulatedUser({self.number!r}, name={self.name!r})"

    # -- sending -----------------------------------------------------------------------
    async def _send(self, item: dict[str, Any]) -> str:
        self.sent.append(item["id"])
        await self.sim.deliver(
            webhooks.envelope(
                messages=[item],
                profiles={self.number: self.name},
                phone_number_id=self.sim.number_id_of(self.sim.interface),
                display_phone_number=self.sim.display_phone_number,
            )
        )
        return str(item["id"])

    async def send_text(
        self, text: str, *, reply_to: str | None = None, group_id: str | None = None
    ) -> str:
        """Send a text message; returns its wamid. With ``group_id`` the message is written
        in that WhatsApp group (the bot's answers go to :meth:`Simulator.group`)."""
        context = {"from": self.sim.display_phone_number, "id": reply_to} if reply_to else None
        return await self._send(
            webhooks.text_message(self.number, text, context=context, group_id=group_id)
        )

    async def send_media(
        self,
        kind: str,
        data: bytes | Path,
        mime_type: str,
        *,
        caption: str | None = None,
        filename: str | None = None,
        voice: bool = False,
    ) -> str:
        """Send image/video/audio/document/sticker bytes (stored in the emulator first)."""
        if isinstance(data, Path):
            filename = filename or data.name
            data = await asyncio.to_thread(data.read_bytes)
        media_id = self.sim.emulator.add_media(data, mime_type, filename)
        stored = self.sim.emulator.media[media_id]
        return await self._send(
            webhooks.media_message(
                self.number,
                kind,
                media_id,
                mime_type,
                sha256=stored.sha256,
                caption=caption,
                filename=filename,
                voice=voice,
            )
        )

    async def send_image(
        self, data: bytes | Path, mime_type: str = "image/jpeg", *, caption: str | None = None
    ) -> str:
        """Send a photo."""
        return await self.send_media("image", data, mime_type, caption=caption)

    async def send_document(
        self,
        data: bytes | Path,
        filename: str | None = None,
        mime_type: str = "application/pdf",
        *,
        caption: str | None = None,
    ) -> str:
        """Send a document with a file name."""
        return await self.send_media(
            "document", data, mime_type, caption=caption, filename=filename
        )

    async def send_voice(
        self, data: bytes | None = None, mime_type: str = "audio/ogg; codecs=opus"
    ) -> str:
        """Send a recorded voice note (OGG/Opus as WhatsApp records them; by default a
        second of silence, :func:`~wa_agent.testing.silent_voice_note`)."""
        if data is None:
            data = silent_voice_note()
        return await self.send_media("audio", data, mime_type, voice=True)

    async def send_location(
        self,
        latitude: float,
        longitude: float,
        *,
        name: str | None = None,
        address: str | None = None,
    ) -> str:
        """Share a location (or a named place)."""
        return await self._send(
            webhooks.location_message(self.number, latitude, longitude, name=name, address=address)
        )

    async def tap_button(self, button_id: str, title: str, *, on: str | None = None) -> str:
        """Tap a reply button of an interactive message (``on``: its wamid)."""
        return await self._send(
            webhooks.interactive_reply_message(
                self.number,
                button_id,
                title,
                context_id=on,
                business_number=self.sim.display_phone_number,
            )
        )

    async def choose_row(
        self, row_id: str, title: str, *, description: str | None = None, on: str | None = None
    ) -> str:
        """Choose a row of a list message."""
        return await self._send(
            webhooks.interactive_reply_message(
                self.number,
                row_id,
                title,
                kind="list_reply",
                description=description,
                context_id=on,
                business_number=self.sim.display_phone_number,
            )
        )

    async def tap(self, choice: str, *, on: Reply | str | None = None) -> str:
        """Tap a choice the bot offered, by its title (or id), as WhatsApp posts it: a
        ``button_reply`` for a reply button, a ``list_reply`` for a list row, quoting the
        message it belongs to. ``on`` is that message (a :class:`Reply` or its wamid);
        by default the latest reply offering ``choice``. Returns the tap's wamid; raises
        :class:`LookupError` naming the choices on offer when there is no such choice."""
        candidates = [r for r in reversed(self.replies) if r.buttons]
        if on is not None:
            wamid = on.wamid if isinstance(on, Reply) else on
            candidates = [r for r in candidates if r.wamid == wamid]
        for reply in candidates:
            found = reply.choice(choice)
            if found is None:
                continue
            if reply.interactive == "list":
                return await self.choose_row(
                    found.id, found.title, description=found.description, on=reply.wamid
                )
            return await self.tap_button(found.id, found.title, on=reply.wamid)
        offered = [c.title for c in candidates[0].buttons] if candidates else []
        raise LookupError(
            f"no choice {choice!r} in the bot's replies to {self.number}"
            + (f"; the latest offered {offered}" if offered else " (the bot offered no choices)")
        )

    async def react(self, message_id: str, emoji: str | None) -> str:
        """React to a message (``None`` removes the reaction)."""
        return await self._send(webhooks.reaction_message(self.number, message_id, emoji))

    async def share_contact(self, name: str, phones: Sequence[str]) -> str:
        """Share a contact card."""
        return await self._send(webhooks.contacts_message(self.number, name, phones))

    # -- receiving ---------------------------------------------------------------------
    def _received(self, reply: Reply) -> None:
        self.replies.append(reply)
        self._queue.put_nowait(reply)

    async def next_reply(self, timeout: float = 10.0) -> Reply:
        """Wait for the next message the bot sends this user."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply to {self.number} within {timeout} s") from None

    def take_replies(self) -> list[Reply]:
        """Replies received but not yet taken with :meth:`next_reply`/this method."""
        out: list[Reply] = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out

    async def ask(self, text: str, timeout: float = 10.0) -> Reply:
        """Send ``text`` and return the first reply to it."""
        self.take_replies()
        await self.send_text(text)
        return await self.next_reply(timeout)


class _TranscriptListener(QuietListener):
    """Collects the bot's transcripts by voice note wamid."""

    def __init__(self, into: dict[str, str]) -> None:
        self.into = into

    def transcript(self, wamid: str, text: str) -> None:
        self.into[wamid] = text


class Simulator:
    """Runs a bot against a local Cloud API emulator (see the module docstring).

    :param bot: an agent (wrapped in a new :class:`WhatsAppInterface`), an interface, or an
        :class:`InterfaceManager`. An interface without a Sender gets one pointed at the
        emulator; its app secret and verify token are set to the simulator's when unset.
    :param mode: for an agent: ``"task"`` or ``"chat"``.
    :param statuses: post ``sent``/``delivered``/``read`` webhooks for every reply
        (``"shuffle"``: in random order, as Meta may; ``False``: none).
    :param retry: the Sender's retry policy (default: quick retries, for tests).
    :param interface_options: passed to :class:`WhatsAppInterface` when ``bot`` is an agent.
    """

    def __init__(
        self,
        bot: Any,
        *,
        mode: InterfaceMode | str = InterfaceMode.TASK,
        phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
        display_phone_number: str = DEFAULT_DISPLAY_NUMBER,
        app_secret: str = "simulator-app-secret",
        verify_token: str = "simulator-verify-token",
        access_token: str = "simulator-access-token",
        statuses: bool | Literal["shuffle"] = True,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
        **interface_options: Any,
    ) -> None:
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.access_token = access_token
        self.statuses = statuses
        self.retry = retry or RetryPolicy(scale=0.01)
        self._rng = random.Random(seed)
        if isinstance(bot, InterfaceManager):
            self.manager = bot
        elif isinstance(bot, WhatsAppInterface):
            self.manager = InterfaceManager([bot])
        else:
            interface_options.setdefault("verify_token", verify_token)
            interface_options.setdefault("app_secret", app_secret)
            self.manager = InterfaceManager(
                [
                    WhatsAppInterface(
                        bot, mode=mode, phone_number_id=phone_number_id, **interface_options
                    )
                ]
            )
        self.interface = self.manager.interfaces[0]
        for interface in self.manager.interfaces:
            interface.use_defaults(app_secret=app_secret, verify_token=verify_token)
        self.emulator = CloudAPIEmulator(access_token=access_token)
        self.users: dict[str, SimulatedUser] = {}
        #: Transcripts of the voice notes users sent, by the voice note's wamid (filled when
        #: the bot's interface has a ``transcriber``).
        self.transcripts: dict[str, str] = {}
        self._listener = _TranscriptListener(self.transcripts)
        self._operator: SimulatedOperator | None = None
        self._emulator_server: BackgroundServer | None = None
        self._client: httpx.AsyncClient | None = None
        self._unsubscribe: Any = None
        self._status_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.bot_url: str | None = None

    @property
    def operator(self) -> SimulatedOperator:
        """The operator's side of handoffs on the (first) interface: take over, write, hand
        back (see :class:`~wa_agent.testing.operator.SimulatedOperator`); its ``events``
        are recorded from the first use of this property on."""
        if self._operator is None:
            self._operator = SimulatedOperator(self.interface)
        return self._operator

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the emulator and the bot on free loopback ports."""
        self._stopping = False
        self._emulator_server = BackgroundServer(self.emulator)
        await self._emulator_server.start()
        for interface in self.manager.interfaces:
            if interface.sender is None:
                interface.use_sender(
                    Sender(
                        self.access_token,
                        self.number_id_of(interface),
                        base_url=self._emulator_server.url,
                        retry=self.retry,
                    )
                )
        self._unsubscribe = self.emulator.subscribe(self._on_outbound)
        for interface in self.manager.interfaces:
            # Only where there is something to hear: any listener turns off the interface's
            # webhook fast path (it hands listeners the parsed message).
            if (
                interface.settings.transcriber is not None
                and self._listener not in interface.listeners
            ):
                interface.listeners.append(self._listener)
        self._client = httpx.AsyncClient(timeout=30.0)
        try:
            self.bot_url = await self.manager.start("127.0.0.1", 0)
        except BaseException:
            await self._shutdown_emulator()
            raise

    async def stop(self) -> None:
        """Stop the bot (finishing in-flight replies) and the emulator."""
        # Status webhooks still being posted race the bot's shutdown (a connection the
        # bot's server accepts while it closes is leaked by asyncio): let those finish
        # (bounded) and post no new ones.
        self._stopping = True
        if self._status_tasks:
            await asyncio.wait(list(self._status_tasks), timeout=5.0)
        try:
            await self.manager.stop()
        finally:
            for task in list(self._status_tasks):
                task.cancel()
            await asyncio.gather(*self._status_tasks, return_exceptions=True)
            await self._shutdown_emulator()

    async def _shutdown_emulator(self) -> None:
        for interface in self.manager.interfaces:
            if self._listener in interface.listeners:
                interface.listeners.remove(self._listener)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._emulator_server is not None:
            await self._emulator_server.stop()
            self._emulator_server = None
        await self.emulator.aclose()

    # -- users and webhooks ----------------------------------------------------------------
    def user(self, number: str = "15551230001", name: str | None = None) -> SimulatedUser:
        """The simulated user with this number (created on first use)."""
        number = normalize_number(number)
        if number not in self.users:
            self.users[number] = SimulatedUser(self, number, name)
        elif name:
            self.users[number].name = name
        return self.users[number]

    def group(self, group_id: str) -> SimulatedUser:
        """The WhatsApp group ``group_id`` as the bot's recipient: its ``replies`` and
        :meth:`~SimulatedUser.next_reply` are the messages the bot sent into the group.
        Members write in it with ``user.send_text(text, group_id=group_id)``."""
        return self.user(group_id, name=f"Group {group_id[:8]}")

    def phone(
        self, number: str = "15551230001", name: str | None = "Alice", *, max_messages: int = 200
    ) -> PhoneWidget:
        """A chat-box widget acting as ``number``'s phone, for notebooks (needs the
        ``notebook`` extra): see :class:`wa_agent.phone.PhoneWidget`."""
        from ..phone import PhoneWidget

        return PhoneWidget(self, number=number, name=name, max_messages=max_messages)

    def number_id_of(self, interface: WhatsAppInterface) -> str:
        """The ``phone_number_id`` the simulator's webhooks carry for ``interface``: the
        interface's own (given, or from ``WHATSAPP_PHONE_NUMBER_ID``), else its Sender's,
        else the simulator's ``phone_number_id``. An interface ignores webhooks for another
        number, so users always write to the number the interface serves."""
        if interface.phone_number_id:
            return str(interface.phone_number_id)
        if interface.sender is not None:
            return str(interface.sender.phone_number_id)
        return self.phone_number_id

    @property
    def webhook_url(self) -> str:
        """The bot's webhook URL (first interface)."""
        return self.manager.webhook_url(self.interface)

    def sign(self, body: bytes, interface: WhatsAppInterface | None = None) -> str:
        """The ``X-Hub-Signature-256`` Meta would send for ``body``."""
        secret = (interface or self.interface).app_secret
        if secret is None:
            raise RuntimeError("the interface has no app secret")
        return SignatureVerifier(secret).sign(body)

    async def deliver(
        self,
        payload: dict[str, Any] | bytes,
        *,
        times: int = 1,
        concurrently: bool = True,
        signed: bool = True,
        interface: WhatsAppInterface | None = None,
    ) -> list[httpx.Response]:
        """POST a webhook body to the bot like Meta: signed, and ``times`` times (Meta's
        at-least-once redeliveries), concurrently by default."""
        if self._client is None:
            raise RuntimeError("the simulator is not running: use `async with Simulator(...)`")
        body = payload if isinstance(payload, bytes) else webhooks.encode(payload)
        target = interface or self.interface
        headers = {"content-type": "application/json"}
        if signed:
            headers["x-hub-signature-256"] = self.sign(body, target)
        url = self.manager.webhook_url(target)
        client = self._client

        async def post() -> httpx.Response:
            return await client.post(url, content=body, headers=headers)

        if concurrently:
            responses = list(await asyncio.gather(*(post() for _ in range(times))))
        else:
            responses = [await post() for _ in range(times)]
        for response in responses:
            if response.status_code != 200:
                logger.warning(
                    "bot answered webhook with %s: %s", response.status_code, response.text[:200]
                )
        return responses

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until the bot has answered everything it accepted and the emulator has
        routed every reply (and status webhook) — handy between steps of a test."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for interface in self.manager.interfaces:
                await interface.drain(max(0.1, deadline - loop.time()))
            await self.emulator.drain()
            if self._status_tasks:
                await asyncio.gather(*list(self._status_tasks), return_exceptions=True)
            busy = any(i.busy for i in self.manager.interfaces)
            if not busy:
                return
            if loop.time() > deadline:
                raise TimeoutError("the bot is still busy")

    # -- outbound routing ------------------------------------------------------------------
    async def _on_outbound(self, message: SentMessage) -> None:
        content = message.content
        media_id = content.get("id") if isinstance(content.get("id"), str) else None
        data = mime = None
        if media_id and media_id in self.emulator.media:
            stored = self.emulator.media[media_id]
            data, mime = stored.data, stored.mime_type
        reply = Reply(
            type=message.type,
            text=message.text,
            wamid=message.wamid,
            reply_to=message.reply_to,
            media_id=media_id,
            mime_type=mime,
            filename=content.get("filename"),
            data=data,
            raw=message.body,
            **_rich_fields(message),
        )
        user = self.users.get(message.wa_id) or self.user(message.wa_id)
        user._received(reply)
        if self.statuses and not self._stopping:
            task = asyncio.ensure_future(self._post_statuses(message))
            self._status_tasks.add(task)
            task.add_done_callback(self._status_tasks.discard)

    async def _post_statuses(self, message: SentMessage) -> None:
        order = ["sent", "delivered", "read"]
        if self.statuses == "shuffle":
            self._rng.shuffle(order)
        interface = next(
            (
                i
                for i in self.manager.interfaces
                if (i.sender is not None and i.sender.phone_number_id == message.phone_number_id)
            ),
            self.interface,
        )
        for status in order:
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                await self.deliver(
                    webhooks.envelope(
                        statuses=[webhooks.status_item(message.wamid, status, message.wa_id)],
                        phone_number_id=message.phone_number_id,
                        display_phone_number=self.display_phone_number,
                    ),
                    interface=interface,
                )
