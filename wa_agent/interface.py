"""``WhatsAppInterface``: one agent served on one WhatsApp number.

The life of an inbound message:

1. ``POST /webhook`` (see :mod:`wa_agent.asgi`) verifies and parses the body; the
   interface records every new message in the store's durable inbox (deduplicated by
   wamid) and only then answers ``200 {"status": "processing"}``.
2. A per-sender drain task takes the sender's inbox items in arrival order, one at a time;
   different senders run concurrently under ``max_concurrency``. Across processes sharing a
   store, a per-sender lease keeps one drainer per sender.
3. Each item: mark read + typing indicator, download media, call the agent (with the
   sender's own history in CHAT mode), convert Markdown, split, send; the reply is saved as
   progress before the first of several parts is sent, so a restart resumes rather than
   asks the agent again; the item leaves the inbox (and the turns enter the history) in one
   step once the Cloud API accepted the reply.
4. Leftovers from a crash are picked up at start-up and by a periodic sweep.

Replies are built only from the item being processed, never from shared agent state, so
one user's answer cannot reach another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from pydantic_core import from_json

from ._ackgate import AckGate
from .agents import (
    Agent,
    AgentReply,
    AgentRequest,
    Attachment,
    Media,
    Turn,
    agent_attribute,
    as_agent,
)
from .asgi import DEFAULT_MAX_BODY, Overloaded, WebhookApp
from .events import MEDIA_TYPES, STATUS_RANK, Event, Message, StatusUpdate
from .exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidPayload,
    MediaError,
    StoreError,
    TransportError,
    WAAgentError,
    WhatsAppAPIError,
)
from .parser import MessageParser, _too_deep
from .secret import Secret
from .stores.base import InboxItem, SessionStore, make_item

if TYPE_CHECKING:
    from .heartbeat import HeartbeatConfig, HeartbeatScheduler, StoreLease
    from .sender import Sender

__all__ = [
    "NOT_ALLOWED_MESSAGE",
    "ConversationListener",
    "InterfaceMode",
    "WhatsAppInterface",
    "normalize_number",
]

logger = logging.getLogger(__name__)

NOT_ALLOWED_MESSAGE = "This operation not allowed"
DEFAULT_APOLOGY = "Sorry, something went wrong while answering. Please try again in a moment."
DEFAULT_RESET_MESSAGE = "Conversation reset. Let's start over!"
#: Message types answered by default; others (reaction, edit, revoke, system, unsupported,
#: unknown future types) reach the agent only when listed in ``answer_types``.
DEFAULT_ANSWER_TYPES = frozenset(
    {"text", "image", "video", "audio", "document", "sticker", "location", "contacts",
     "interactive", "button", "order"}
)
_TYPING_REFRESH = 20.0  # Meta hides the typing indicator after 25 s
_TYPING_TICK = 1.0  # how often the typing keeper looks for due renewals
_MAX_ATTEMPTS = 8  # failed sends of one message before it is given up (logged)
_MAX_BACKOFF = 300.0  # seconds between retries of a message whose send keeps failing
_MESSAGE_CACHE = 2000  # parsed messages kept from accept() to processing (per interface)


class InterfaceMode(StrEnum):
    """TASK: each message stands alone. CHAT: per-sender conversation history."""

    TASK = "task"
    CHAT = "chat"


class ConversationListener(Protocol):
    """What the live widget (or any observer) is told. Every method must be cheap and
    must not raise; they run on the event loop."""

    def inbound(self, message: Message) -> object: ...
    def outbound(self, to: str, text: str, *, wamid: str | None = None, kind: str = "text",
                 media_info: dict[str, Any] | None = None) -> object: ...
    def status(self, update: StatusUpdate) -> object: ...
    def thinking(self, contact: str, on: bool) -> object: ...
    def error(self, contact: str, text: str) -> object: ...


def normalize_number(number: str | int) -> str:
    """International digits only: ``"+49 151-234 567"`` → ``"49151234567"``.

    Business-scoped user ids (``"US.1349…"``) are returned unchanged but stripped.
    """
    text = str(number).strip()
    digits = re.sub(r"[\s\-().+]", "", text)
    if digits.startswith("00") and digits.isdigit():
        digits = digits[2:]
    return digits if digits.isdigit() else text


def _env(value: str | Secret | None, var: str) -> str | None:
    if isinstance(value, Secret):
        return value.reveal() or None
    if value:
        return value
    return os.environ.get(var) or None


def _mask(number: str) -> str:
    return number[:3] + "…" + number[-2:] if len(number) > 6 else "…"


class _Stats:
    __slots__ = ("agent_errors", "deferred", "duplicates", "ignored", "overloaded", "processed",
                 "received", "refused", "send_failures", "statuses")

    def __init__(self) -> None:
        self.received = self.processed = self.duplicates = self.send_failures = 0
        self.refused = self.ignored = self.agent_errors = self.statuses = 0
        self.deferred = 0  # senders left in the inbox for the sweeper (queue full)
        self.overloaded = 0  # webhooks answered 503: a backlog bound was reached


class _TypingRefresh:
    """One running agent's typing indicator, renewed by the interface's one typing keeper
    (no timer or task per message: thousands of agents in flight stay cheap for the GC)."""

    __slots__ = ("_iface", "due", "message_id", "task")

    def __init__(self, iface: WhatsAppInterface, message_id: str) -> None:
        self._iface = iface
        self.message_id = message_id
        self.task: asyncio.Task[Any] | None = None
        self.due = time.monotonic() + _TYPING_REFRESH
        iface._typing.add(self)
        if iface._typing_keeper is None:
            iface._typing_keeper = iface._spawn(iface._keep_typing_loop(), "typing-keeper")

    def cancel(self) -> None:
        self._iface._typing.discard(self)
        if self.task is not None:
            self.task.cancel()


class _Held:
    """A sender lease this process holds (renewed by the interface's one lease keeper)."""

    __slots__ = ("lost", "since")

    def __init__(self) -> None:
        self.lost = False
        self.since = time.monotonic()


class _Retry(Exception):
    """Processing of an item must be retried later (transient failure), after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class WhatsAppInterface:
    """Serves ``agent`` on one WhatsApp Business number.

    :param agent: anything :func:`~wa_agent.as_agent` accepts (function, async function,
        framework agent, :class:`~wa_agent.LLMAgent`).
    :param verify_token: the string typed in Meta's dashboard; default
        ``WHATSAPP_VERIFY_TOKEN``.
    :param app_secret: the Meta app secret used to verify signatures; default
        ``WHATSAPP_APP_SECRET``. Without one, unsigned POSTs are accepted (one loud warning).
    :param name: the interface's name (health, logs, store keys).
    :param mode: ``InterfaceMode.TASK``/``"task"`` or ``InterfaceMode.CHAT``/``"chat"``.
    :param reset_command: in CHAT mode, a message equal to it clears the sender's history;
        ``None`` disables it.
    :param storage: a :class:`~wa_agent.SessionStore`, a path (SQLite file, durable), or
        ``None`` (in memory: fine for notebooks, lost on restart).
    :param allowed_numbers: only these senders are answered (``+``, spaces, dashes
        tolerated); others get exactly ``"This operation not allowed"``.
    :param heartbeat_recipient: where heartbeat messages go; default: the first allowed
        sender, remembered in the store.
    :param access_token: Cloud API token; default ``WHATSAPP_ACCESS_TOKEN``.
    :param phone_number_id: the business number's id; default ``WHATSAPP_PHONE_NUMBER_ID``.
    :param sender: a ready :class:`~wa_agent.Sender` (then the two above are not needed).
    :param prefix: where the routes live when hosted by an :class:`InterfaceManager`.

    Further keyword-only options tune delivery: ``max_concurrency`` (senders processed at
    once), ``agent_timeout``, ``shutdown_timeout``, ``history_limit``, ``answer_types``,
    ``apology``, ``reset_message``, ``require_signature``,
    ``max_body``, ``api_version`` and ``base_url`` (for the Sender it builds).

    **Delivery** (SPEC §4, §7). ``max_concurrency`` agents run at once; at most
    ``max_queued_senders`` senders are queued in memory, the others wait in the store's
    inbox (still acknowledged with 200) and are taken up as the queue empties. A sender
    with ``max_pending_per_sender`` unanswered messages (or ``max_pending`` in all, counted
    per process) gets no more recorded: the webhook is answered ``503`` (after recording
    the other senders' messages of the same body) and Meta redelivers it later.
    ``lease_ttl`` is the per-sender lock's expiry when a store is shared by several processes
    (renewed while held; after a crash the sender waits at most this long); every
    ``sweep_interval`` seconds the inbox is checked for work nobody is doing (leftovers of
    another process, retries). A send that fails with a retryable error is retried from the
    inbox with a growing delay (``sweep_interval`` doubled each time, up to 5 minutes) and
    given up, with an ERROR log, after 8 failures. ``shutdown_timeout`` bounds how long
    :meth:`aclose` waits for replies in progress.

    **Receivers and workers.** ``receive_only=True`` makes a receiver: it acknowledges
    webhooks (records messages in the store's inbox, tracks delivery statuses, refuses
    strangers) but never answers; run it under your ASGI server. Workers are interfaces on
    the same store (SQLite file or Redis) with the same ``name``, started without a server
    (``async with interface: await stop_event.wait()``): their sweeper picks up what the
    receivers recorded every ``sweep_interval`` seconds (use a short one, e.g. 0.2), and the
    per-sender leases keep each user's replies in order across workers. Acks then never
    share a process with running agents (SPEC §7). A receiver does not apply the backlog
    bounds (they count what this process has pending, and a receiver answers nothing).

    **Heartbeat** (proactive messages, SPEC §4). ``heartbeat=None`` (the default) follows
    the agent: on when it has ``heartbeat=True``, with its ``heartbeat_period`` (minutes) and
    ``heartbeat_message``. ``heartbeat=True`` turns it on for any agent; ``heartbeat=False``
    turns it off; a :class:`~wa_agent.HeartbeatScheduler` is run (and shown in health) as
    is, with its own callables. ``heartbeat_period`` (minutes, or a ``timedelta``) and
    ``heartbeat_message`` override the agent's settings and imply ``heartbeat=True``.
    Outside the recipient's 24-hour window, ``heartbeat_template`` (``{"name": ...,
    "language": "en_US", "components": [...]}``) is sent instead of asking the agent; without
    one the beat is skipped with a WARNING. ``heartbeat_lease_ttl`` (seconds, default twice
    the period and at least 30 s) is how long one worker keeps the heartbeat before another
    may take over when the store is shared.
    """

    def __init__(
        self,
        agent: Any,
        *,
        verify_token: str | Secret | None = None,
        app_secret: str | Secret | None = None,
        name: str = "WhatsApp",
        mode: InterfaceMode | str = InterfaceMode.TASK,
        reset_command: str | None = "/reset",
        storage: SessionStore | str | Path | None = None,
        allowed_numbers: Iterable[str | int] | None = None,
        heartbeat_recipient: str | None = None,
        access_token: str | Secret | None = None,
        phone_number_id: str | None = None,
        sender: Sender | None = None,
        prefix: str = "/whatsapp",
        # -- tuning (not in the seed) --
        max_concurrency: int = 64,
        agent_timeout: float | None = 300.0,
        shutdown_timeout: float = 10.0,
        history_limit: int | None = 50,
        answer_types: Iterable[str] | None = None,
        apology: str = DEFAULT_APOLOGY,
        reset_message: str = DEFAULT_RESET_MESSAGE,
        heartbeat: HeartbeatScheduler[Any] | bool | None = None,
        heartbeat_template: dict[str, Any] | None = None,
        heartbeat_period: float | timedelta | None = None,
        heartbeat_message: str | None = None,
        heartbeat_lease_ttl: float | None = None,
        require_signature: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        api_version: str = "v25.0",
        base_url: str | None = None,
        sweep_interval: float = 5.0,
        lease_ttl: float = 30.0,
        max_queued_senders: int = 1000,
        media_max_bytes: int | None = None,
        max_pending_per_sender: int = 100,
        max_pending: int = 100_000,
        receive_only: bool = False,
    ) -> None:
        self.agent: Agent = as_agent(agent)
        self.receive_only = receive_only
        self.name = name
        try:
            self.mode = InterfaceMode(mode.lower() if isinstance(mode, str) else mode)
        except ValueError:
            raise ValueError(f"mode must be 'task' or 'chat', not {mode!r}") from None
        self.reset_command = reset_command
        vt = _env(verify_token, "WHATSAPP_VERIFY_TOKEN")
        secret = _env(app_secret, "WHATSAPP_APP_SECRET")
        self.verify_token: Secret | None = Secret(vt) if vt else None
        self.app_secret: Secret | None = Secret(secret) if secret else None
        if require_signature and self.app_secret is None:
            raise ConfigurationError(
                "require_signature=True but no app secret: set WHATSAPP_APP_SECRET "
                "(App Dashboard > App settings > Basic) or pass app_secret="
            )
        token = _env(access_token, "WHATSAPP_ACCESS_TOKEN")
        self._access_token: Secret | None = Secret(token) if token else None
        self.phone_number_id = _env(phone_number_id, "WHATSAPP_PHONE_NUMBER_ID")
        self.sender: Sender | None = sender
        self._owns_sender = sender is None
        self.api_version = api_version
        self.base_url = base_url
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix.rstrip("/")
        if isinstance(storage, (str, Path)):
            from .stores.sqlite import SQLiteSessionStore

            self.store: SessionStore = SQLiteSessionStore(storage)
        elif storage is None:
            from .stores.memory import MemorySessionStore

            self.store = MemorySessionStore()
        else:
            self.store = storage
        self.allowed_numbers: frozenset[str] | None = (
            None if allowed_numbers is None
            else frozenset(normalize_number(n) for n in allowed_numbers)
        )
        self.heartbeat_recipient = (
            normalize_number(heartbeat_recipient) if heartbeat_recipient else None
        )
        if self.heartbeat_recipient and not self.is_user_allowed(self.heartbeat_recipient):
            raise ConfigurationError(
                "heartbeat_recipient is not in allowed_numbers: it would never be allowed "
                "to receive the heartbeat"
            )
        self.max_concurrency = max_concurrency
        self.agent_timeout = agent_timeout
        self.shutdown_timeout = shutdown_timeout
        self.history_limit = history_limit
        self.answer_types = frozenset(answer_types) if answer_types is not None \
            else DEFAULT_ANSWER_TYPES
        self.apology = apology
        self.reset_message = reset_message
        self.heartbeat_template = _check_template(heartbeat_template)
        self._heartbeat_option = heartbeat
        self._heartbeat_config = self._heartbeat_settings(
            heartbeat, heartbeat_period, heartbeat_message)
        self.heartbeat_lease_ttl = heartbeat_lease_ttl
        if self._heartbeat_config is not None and heartbeat_lease_ttl is not None \
                and heartbeat_lease_ttl <= self._heartbeat_config.period_s:
            raise ConfigurationError(
                "heartbeat_lease_ttl must be longer than the heartbeat period, or the holder "
                "loses it between beats and workers beat in turn")
        self.heartbeat: HeartbeatScheduler[Any] | None = None
        self._heartbeat_lease: StoreLease | None = None
        self._heartbeat_task: asyncio.Task[Any] | None = None
        self._heartbeat_known: str | None = None  # recipient known to be stored
        self._heartbeat_wamids: OrderedDict[str, str] = OrderedDict()  # wamid -> recipient
        self._window_warned: set[str] = set()
        self.max_body = max_body
        self.sweep_interval = sweep_interval
        self.lease_ttl = lease_ttl
        if max_queued_senders < 1 or max_concurrency < 1:
            raise ValueError("max_concurrency and max_queued_senders must be at least 1")
        self.max_queued_senders = max_queued_senders
        self._overflow = False  # senders were left in the inbox because the queue was full
        if max_pending_per_sender < 1 or max_pending < 1:
            raise ValueError("max_pending_per_sender and max_pending must be at least 1")
        self.max_pending_per_sender = max_pending_per_sender
        self.max_pending = max_pending
        # Unanswered inbox items this process knows of, per sender (bounds the backlog).
        self._pending: dict[str, int] = {}
        self._pending_total = 0
        self._sweep_now: asyncio.Event | None = None
        self.media_max_bytes = media_max_bytes
        self.listeners: list[ConversationListener] = []
        self.stats = _Stats()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._build_heartbeat()
        self._parser = MessageParser()
        self._app: WebhookApp | None = None
        self._started = False
        self._closing = False
        self._start_lock: asyncio.Lock | None = None
        self._sem: asyncio.Semaphore | None = None
        self._drains: dict[str, asyncio.Task[None]] = {}
        # Senders whose drain starts next, in order (an ordered set): started one per gate
        # turn by a single dispatcher task, so a burst of webhooks never waits for them.
        self._starting: dict[str, None] = {}
        self._typing: set[_TypingRefresh] = set()  # running agents (typing indicator)
        self._typing_keeper: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._held: dict[str, _Held] = {}  # sender leases held by this process's drains
        self._wake: set[str] = set()
        self._backoff: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refused_seen: OrderedDict[str, None] = OrderedDict()
        # Messages accepted by this process, by wamid: processing skips re-parsing the
        # stored payload (bounded; after a restart or an overflow the payload is parsed).
        self._accepted: dict[str, Message] = {}
        self._in_flight = 0
        self._warned_unsigned = False
        # Reply steps (Graph calls) give way to webhook acks on the shared event loop.
        self._gate = AckGate()

    # -- public API ----------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"WhatsAppInterface(name={self.name!r}, mode={self.mode.value!r}, "
                f"prefix={self.prefix!r}, store={type(self.store).__name__})")

    def is_user_allowed(self, sender: str) -> bool:
        """Whether ``sender`` may use the bot (always, when no whitelist is set)."""
        if self.allowed_numbers is None:
            return True
        return normalize_number(sender) in self.allowed_numbers

    def attach_routes(self) -> WebhookApp:
        """The interface's ASGI app (``/webhook``, ``/health``), mountable anywhere.

        Mounted where ASGI lifespan does not reach (a FastAPI/Starlette sub-mount), the
        interface starts itself on the first request; call :meth:`aclose` on shutdown.
        """
        if self._app is None:
            self._app = WebhookApp(
                self,
                verify_token=self.verify_token,
                app_secret=self.app_secret,
                max_body=self.max_body,
                on_startup=self.start,
                on_shutdown=self.aclose,
                on_first_request=self.start,
                warn_unsigned=False,  # start() warns once per interface
            )
        return self._app

    def missing_configuration(self) -> list[str]:
        """Environment variables still needed to serve real WhatsApp traffic."""
        missing = []
        if self.sender is None:
            if self._access_token is None:
                missing.append("WHATSAPP_ACCESS_TOKEN")
            if not self.phone_number_id:
                missing.append("WHATSAPP_PHONE_NUMBER_ID")
        if self.verify_token is None:
            missing.append("WHATSAPP_VERIFY_TOKEN")
        return missing

    async def start(self) -> None:
        """Open the store and the Sender, resume inbox leftovers, start the heartbeat and
        the sweeper. Idempotent; called by the ASGI lifespan or the first request."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self._closing = False
            if self.sender is None:
                if self._access_token is None or not self.phone_number_id:
                    missing = [v for v in ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID")
                               if v in self.missing_configuration()]
                    raise ConfigurationError(
                        f"interface {self.name!r} cannot send replies: set {', '.join(missing)} "
                        "(or pass access_token=/phone_number_id=, or sender=)"
                    )
                from .sender import Sender

                kwargs: dict[str, Any] = {"api_version": self.api_version}
                if self.base_url:
                    kwargs["base_url"] = self.base_url
                self.sender = Sender(self._access_token, self.phone_number_id, **kwargs)
                self._owns_sender = True
            if self.app_secret is None and not self._warned_unsigned:
                self._warned_unsigned = True
                logger.warning(
                    "interface %r has NO app secret: webhook signatures are not verified and "
                    "anyone who finds the URL can post fake messages. Set WHATSAPP_APP_SECRET.",
                    self.name,
                )
            try:
                await self.store.open()
            except WAAgentError:
                raise
            except Exception as exc:
                raise StoreError(f"could not open the session store: {exc}") from exc
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._sweep_now = asyncio.Event()
            self._backoff.clear()
            self._overflow = False
            self._started = True
            if not self.receive_only:
                self._spawn(self._sweeper(), "sweeper")
                self._spawn(self._keep_leases(), "leases")
                self._setup_heartbeat()
                await self._resume()
            logger.info("interface %r started (%s mode, %s%s)", self.name, self.mode.value,
                        type(self.store).__name__, ", receive only" if self.receive_only else "")

    async def aclose(self) -> None:
        """Stop taking new work, let in-flight replies finish within ``shutdown_timeout``,
        leave the rest in the inbox, then close the Sender (if owned) and the store."""
        if not self._started:
            return
        self._closing = True
        await self._stop_heartbeat()
        drains = list(self._drains.values())
        if drains:
            _done, pending = await asyncio.wait(drains, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("shutdown: %d sender(s) still busy after %.1f s; their "
                               "messages stay in the inbox", len(pending), self.shutdown_timeout)
                await asyncio.gather(*pending, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._drains.clear()
        self._starting.clear()
        self._dispatcher = None
        self._typing.clear()
        self._typing_keeper = None
        if self._owns_sender and self.sender is not None:
            await self.sender.aclose()
            self.sender = None
        await self.store.aclose()
        self._started = False
        logger.info("interface %r stopped", self.name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until no message is being processed, queued, deferred (queue full) or
        waiting for a retry in this process (tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._busy or self._overflow or self._backoff:
            if loop.time() > deadline:
                raise TimeoutError("messages still being processed")
            await asyncio.sleep(0.01)

    @property
    def _queued_senders(self) -> int:
        """Senders with a drain running or about to start in this process."""
        return len(self._drains) + len(self._starting)

    @property
    def _busy(self) -> bool:
        """Whether a sender is being answered, about to be, or was woken for more."""
        return bool(self._drains or self._starting or self._wake)

    def health(self) -> dict[str, Any]:
        """State and counters for ``GET /health``."""
        s = self.stats
        data: dict[str, Any] = {
            "status": "ok" if self._started and not self._closing else
            ("stopping" if self._closing else "starting"),
            "interface": self.name,
            "mode": self.mode.value,
            "received": s.received,
            "processed": s.processed,
            "in_flight": self._in_flight,
            "queued_senders": self._queued_senders,
            "duplicates": s.duplicates,
            "send_failures": s.send_failures,
            "agent_errors": s.agent_errors,
            "refused": s.refused,
            "ignored": s.ignored,
            "deferred": s.deferred,
            "overloaded": s.overloaded,
            "pending": self._pending_total,
            "statuses": s.statuses,
        }
        if self.heartbeat is not None:
            data["heartbeat"] = self.heartbeat.state()
        return data

    # -- webhook consumer ------------------------------------------------------------------
    async def accept(self, events: list[Event]) -> str:
        """Record new messages durably and schedule them (the webhook consumer API)."""
        self._gate.webhook()
        if not self._started:
            await self.start()
        items: list[InboxItem] = []
        messages: list[Message] = []
        now = time.time()
        refused: list[Message] = []
        for event in events:
            if isinstance(event, Message):
                if (self.phone_number_id and event.phone_number_id
                        and event.phone_number_id != self.phone_number_id):
                    logger.warning("message for phone_number_id %s ignored by interface %r "
                                   "(configured for %s)", event.phone_number_id, self.name,
                                   self.phone_number_id)
                    self.stats.ignored += 1
                    continue
                for listener in self.listeners:
                    _safe(listener.inbound, event)
                if event.type not in self.answer_types:
                    # Checked before the whitelist: a stranger's reaction (to the refusal,
                    # say) must not make the bot talk either.
                    self.stats.ignored += 1
                    continue
                if not self.is_user_allowed(event.sender):
                    refused.append(event)
                    continue
                items.append(InboxItem(
                    id=event.id, sender=event.sender, payload=_dump_message(event),
                    received_at=now,
                ))
                messages.append(event)
            elif isinstance(event, StatusUpdate):
                self.stats.statuses += 1
                self._spawn(self._on_status(event), "status")
        for message in refused:
            self._refuse(message)
        return await self._record(items, messages)

    async def accept_body(self, body: bytes) -> str | None:
        """The webhook fast path for the most common body: one text message from an allowed
        sender to this number, and nothing else in it. Recorded exactly as :meth:`accept`
        records it, without building the event (the stored payload is the body itself; the
        message is parsed when it is processed). ``None`` for any other body, having done
        nothing: the webhook app then parses it and calls :meth:`accept`."""
        if self.listeners or not self._started:
            return None  # listeners want the parsed event now; start() runs in accept()
        found = _lone_text_message(body, self._parser.max_depth)
        if found is None:
            return None
        wamid, sender, pnid = found
        if ((self.phone_number_id and pnid and pnid != self.phone_number_id)
                or "text" not in self.answer_types
                or (self.allowed_numbers is not None and not self.is_user_allowed(sender))):
            return None
        self._gate.webhook()
        return await self._record([make_item(wamid, sender, body.decode(), time.time())], None)

    async def _record(self, items: list[InboxItem], messages: list[Message] | None) -> str:
        """Record ``items`` in the inbox (within the backlog bounds) and schedule the new
        ones; ``messages`` are their parsed events, kept for processing when given."""
        parsed = ({id(item): message for item, message in zip(items, messages, strict=True)}
                  if messages is not None else {})
        items, held = self._within_backlog(items)
        if not items and not held:
            return "ignored"
        gate = self._gate
        gate.acks_waiting += 1
        try:
            added = await self.store.add_inbound(self.name, items) if items else []
        except StoreError:
            self._count_pending(items, -1)
            raise
        except Exception as exc:
            self._count_pending(items, -1)
            raise StoreError(f"could not record inbound messages: {exc}") from exc
        finally:
            gate.acks_waiting -= 1
        accepted = False
        cache = self._accepted
        stats = self.stats
        for item, new in zip(items, added, strict=True):
            if not new:
                self._count_pending((item,), -1)
                stats.duplicates += 1
                continue
            accepted = True
            stats.received += 1
            message = parsed.get(id(item)) if parsed else None
            if message is not None:
                if len(cache) >= _MESSAGE_CACHE:  # oldest first: answered elsewhere age out
                    del cache[next(iter(cache))]
                cache[item.id] = message
            self._schedule(item.sender)
        if held:
            # Recorded the others; Meta redelivers the whole body later (they dedupe).
            self.stats.overloaded += 1
            raise Overloaded(f"{held} message(s) over the backlog bound")
        return "processing" if accepted else "ignored"

    def _within_backlog(self, items: list[InboxItem]) -> tuple[list[InboxItem], int]:
        """Split off the items of senders with ``max_pending_per_sender`` unanswered
        messages already (or beyond ``max_pending`` overall); the rest are counted."""
        if self.receive_only:
            return items, 0
        kept: list[InboxItem] = []
        pending = self._pending
        for item in items:
            count = pending.get(item.sender, 0)
            if count >= self.max_pending_per_sender or self._pending_total >= self.max_pending:
                continue
            pending[item.sender] = count + 1
            self._pending_total += 1
            kept.append(item)
        held = len(items) - len(kept)
        if held:
            logger.warning("backlog bound reached (%d per sender, %d in all): %d message(s) "
                           "refused with 503 for Meta to redeliver later",
                           self.max_pending_per_sender, self.max_pending, held)
        return kept, held

    def _sync_pending(self, sender: str, count: int) -> None:
        """Set the sender's backlog count to what the store holds (the truth)."""
        self._pending_total += count - self._pending.get(sender, 0)
        if count:
            self._pending[sender] = count
        else:
            self._pending.pop(sender, None)

    def _count_pending(self, items: Iterable[InboxItem], delta: int) -> None:
        if self.receive_only:
            return
        for item in items:
            count = max(0, self._pending.get(item.sender, 0) + delta)
            self._pending_total += count - self._pending.get(item.sender, 0)
            if count:
                self._pending[item.sender] = count
            else:
                self._pending.pop(item.sender, None)

    # -- scheduling ------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"wa_agent:{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(),
                         exc_info=task.exception())

    def _schedule(self, sender: str) -> None:
        """Start (or wake) the sender's drain, unless it is backing off after a failed send
        or the in-memory queue is full: then its items wait in the inbox for the sweeper."""
        if self._closing or not self._started or self.receive_only:
            return
        if sender in self._drains or sender in self._starting:
            self._wake.add(sender)
            return
        if self._backoff and self._backoff.get(sender, 0.0) > time.monotonic():
            return
        if self._queued_senders >= self.max_queued_senders:
            if not self._overflow:
                logger.warning("more than %d senders waiting: new ones stay in the inbox until "
                               "the queue empties", self.max_queued_senders)
            self._overflow = True
            self.stats.deferred += 1
            return
        if self._backoff:
            self._backoff.pop(sender, None)
        self._wake.add(sender)
        self._starting[sender] = None
        if self._dispatcher is None:
            self._dispatcher = self._spawn(self._dispatch(), "dispatch")

    async def _dispatch(self) -> None:
        """Start the drains of :attr:`_starting`, one per :class:`AckGate` turn (webhook acks
        first: during a burst the senders wait here, their messages safe in the inbox)."""
        try:
            while self._starting and not self._closing:
                await self._gate.turn()
                if not self._starting or self._closing:
                    break
                sender = next(iter(self._starting))
                del self._starting[sender]
                self._drains[sender] = self._spawn(self._drain(sender), "drain")
        finally:
            if self._dispatcher is asyncio.current_task():
                self._dispatcher = None

    async def _resume(self) -> None:
        try:
            senders = await self.store.pending_senders(self.name)
        except Exception:
            logger.exception("could not list inbox leftovers; the sweeper will retry")
            return
        if senders:
            logger.info("resuming %d sender(s) with unanswered messages", len(senders))
        for sender in senders:
            self._schedule(sender)

    async def _sweeper(self) -> None:
        """Every ``sweep_interval`` (or as soon as a full queue has room again), schedule the
        senders with inbox items that nobody in this process is working on."""
        assert self._sweep_now is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), self.sweep_interval)
            self._sweep_now.clear()
            try:
                senders = await self.store.pending_senders(self.name)
            except Exception:
                logger.warning("sweep: could not list the inbox", exc_info=True)
                continue
            waiting = set(senders)
            for sender in [s for s in self._backoff if s not in waiting]:
                del self._backoff[sender]  # answered meanwhile (by another process)
            for sender in [s for s in self._pending if s not in waiting]:
                self._sync_pending(sender, 0)  # answered elsewhere while it had no drain here
            self._overflow = False
            for sender in senders:
                if self._closing:
                    return
                self._schedule(sender)
                if self._overflow:
                    break

    async def _drain(self, sender: str) -> None:
        """Answer the sender's inbox items in arrival order while holding its lease (one
        drainer per sender across every process sharing the store)."""
        lease_name = f"sender:{self.name}:{sender}"
        try:
            while not self._closing:
                self._wake.discard(sender)
                if not await self.store.acquire_lease(lease_name, self.owner, self.lease_ttl):
                    # Another process is answering this sender; it will see our items too.
                    await asyncio.sleep(min(1.0, self.lease_ttl / 4))
                    left = await self.store.pending(self.name, sender)
                    # Items this process recorded may be answered by the other one: count
                    # what is really left, or the backlog bound would refuse this sender.
                    self._sync_pending(sender, len(left))
                    if sender not in self._wake and not left:
                        return
                    continue
                held = self._held[lease_name] = _Held()
                try:
                    # Until the inbox has nothing more for the sender: one lease for all
                    # rounds (a round per follow-up that came in meanwhile).
                    while True:
                        items = await self.store.pending(self.name, sender)
                        self._sync_pending(sender, len(items))
                        for index, item in enumerate(items):
                            if self._closing or held.lost:  # lease lost: start over
                                break
                            latest = index == len(items) - 1 and sender not in self._wake
                            assert self._sem is not None
                            async with self._sem:
                                if self._closing:  # waited for a slot while shutting down
                                    break
                                await self._process(item, quote=not latest)
                        if not items or self._closing or held.lost:
                            break
                        self._wake.discard(sender)  # the next read sees what woke it
                finally:
                    if self._held.get(lease_name) is held:
                        del self._held[lease_name]
                    with contextlib.suppress(Exception):
                        await self.store.release_lease(lease_name, self.owner)
                if not items and sender not in self._wake:
                    return
        except _Retry as retry:
            self._backoff[sender] = time.monotonic() + retry.delay
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("processing messages of %s failed; will retry", _mask(sender))
            self._backoff[sender] = time.monotonic() + self.sweep_interval
        finally:
            if self._drains.get(sender) is asyncio.current_task():
                del self._drains[sender]
                if self._overflow and self._sweep_now is not None \
                        and self._queued_senders <= self.max_queued_senders // 2:
                    self._sweep_now.set()

    async def _keep_leases(self) -> None:
        """Renew every held sender lease once it is a third of its TTL old (so at the latest
        at two thirds), so a slow agent never loses it. One task for all senders."""
        period = self.lease_ttl / 3
        while True:
            await asyncio.sleep(period)
            for name, held in list(self._held.items()):
                if time.monotonic() - held.since < period or self._held.get(name) is not held:
                    continue
                try:
                    ok = await self.store.acquire_lease(name, self.owner, self.lease_ttl)
                except Exception:
                    logger.warning("could not renew the lease %s", name, exc_info=True)
                    continue
                if self._held.get(name) is not held:
                    # Released while renewing: give back what was just taken again, unless a
                    # new drain of this sender holds it now.
                    if ok and name not in self._held:
                        with contextlib.suppress(Exception):
                            await self.store.release_lease(name, self.owner)
                    continue
                if ok:
                    held.since = time.monotonic()
                    continue
                held.lost = True
                logger.warning("lost the lease %s (this process stalled longer than lease_ttl="
                               "%.1f s): another process may be answering the same sender",
                               name, self.lease_ttl)

    # -- processing one message ------------------------------------------------------------
    async def _process(self, item: InboxItem, *, quote: bool) -> None:
        message = (self._accepted.pop(item.id, None)
                   or _load_message(item.payload, item.id, self._parser))
        sender = item.sender
        progress: dict[str, Any] = json.loads(item.progress) if item.progress else {}
        failures = int(progress.get("failures", 0))
        if failures >= _MAX_ATTEMPTS:
            logger.error("giving up on message %s from %s: its reply failed %d times", item.id,
                         _mask(sender), failures)
            await self._complete(item)
            return
        self._in_flight += 1
        try:
            if "parts" not in progress:
                await self.store.touch_inbound(self.name, sender, message.timestamp)
                await self._maybe_set_heartbeat_recipient(sender)
                parts, turns = await self._answer(message)
                progress = {"parts": parts, "sent": 0, "turns": turns}
                if len(parts) > 1:
                    # Before the first part: a restart resumes instead of asking again.
                    await self.store.save_progress(self.name, item.id, json.dumps(progress))
            await self._send_parts(item, message, progress, quote=quote)
            history = [Turn(role=t[0], text=t[1], message_id=t[2] if len(t) > 2 else None)
                       for t in progress.get("turns", [])]
            await self._complete(item, history)
            self.stats.processed += 1
        finally:
            self._in_flight -= 1
            for listener in self.listeners:
                _safe(listener.thinking, sender, False)

    async def _complete(self, item: InboxItem, history: Sequence[Turn] = ()) -> None:
        """Remove the answered item from the inbox. The reply is out: a store failure here is
        retried in place (never by resending), until it works or shutdown cancels it."""
        delay = 0.05
        while True:
            try:
                await self.store.complete(self.name, item.id, item.sender, history)
                self._count_pending([item], -1)
                return
            except Exception as exc:  # noqa: BLE001 - logged, retried
                logger.warning("the reply to message %s was sent but the store could not "
                               "record it (%s); retrying in %.2f s", item.id, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _save_progress(self, item: InboxItem, progress: dict[str, Any]) -> None:
        """Record how many parts were accepted. Best effort: if the store fails, sending
        goes on (only a crash before the reply completes would repeat those parts)."""
        try:
            await self.store.save_progress(self.name, item.id, json.dumps(progress))
        except Exception as exc:  # noqa: BLE001 - logged; sending goes on
            logger.warning("could not save the progress of message %s: %s", item.id, exc)

    async def _answer(self, message: Message) -> tuple[list[dict[str, Any]], list[list[Any]]]:
        """Run the agent (or the reset command) and turn its reply into sendable parts."""
        sender = message.sender
        assert self.sender is not None
        # Read receipt + typing indicator first, so the user sees the bot at work at once
        # (the reset greeting is generated by the agent too).
        await self._gate.turn()  # webhook acks first (Meta's time-out is short)
        with contextlib.suppress(Exception):
            await self.sender.mark_read(message.id, typing=True)
        for listener in self.listeners:
            _safe(listener.thinking, sender, True)
        text = (message.text or "").strip()
        if (self.mode is InterfaceMode.CHAT and self.reset_command is not None
                and message.type == "text" and text.lower() == self.reset_command.lower()):
            await self.store.clear_history(self.name, sender)
            logger.info("history of %s reset", _mask(sender))
            reply_text = await self._greeting(message)
            return await self._reply_parts(AgentReply(text=reply_text)), []
        history: tuple[Turn, ...] = ()
        if self.mode is InterfaceMode.CHAT:
            history = tuple(await self.store.get_history(self.name, sender, self.history_limit))
        attachments, notes = await self._attachments(message)
        request = AgentRequest(
            text=_render_text(message, notes),
            sender=sender,
            attachments=attachments,
            history=history,
            message=message,
            profile_name=message.profile_name,
            interface=self.name,
        )
        typing = self._keep_typing(message.id)
        try:
            # asyncio.timeout, not wait_for: no extra task per message (fewer objects for
            # the GC to walk with thousands of agents in flight)
            async with asyncio.timeout(self.agent_timeout):
                reply = await self.agent.answer(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.agent_errors += 1
            logger.exception("agent failed on message %s from %s", message.id, _mask(sender))
            for listener in self.listeners:
                _safe(listener.error, sender, f"agent error: {type(exc).__name__}")
            return [{"type": "text", "text": self.apology}], []
        finally:
            typing.cancel()
        parts = await self._reply_parts(reply)
        turns: list[list[Any]] = []
        if self.mode is InterfaceMode.CHAT:
            turns = [["user", _history_text(request.text, request.attachments), message.id],
                     ["assistant", _reply_history_text(reply)]]
        return parts, turns

    async def _greeting(self, message: Message) -> str:
        greeting = agent_attribute(self.agent, "greeting") or agent_attribute(
            self.agent, "workspace")
        if not greeting:
            return self.reset_message
        request = AgentRequest(
            text=greeting if isinstance(greeting, str) else "Greet the user.",
            sender=message.sender, message=message, profile_name=message.profile_name,
            interface=self.name, purpose="greeting",
        )
        typing = self._keep_typing(message.id)
        try:
            async with asyncio.timeout(self.agent_timeout):
                reply = await self.agent.answer(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("agent failed to produce the reset greeting")
            return self.reset_message
        finally:
            typing.cancel()
        return reply.text if reply.text and reply.text.strip() else self.reset_message

    def _keep_typing(self, message_id: str) -> _TypingRefresh:
        """Renew the typing indicator every ``_TYPING_REFRESH`` s until cancelled."""
        return _TypingRefresh(self, message_id)

    async def _keep_typing_loop(self) -> None:
        """The one typing keeper: every ``_TYPING_TICK`` s, renew the indicator of each
        running agent whose renewal is due; ends when no agent runs."""
        try:
            while self._typing:
                await asyncio.sleep(_TYPING_TICK)
                now = time.monotonic()
                for entry in list(self._typing):
                    if entry.due <= now and (entry.task is None or entry.task.done()):
                        entry.due = now + _TYPING_REFRESH
                        entry.task = self._spawn(self._refresh_typing(entry.message_id),
                                                 "typing")
        finally:
            if self._typing_keeper is asyncio.current_task():
                self._typing_keeper = None

    async def _refresh_typing(self, message_id: str) -> None:
        assert self.sender is not None
        with contextlib.suppress(Exception):
            await self.sender.mark_read(message_id, typing=True)

    async def _attachments(self, message: Message) -> tuple[tuple[Attachment, ...], list[str]]:
        if message.media is None or message.type not in MEDIA_TYPES:
            return (), []
        assert self.sender is not None
        media = message.media
        try:
            data, mime = await self.sender.download_media(
                media.id, max_bytes=self.media_max_bytes, kind=message.type)
        except (MediaError, WhatsAppAPIError) as exc:
            logger.warning("could not download %s of message %s: %s", message.type,
                           message.id, type(exc).__name__)
            return (), [f"[{message.type} could not be downloaded: {exc}]"]
        for listener in self.listeners:  # the size is known only now (the widget shows it)
            media_size = getattr(listener, "media_size", None)
            if media_size is not None:
                _safe(media_size, message.id, len(data))
        return (Attachment(kind=message.type, data=data, mime_type=mime or media.mime_type or
                           "application/octet-stream", filename=media.filename,
                           caption=message.caption, voice=media.voice),), []

    async def _reply_parts(self, reply: AgentReply) -> list[dict[str, Any]]:
        from .text import markdown_to_whatsapp, split_text

        parts: list[dict[str, Any]] = []
        if reply.text and reply.text.strip():
            for chunk in split_text(markdown_to_whatsapp(reply.text)):
                parts.append({"type": "text", "text": chunk})
        skipped = 0
        for kind, items in (("image", reply.images), ("document", reply.files)):
            for item in items:
                try:
                    parts.append(await self._media_part(kind, item))
                except WhatsAppAPIError as exc:
                    if exc.retryable:
                        raise  # transient (5xx, transport): the message is retried later
                    skipped += 1
                    logger.exception("a %s the agent returned could not be sent; skipped", kind)
                except (OSError, ValueError, TypeError, MediaError):
                    skipped += 1
                    logger.exception("a %s the agent returned could not be sent; skipped", kind)
        if skipped:
            self.stats.agent_errors += 1
        if not parts:
            if skipped:
                return [{"type": "text", "text": self.apology}]
            logger.info("agent gave an empty reply; nothing sent")
        return parts

    async def _media_part(self, default_kind: str, item: Media | bytes | Path | str
                          ) -> dict[str, Any]:
        """Upload local media now so the part can be resent from its id after a restart.

        ``data`` may be bytes, a :class:`~pathlib.Path` or a path string, an http(s) link,
        or a media id (digits). Raises ``OSError``/``ValueError``/``MediaError`` for media
        that cannot be sent (missing file, unknown or unsupported type, too large).
        """
        from ._media import kind_for_mime, sniff_mime

        assert self.sender is not None
        media = item if isinstance(item, Media) else Media(data=item)
        mime = media.mime_type
        filename = media.filename
        data: Any = media.data
        if isinstance(data, str) and not data.startswith(("http://", "https://")) \
                and not data.isdigit():
            data = Path(data)  # a local path given as a string
        if isinstance(data, Path):
            filename = filename or data.name
            mime = mime or _guess_mime(data.name)
            data = await asyncio.to_thread(data.read_bytes)
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if isinstance(data, bytes):
            mime = mime or sniff_mime(data) or (_guess_mime(filename) if filename else None)
            if mime is None:
                raise ValueError(f"cannot tell the type of a {default_kind} of {len(data)} "
                                 "bytes: return Media(data, mime_type=...)")
        elif not isinstance(data, str):
            raise TypeError(f"reply media must be bytes, a path, a link or a media id, not "
                            f"{type(data).__name__}")
        kind = media.kind or (kind_for_mime(mime) if mime else None) or default_kind
        part: dict[str, Any] = {"type": kind, "caption": media.caption, "filename": filename}
        if isinstance(data, bytes):
            assert mime is not None
            part["id"] = await self.sender.upload_media(data, mime, filename=filename)
            part["size"] = len(data)
            part["mime_type"] = mime
        elif data.startswith(("http://", "https://")):
            part["link"] = data
        else:
            part["id"] = data
        return part

    async def _send_parts(self, item: InboxItem, message: Message, progress: dict[str, Any],
                          *, quote: bool) -> None:
        assert self.sender is not None
        parts: list[dict[str, Any]] = progress["parts"]
        start = int(progress.get("sent", 0))
        to = message.sender
        # Quote when this reply is no longer the latest turn: later messages were already
        # queued (``quote``) or arrived while the agent was working (the sender is woken).
        quote = quote or to in self._wake
        for index in range(start, len(parts)):
            part = parts[index]
            reply_to = message.id if quote and index == 0 else None
            await self._gate.turn()
            try:
                if part["type"] == "text":
                    wamids = await self.sender.send_text(to, part["text"], reply_to=reply_to)
                    for listener in self.listeners:
                        _safe(listener.outbound, to, part["text"],
                              wamid=wamids[-1] if wamids else None)
                else:
                    media: Any = part.get("id") or part.get("link")
                    send = getattr(self.sender, f"send_{part['type']}", None)
                    if send is None:
                        send = self.sender.send_document
                    kwargs: dict[str, Any] = {"caption": part.get("caption"),
                                              "reply_to": reply_to}
                    if part["type"] == "document":
                        kwargs["filename"] = part.get("filename")
                    if part["type"] in ("sticker", "audio"):
                        kwargs.pop("caption")  # WhatsApp shows no caption on these
                    wamid = await send(to, media, **kwargs)
                    for listener in self.listeners:
                        _safe(listener.outbound, to, part.get("caption") or "", wamid=wamid,
                              kind=part["type"], media_info={
                                  "type": part["type"], "size": part.get("size"),
                                  "caption": part.get("caption"),
                                  "filename": part.get("filename")})
            except TransportError as exc:
                if exc.maybe_delivered:
                    logger.warning("reply part %d to %s may or may not have been delivered "
                                   "(timeout after sending); not resending", index,
                                   _mask(to))
                else:
                    await self._send_failed(item, to, exc, progress, index)
            except AuthenticationError as exc:
                await self._send_failed(item, to, exc, progress, index)
            except WhatsAppAPIError as exc:
                if exc.retryable:
                    await self._send_failed(item, to, exc, progress, index)
                self.stats.send_failures += 1
                logger.error("reply to %s failed permanently (code %s: %s); message %s "
                             "dropped", _mask(to), exc.code, type(exc).__name__, item.id)
                for listener in self.listeners:
                    _safe(listener.error, to, f"send failed: {exc.code}")
                return
            if len(parts) > 1 and index + 1 < len(parts):
                progress["sent"] = index + 1
                await self._save_progress(item, progress)

    async def _send_failed(self, item: InboxItem, to: str, exc: WhatsAppAPIError,
                           progress: dict[str, Any], index: int) -> None:
        """A retryable send failure: the part was not accepted, so it is resent later from
        the inbox (the parts before it are not), after a delay that doubles each time."""
        self.stats.send_failures += 1
        failures = int(progress.get("failures", 0)) + 1
        progress["sent"] = index
        progress["failures"] = failures
        await self.store.save_progress(self.name, item.id, json.dumps(progress))
        delay = min(self.sweep_interval * 2 ** (failures - 1), _MAX_BACKOFF)
        logger.warning("reply to %s failed (%s, code %s); kept in the inbox, retry %d in "
                       "%.1f s", _mask(to), type(exc).__name__, exc.code, failures, delay)
        for listener in self.listeners:
            _safe(listener.error, to, f"send failed: {exc.code}; will retry")
        raise _Retry(delay) from exc

    def _refuse(self, message: Message) -> None:
        self.stats.refused += 1
        if message.id in self._refused_seen:
            return
        self._refused_seen[message.id] = None
        while len(self._refused_seen) > 10_000:
            self._refused_seen.popitem(last=False)
        logger.info("refused a message from a number not in allowed_numbers (%s)",
                    _mask(message.sender))
        self._spawn(self._send_refusal(message.sender), "refusal")

    async def _send_refusal(self, to: str) -> None:
        assert self.sender is not None
        try:
            await self.sender.send_text(to, NOT_ALLOWED_MESSAGE)
        except WhatsAppAPIError as exc:
            logger.warning("could not send the refusal to %s: %s", _mask(to), exc.code)

    async def _on_status(self, update: StatusUpdate) -> None:
        if update.status not in STATUS_RANK:
            return
        try:
            # One store call: the state only moves forward, so a redelivered (id, status)
            # or one overtaken by a later status does not advance and is dropped here.
            advanced = await self.store.advance_status(self.name, update.id, update.status)
        except Exception:
            logger.warning("could not record a status update", exc_info=True)
            return
        if not advanced:
            return
        for listener in self.listeners:
            _safe(listener.status, update)
        if update.status == "failed":
            codes = ",".join(str(e.code) for e in update.errors) or "?"
            logger.warning("message %s to %s failed (codes %s)", update.id,
                           _mask(update.recipient), codes)
            self._heartbeat_status(update)

    # -- heartbeat -------------------------------------------------------------------------
    def _heartbeat_settings(self, option: object, period: float | timedelta | None,
                            message: str | None) -> HeartbeatConfig | None:
        """What heartbeat the interface builds itself (``None``: none, or a passed-in one)."""
        import dataclasses

        from .heartbeat import HeartbeatScheduler, _to_seconds, heartbeat_from_agent

        overrides = period is not None or message is not None
        if isinstance(option, HeartbeatScheduler) or option is False:
            if overrides:
                raise ConfigurationError(
                    "heartbeat_period=/heartbeat_message= configure the heartbeat the interface "
                    "builds; they cannot be combined with heartbeat=False or a HeartbeatScheduler")
            return None
        if option is not None and option is not True:
            raise TypeError("heartbeat must be None, True, False or a HeartbeatScheduler, not "
                            f"{type(option).__name__}")
        config = heartbeat_from_agent(self.agent, force=option is True or overrides)
        if config is None:
            return None
        if period is not None:
            seconds = (_to_seconds(period, "heartbeat_period") if isinstance(period, timedelta)
                       else 60 * _to_seconds(period, "heartbeat_period (minutes)"))
            config = dataclasses.replace(config, period=timedelta(seconds=seconds))
        if message is not None:
            if not isinstance(message, str) or not message.strip():
                raise ValueError("heartbeat_message must be a non-empty string")
            config = dataclasses.replace(config, message=message)
        return config

    def _build_heartbeat(self) -> None:
        """``self.heartbeat``: the passed-in scheduler, or one built from the settings (with
        a lease in the store, so workers sharing it beat once per period)."""
        from .heartbeat import HeartbeatScheduler, StoreLease

        option = self._heartbeat_option
        if isinstance(option, HeartbeatScheduler):
            self.heartbeat = option
        elif self._heartbeat_config is not None:
            config = self._heartbeat_config
            ttl = self.heartbeat_lease_ttl or max(2 * config.period_s, 30.0)
            self._heartbeat_lease = StoreLease(self.store, f"heartbeat:{self.name}", ttl=ttl,
                                               owner=self.owner)
            self.heartbeat = HeartbeatScheduler(
                config.period, config.message, run=self._heartbeat_run,
                deliver=self._heartbeat_deliver, recipient=self._heartbeat_recipient,
                name=f"{self.name} heartbeat", lease=self._heartbeat_lease,
            )

    def _setup_heartbeat(self) -> None:
        """Run the heartbeat (on start), unless something else already runs it."""
        if self.heartbeat is None:
            return
        if self.heartbeat.running:
            logger.info("%s is already running elsewhere; interface %r shows its state but "
                        "does not run it again", self.heartbeat.name, self.name)
            return
        self._heartbeat_task = self._spawn(self.heartbeat.run(), "heartbeat")

    async def _stop_heartbeat(self) -> None:
        """Stop beating (before in-flight replies drain) and hand the lease over at once."""
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lease = self._heartbeat_lease
        if lease is not None:
            with contextlib.suppress(Exception):
                await lease.release()

    async def _maybe_set_heartbeat_recipient(self, sender: str) -> None:
        """The first allowed sender becomes the recipient, kept in the store so a restart and
        every worker agree. Refused senders never get here (nor into the store)."""
        if (self.heartbeat is None or self.heartbeat_recipient or self._heartbeat_known
                or not self.is_user_allowed(sender)):
            return
        current = await self.store.set_heartbeat_recipient(self.name, sender)
        if not self.is_user_allowed(current):  # stored before the whitelist changed
            current = await self.store.set_heartbeat_recipient(self.name, sender, overwrite=True)
        if self._heartbeat_known is None:
            logger.info("heartbeat recipient: %s", _mask(current))
        self._heartbeat_known = current

    async def _heartbeat_recipient(self) -> str | None:
        if self.heartbeat_recipient:
            return self.heartbeat_recipient
        recipient = await self.store.get_heartbeat_recipient(self.name)
        if recipient is not None and not self.is_user_allowed(recipient):
            logger.debug("stored heartbeat recipient %s is not allowed; ignored",
                         _mask(recipient))
            return None
        return recipient

    async def _window_open(self, recipient: str) -> bool:
        from .heartbeat import within_service_window

        return within_service_window(await self.store.last_inbound(self.name, recipient))

    def _outside_window(self, recipient: str, why: str) -> None:
        """Free text cannot reach ``recipient``: return if a template can be sent instead,
        else skip the beat (WARNING the first time, INFO while the window stays closed)."""
        from .heartbeat import OUTSIDE_WINDOW, SkipBeat

        if self.heartbeat_template:
            return
        level = logging.INFO if recipient in self._window_warned else logging.WARNING
        self._window_warned.add(recipient)
        logger.log(level, "heartbeat to %s skipped: %s; WhatsApp then accepts only a template "
                   "(131047) and no heartbeat_template is configured", _mask(recipient), why)
        raise SkipBeat(OUTSIDE_WINDOW, level=logging.DEBUG)

    async def _heartbeat_run(self, message: str, recipient: str) -> AgentReply | None:
        """Ask the agent (with the recipient's history in CHAT mode). Outside the 24-hour
        window the agent is not asked: the beat sends the template, or is skipped."""
        if not await self._window_open(recipient):
            self._outside_window(recipient, "the recipient has not written in the last 24 hours")
            return _TEMPLATE_BEAT
        history: tuple[Turn, ...] = ()
        if self.mode is InterfaceMode.CHAT:
            history = tuple(await self.store.get_history(self.name, recipient,
                                                         self.history_limit))
        request = AgentRequest(text=message, sender=recipient, history=history,
                               interface=self.name, purpose="heartbeat")
        if self.agent_timeout is not None:
            reply = await asyncio.wait_for(self.agent.answer(request), self.agent_timeout)
        else:
            reply = await self.agent.answer(request)
        if not (reply.text or "").strip() and not reply.images and not reply.files:
            return None  # the scheduler records "skipped: the agent's answer was empty"
        return reply

    async def _heartbeat_deliver(self, recipient: str, reply: AgentReply) -> None:
        from .exceptions import OutsideServiceWindow
        from .heartbeat import EMPTY_ANSWER, SkipBeat

        if reply is _TEMPLATE_BEAT:
            await self._send_heartbeat_template(recipient)
            return
        assert isinstance(reply, AgentReply)
        if not await self._window_open(recipient):
            self._outside_window(recipient, "the 24-hour window closed while the agent answered")
            await self._send_heartbeat_template(recipient)
            return
        parts = await self._reply_parts(reply)
        if not parts:
            raise SkipBeat(EMPTY_ANSWER, level=logging.INFO)
        try:
            wamids = await self._send_heartbeat_parts(recipient, parts)
        except OutsideServiceWindow:
            self._outside_window(recipient, "the Cloud API answered 131047 (more than 24 hours "
                                 "since the user wrote)")
            await self._send_heartbeat_template(recipient)
            return
        self._window_warned.discard(recipient)
        for wamid in wamids:
            self._heartbeat_wamids[wamid] = recipient
        while len(self._heartbeat_wamids) > 1000:
            self._heartbeat_wamids.popitem(last=False)
        if self.mode is InterfaceMode.CHAT and (reply.text or "").strip():
            await self.store.append_history(self.name, recipient,
                                            [Turn(role="assistant", text=reply.text or "")])

    async def _send_heartbeat_parts(self, recipient: str, parts: list[dict[str, Any]]
                                    ) -> list[str]:
        assert self.sender is not None
        wamids: list[str] = []
        for part in parts:
            if part["type"] == "text":
                sent = await self.sender.send_text(recipient, part["text"])
                wamids.extend(sent)
                for listener in self.listeners:
                    _safe(listener.outbound, recipient, part["text"],
                          wamid=sent[-1] if sent else None)
                continue
            send = getattr(self.sender, f"send_{part['type']}", self.sender.send_document)
            kwargs: dict[str, Any] = {}
            if part["type"] not in ("sticker", "audio"):
                kwargs["caption"] = part.get("caption")
            if part["type"] == "document":
                kwargs["filename"] = part.get("filename")
            media: Any = part.get("id") or part.get("link")
            wamid = await send(recipient, media, **kwargs)
            wamids.append(wamid)
            for listener in self.listeners:
                _safe(listener.outbound, recipient, part.get("caption") or "", wamid=wamid,
                      kind=part["type"], media_info={
                          "type": part["type"], "size": part.get("size"),
                          "caption": part.get("caption"), "filename": part.get("filename")})
        return wamids

    async def _send_heartbeat_template(self, recipient: str) -> None:
        assert self.sender is not None and self.heartbeat_template is not None
        template = self.heartbeat_template
        wamid = await self.sender.send_template(recipient, template["name"],
                                                template.get("language", "en_US"),
                                                template.get("components"))
        logger.info("heartbeat to %s: outside the 24-hour window, sent template %r instead",
                    _mask(recipient), template["name"])
        for listener in self.listeners:
            _safe(listener.outbound, recipient, f"[template {template['name']}]", wamid=wamid)

    def _heartbeat_status(self, update: StatusUpdate) -> None:
        """A heartbeat text that failed later with 131047 (Meta usually reports it as a
        ``failed`` status): handled like a synchronous 131047."""
        from .heartbeat import SkipBeat

        recipient = self._heartbeat_wamids.pop(update.id, None) \
            if update.status == "failed" else None
        if recipient is None or not any(e.code == 131047 for e in update.errors):
            return
        try:
            self._outside_window(recipient, "the Cloud API reported 131047 for the heartbeat")
        except SkipBeat:
            return
        self._spawn(self._heartbeat_template_later(recipient), "heartbeat-template")

    async def _heartbeat_template_later(self, recipient: str) -> None:
        try:
            await self._send_heartbeat_template(recipient)
        except WhatsAppAPIError as exc:
            logger.warning("could not send the heartbeat template to %s (%s, code %s)",
                           _mask(recipient), type(exc).__name__, exc.code)


# -- helpers ---------------------------------------------------------------------------------
#: What ``_heartbeat_run`` answers (compared by identity) when the beat must send the
#: template instead of asking the agent.
_TEMPLATE_BEAT = AgentReply(text="<heartbeat template>")


def _check_template(template: dict[str, Any] | None) -> dict[str, Any] | None:
    if template is None:
        return None
    if not isinstance(template, dict) or not isinstance(template.get("name"), str) \
            or not template["name"]:
        raise ConfigurationError(
            'heartbeat_template must be a dict like {"name": "check_in", "language": "en_US", '
            '"components": [...]} naming an approved template')
    return dict(template)


def _safe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:
        logger.debug("listener %r failed", fn, exc_info=True)


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps builds one per call


def _dump_message(message: Message) -> str:
    return _COMPACT.encode({
        "m": message.raw, "p": message.phone_number_id, "d": message.display_phone_number,
        "n": message.profile_name,
    })


def _read_json(body: bytes) -> Any:
    # Key strings cached, values not: every wamid and sender is new (pydantic-core >= 2.18;
    # older ones cache everything).
    return from_json(body, cache_strings="keys")


try:
    _read_json(b"{}")
except TypeError:  # pragma: no cover - an older pydantic-core
    _read_json = from_json  # type: ignore[assignment]


def _lone_text_message(body: bytes, max_depth: int) -> tuple[str, str, str | None] | None:
    """``(wamid, sender, phone_number_id)`` when ``body`` is a webhook holding exactly one
    text message and nothing else, shaped so that :class:`MessageParser` reads it as that
    one valid text message; ``None`` for anything else (the full parse decides those). Uses
    pydantic-core's JSON reader (twice as fast as ``json.loads``; it refuses what the two
    could read differently: lone surrogates, out-of-range numbers, non-UTF-8)."""
    if _too_deep(body, max_depth):
        return None
    try:
        # pydantic-core's reader refuses lone surrogates (json.loads would let them through
        # and the parser scrub them): no pre-scan for them is needed here.
        data = _read_json(body)
        # Indexing and one-item unpacking refuse every other shape at once: a list, string
        # or number where an object is needed raises TypeError, a missing key LookupError,
        # not exactly one entry / change / message ValueError (JSON has no other sequences).
        (entry,) = data["entry"]
        (change,) = entry["changes"]
        value = change["value"]
        (item,) = value["messages"]
        text = item["text"]["body"]
        wamid, sender, stamp = item["id"], item["from"], item["timestamp"]
        metadata = value.get("metadata")
        if (data["object"] != "whatsapp_business_account" or change["field"] != "messages"
                or "statuses" in value or "errors" in value or "errors" in item
                or item["type"] != "text" or type(data["entry"]) is not list):
            return None
    except (ValueError, LookupError, TypeError, AttributeError):
        return None
    pnid = metadata.get("phone_number_id") if type(metadata) is dict else None
    if ((pnid is not None and type(pnid) is not str) or type(wamid) is not str or not wamid
            or type(sender) is not str or not sender or type(text) is not str
            or type(stamp) is not str
            or not (stamp.isascii() and stamp.isdigit() and 9 <= len(stamp) <= 11)):
        return None
    return wamid, sender, pnid


def _load_message(payload: str, wamid: str, parser: MessageParser) -> Message:
    """The message an inbox payload holds: the compact record of :func:`_dump_message`, or
    the whole webhook body it came in (the fast path), read by the full parser."""
    if not payload.startswith('{"m":'):
        try:
            events = parser.parse(payload)
        except InvalidPayload:
            events = []
        for event in events:
            if isinstance(event, Message) and event.id == wamid:
                return event
        raise StoreError("an inbox item could not be read back as a message")
    data = json.loads(payload)
    contacts = []
    if data.get("n") is not None:
        raw = data["m"]
        contacts.append({"profile": {"name": data["n"]}, "wa_id": raw.get("from") or "",
                         "user_id": raw.get("from_user_id")})
    body = {"object": "whatsapp_business_account", "entry": [{"id": "", "changes": [{
        "field": "messages", "value": {
            "metadata": {"phone_number_id": data.get("p"), "display_phone_number": data.get("d")},
            "contacts": contacts, "messages": [data["m"]]}}]}]}
    events = parser.parse(body)
    message = events[0] if events else None
    if not isinstance(message, Message):
        raise StoreError("an inbox item could not be read back as a message")
    return message


def _history_text(text: str, attachments: Sequence[Attachment]) -> str:
    """A user turn for the history: media-only messages would otherwise leave an empty turn
    (which models drop), so each attachment is named: ``[image] my cat``."""
    marks = []
    for att in attachments:
        label = "voice note" if att.voice else att.kind
        marks.append(f'[{label} "{att.filename}"]' if att.filename else f"[{label}]")
    return " ".join([*marks, text] if text else marks)


def _reply_history_text(reply: AgentReply) -> str:
    """The assistant turn: the reply text, or what was sent when it was media only."""
    if reply.text and reply.text.strip():
        return reply.text
    sent = [f"{len(items)} {kind}{'s' if len(items) > 1 else ''}"
            for kind, items in (("image", reply.images), ("file", reply.files)) if items]
    return f"[sent {' and '.join(sent)}]" if sent else ""


def _render_text(message: Message, notes: Sequence[str] = ()) -> str:
    """The message as text for the agent (SPEC §4: locations, contacts, replies readable)."""
    parts: list[str] = []
    mtype = message.type
    if mtype == "location" and message.location is not None:
        loc = message.location
        place = ", ".join(p for p in (loc.name, loc.address) if p)
        parts.append(f"[location: {loc.latitude:.6f}, {loc.longitude:.6f}"
                     + (f" — {place}" if place else "") + "]")
    elif mtype == "contacts":
        for card in message.contacts:
            phones = ", ".join(card.phones)
            parts.append(f"[contact: {card.formatted_name or 'unnamed'}"
                         + (f", {phones}" if phones else "") + "]")
    elif mtype == "interactive" and message.interactive is not None:
        inter = message.interactive
        if inter.type == "nfm_reply":
            parts.append(f"[form submitted: {json.dumps(inter.response or {})}]")
        else:
            title = (inter.title or "").strip() or f"[{inter.type}]"
            if inter.description:
                title += f" ({inter.description})"
            parts.append(title)
    elif mtype == "button" and message.button is not None:
        parts.append(message.button.text or message.button.payload or "[button]")
    elif mtype == "order" and message.order is not None:
        lines = [f"{i.quantity or 1} x {i.product_retailer_id} at {i.item_price} {i.currency}"
                 for i in message.order.product_items]
        parts.append("[order: " + "; ".join(lines) + "]")
        if message.order.text:
            parts.append(message.order.text)
    elif mtype == "reaction" and message.reaction is not None:
        parts.append(f"[reaction {message.reaction.emoji or 'removed'} to "
                     f"{message.reaction.message_id}]")
    elif mtype in MEDIA_TYPES:
        if message.caption:
            parts.append(message.caption)
    elif mtype == "edit":
        parts.append("[edited an earlier message]"
                     + (f" {message.text}" if message.text else ""))
    elif mtype == "revoke":
        parts.append("[deleted an earlier message]")
    elif message.text:
        parts.append(message.text)
    else:
        parts.append(f"[{mtype} message]")
    parts.extend(notes)
    return "\n".join(parts)


_MIME_BY_EXT = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".mp4": "video/mp4", ".3gp": "video/3gpp", ".ogg": "audio/ogg", ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4", ".aac": "audio/aac", ".amr": "audio/amr", ".pdf": "application/pdf",
    ".txt": "text/plain", ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _guess_mime(name: str) -> str | None:
    return _MIME_BY_EXT.get(Path(name).suffix.lower())
