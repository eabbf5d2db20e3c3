"""``WhatsAppInterface``: one agent served on one WhatsApp number.

The interface is a thin facade over the parts in :mod:`wa_agent.hosting`, each with one
job (``docs/architecture.md`` walks a webhook body through them):

* :mod:`~wa_agent.hosting.settings` — the options, resolved and validated once;
* :mod:`~wa_agent.hosting.policy` — who is answered (foreign number, ignored type, refused);
* :mod:`~wa_agent.hosting.intake` — events into the durable inbox, within the backlog bound;
* :mod:`~wa_agent.hosting.scheduler` — per-contact drains, leases, the sweeper;
* :mod:`~wa_agent.hosting.processor` — one inbox item answered (reset, retry, complete);
* :mod:`~wa_agent.hosting.runner` — the agent call (timeout, typing indicator, apology);
* :mod:`~wa_agent.hosting.delivery` — replies into WhatsApp messages, and sending them;
* :mod:`~wa_agent.hosting.handoff` — a person taking a conversation over, and back;
* :mod:`~wa_agent.hosting.beats` — the heartbeat's recipient, window and template;
* :mod:`~wa_agent.hosting.observers` — counters, listeners, delivery statuses;
* :mod:`~wa_agent.hosting.tasks` — the background tasks, owned in one place.

Replies are built only from the item being processed, never from shared agent state, so
one user's answer cannot reach another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ._ackgate import AckGate
from .agents import Agent, as_agent
from .asgi import DEFAULT_MAX_BODY, WebhookApp
from .events import Event, Message, StatusUpdate
from .exceptions import ConfigurationError, StoreError, WAAgentError
from .hosting.beats import HeartbeatWiring
from .hosting.delivery import Delivery
from .hosting.handoff import Handoff, Handoffs, OperatorListeners, OperatorMedia
from .hosting.intake import Backlog, Intake
from .hosting.observers import ConversationListener, Listeners, Stats, StatusTracker
from .hosting.policy import NOT_ALLOWED_MESSAGE, AcceptancePolicy, send_refusal
from .hosting.processor import Processor
from .hosting.runner import AgentRunner, TypingKeeper
from .hosting.scheduler import Scheduler
from .hosting.settings import (
    DEFAULT_ANSWER_TYPES,
    DEFAULT_APOLOGY,
    DEFAULT_HANDOFF_MESSAGE,
    DEFAULT_RESET_MESSAGE,
    DEFAULT_RESUME_MESSAGE,
    DEFAULT_VOICE_APOLOGY,
    InterfaceMode,
    InterfaceSettings,
    Transcriber,
    env_secret,
)
from .hosting.tasks import TaskSet
from .numbers import normalize_number
from .parser import MessageParser
from .secret import Secret
from .stores.base import SessionStore

if TYPE_CHECKING:
    from .heartbeat import HeartbeatScheduler
    from .sender import Sender

__all__ = [
    "DEFAULT_ANSWER_TYPES",
    "DEFAULT_APOLOGY",
    "DEFAULT_RESET_MESSAGE",
    "NOT_ALLOWED_MESSAGE",
    "ConversationListener",
    "InterfaceMode",
    "WhatsAppInterface",
    "normalize_number",
]

logger = logging.getLogger(__name__)


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
    ``media_dir``: the one directory from which a reply may name files by a *string*
    (strings are otherwise sent only as links or media ids; ``pathlib.Path`` objects built by
    your code are always read), see SECURITY.md.

    **Delivery** (SPEC §4, §7). ``max_concurrency`` agents run at once; at most
    ``max_queued_senders`` senders are queued in memory, the others wait in the store's
    inbox (still acknowledged with 200) and are taken up as the queue empties. A sender
    with ``max_pending_per_sender`` unanswered messages (or ``max_pending`` in all, counted
    per process) gets no more recorded: the webhook is answered ``503`` (after recording
    the other senders' messages of the same body) and Meta redelivers it later.
    ``lease_ttl`` (6 s) is the per-sender lock's expiry when a store is shared by several
    processes: renewed every third of it while held (one store call for all held leases),
    so when a process dies its senders are taken over, by another worker or by the process
    restarted on the same store, within ``lease_ttl`` plus about a second; every
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
        phone_number_id: str | int | None = None,
        sender: Sender | None = None,
        prefix: str = "/whatsapp",
        # -- conversations --
        debounce: float = 0.0,
        interrupt: bool = False,
        transcriber: Transcriber | None = None,
        voice_apology: str = DEFAULT_VOICE_APOLOGY,
        # -- human handoff --
        handoff_command: str | None = "/human",
        handoff_message: str = DEFAULT_HANDOFF_MESSAGE,
        handoff_timeout: float | timedelta | None = None,
        resume_message: str | None = DEFAULT_RESUME_MESSAGE,
        # -- tuning (not in the seed) --
        max_concurrency: int = 10_000,
        max_concurrency_per_sender: int = 16,
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
        lease_ttl: float = 6.0,
        max_queued_senders: int = 10_000,
        media_max_bytes: int | None = None,
        media_dir: str | Path | None = None,
        max_pending_per_sender: int = 100,
        max_pending: int = 100_000,
        receive_only: bool = False,
    ) -> None:
        self.agent: Agent = as_agent(agent)
        if isinstance(handoff_timeout, timedelta):
            handoff_timeout = handoff_timeout.total_seconds()
        # fmt: off
        self.settings = InterfaceSettings.resolve(
            self.agent, heartbeat=heartbeat, heartbeat_period=heartbeat_period,
            heartbeat_message=heartbeat_message, mode=mode, prefix=prefix,
            access_token=access_token, phone_number_id=phone_number_id,
            allowed_numbers=allowed_numbers, heartbeat_recipient=heartbeat_recipient,
            answer_types=answer_types, heartbeat_template=heartbeat_template, name=name,
            reset_command=reset_command, api_version=api_version,
            max_concurrency=max_concurrency,
            max_concurrency_per_sender=max_concurrency_per_sender, debounce=debounce,
            interrupt=interrupt, transcriber=transcriber, voice_apology=voice_apology,
            handoff_command=handoff_command, handoff_message=handoff_message,
            handoff_timeout=handoff_timeout, resume_message=resume_message,
            agent_timeout=agent_timeout, shutdown_timeout=shutdown_timeout,
            history_limit=history_limit, apology=apology, reset_message=reset_message,
            heartbeat_lease_ttl=heartbeat_lease_ttl, require_signature=require_signature,
            max_body=max_body, sweep_interval=sweep_interval, lease_ttl=lease_ttl,
            max_queued_senders=max_queued_senders, media_max_bytes=media_max_bytes,
            max_pending_per_sender=max_pending_per_sender, max_pending=max_pending,
            receive_only=receive_only,
        )
        # fmt: on
        #: Filled in by the simulator or a test before the routes are built
        #: (:meth:`use_defaults`); the Graph ``base_url`` may be changed until :meth:`start`.
        self.verify_token: Secret | None = env_secret(verify_token, "WHATSAPP_VERIFY_TOKEN")
        self.app_secret: Secret | None = env_secret(app_secret, "WHATSAPP_APP_SECRET")
        if require_signature and self.app_secret is None:
            raise ConfigurationError(
                "require_signature=True but no app secret: set WHATSAPP_APP_SECRET "
                "(App Dashboard > App settings > Basic) or pass app_secret="
            )
        self.base_url = base_url
        self.store: SessionStore = _open_store(storage)
        self._sender: Sender | None = sender
        self._owns_sender = sender is None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._build(heartbeat, Path(media_dir) if media_dir is not None else None)
        self._app: WebhookApp | None = None
        self._started = False
        self._closing = False
        self._start_lock: asyncio.Lock | None = None
        self._warned_unsigned = False

    def _build(self, heartbeat: object, media_dir: Path | None) -> None:
        """Compose the parts (see the module docstring); they share the counters, the
        listeners, the task set and the gate that gives webhook acks priority over reply
        steps on the shared event loop."""
        settings, store = self.settings, self.store
        self.stats = Stats()
        self.listeners: Listeners = Listeners()
        self._tasks = TaskSet(settings.name)
        self._gate = AckGate()
        self._parser = MessageParser()
        self._policy = AcceptancePolicy(settings)
        self._backlog = Backlog(settings)
        self._typing = TypingKeeper(self._tasks, self._refresh_typing)
        self._runner = AgentRunner(
            self.agent,
            timeout=settings.agent_timeout,
            apology=settings.apology,
            stats=self.stats,
            listeners=self.listeners,
            typing=self._typing,
        )
        self._delivery = Delivery(
            self._graph,
            listeners=self.listeners,
            stats=self.stats,
            apology=settings.apology,
            media_dir=media_dir,
        )
        operator = Delivery(
            self._graph,
            listeners=OperatorListeners(self.listeners),
            stats=self.stats,
            apology=settings.apology,
            media_dir=None,
        )
        self._handoffs = Handoffs(
            settings,
            store=store,
            listeners=self.listeners,
            delivery=self._delivery,
            operator_delivery=operator,
            tasks=self._tasks,
            owner=self.owner,
        )
        self._beats = HeartbeatWiring(
            settings,
            heartbeat,
            store=store,
            runner=self._runner,
            delivery=self._delivery,
            tasks=self._tasks,
            owner=self.owner,
            handoffs=self._handoffs,
        )
        self._statuses = StatusTracker(
            settings.name, store, self.listeners, on_failed=self._beats.on_failed
        )
        self._scheduler = Scheduler(
            settings,
            store=store,
            backlog=self._backlog,
            tasks=self._tasks,
            gate=self._gate,
            stats=self.stats,
            owner=self.owner,
        )
        self._processor = Processor(
            settings,
            store=store,
            graph=self._graph,
            runner=self._runner,
            delivery=self._delivery,
            backlog=self._backlog,
            beats=self._beats,
            listeners=self.listeners,
            stats=self.stats,
            gate=self._gate,
            parser=self._parser,
            tasks=self._tasks,
            handoffs=self._handoffs,
        )
        self._scheduler.processor = self._processor
        self._intake = Intake(
            settings,
            policy=self._policy,
            store=store,
            backlog=self._backlog,
            schedule=self._scheduler.schedule,
            on_status=self._on_status,
            on_refused=self._on_refused,
            listeners=self.listeners,
            stats=self.stats,
            gate=self._gate,
            max_depth=self._parser.max_depth,
        )

    # -- settings, read-only ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The interface's name (health, logs, store keys)."""
        return self.settings.name

    @property
    def mode(self) -> InterfaceMode:
        """TASK or CHAT."""
        return self.settings.mode

    @property
    def prefix(self) -> str:
        """Where the routes live when hosted by an :class:`~wa_agent.InterfaceManager`."""
        return self.settings.prefix

    @property
    def phone_number_id(self) -> str | None:
        """The business number's id (digits), or ``None`` when the Sender brings it."""
        return self.settings.phone_number_id

    @property
    def allowed_numbers(self) -> frozenset[str] | None:
        """The whitelist, normalised (``None``: everyone is answered)."""
        return self.settings.allowed_numbers

    @property
    def reset_command(self) -> str | None:
        """The CHAT-mode command that clears a contact's history (``None``: off)."""
        return self.settings.reset_command

    @property
    def apology(self) -> str:
        """What a user gets when the agent fails."""
        return self.settings.apology

    @property
    def receive_only(self) -> bool:
        """Whether this interface only records messages (for workers to answer)."""
        return self.settings.receive_only

    @property
    def heartbeat(self) -> HeartbeatScheduler[Any] | None:
        """The heartbeat this interface runs (or shows), if any."""
        return self._beats.scheduler

    @property
    def sender(self) -> Sender | None:
        """The Graph API client replies go through (built at :meth:`start` from the access
        token and phone number id unless one was given)."""
        return self._sender

    # -- public API ----------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"WhatsAppInterface(name={self.name!r}, mode={self.mode.value!r}, "
            f"prefix={self.prefix!r}, store={type(self.store).__name__})"
        )

    def is_user_allowed(self, sender: str) -> bool:
        """Whether ``sender`` may use the bot (always, when no whitelist is set)."""
        return self.settings.is_allowed(sender)

    def use_sender(self, sender: Sender, *, owned: bool = True) -> None:
        """Send replies through ``sender`` (before :meth:`start`). ``owned``: the interface
        closes it in :meth:`aclose` (the simulator hands over a Sender pointed at its
        emulator this way)."""
        if self._started:
            raise RuntimeError("use_sender() must be called before the interface starts")
        self._sender = sender
        self._owns_sender = owned

    def use_defaults(
        self, *, app_secret: str | None = None, verify_token: str | None = None
    ) -> None:
        """Fill in the app secret and verify token where none was configured (the
        simulator's own, say); routes built earlier are rebuilt with them."""
        if self.app_secret is None and app_secret:
            self.app_secret = Secret(app_secret)
            self._app = None
        if self.verify_token is None and verify_token:
            self.verify_token = Secret(verify_token)
            self._app = None

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
                max_body=self.settings.max_body,
                on_startup=self.start,
                on_shutdown=self.aclose,
                on_first_request=self.start,
                warn_unsigned=False,  # start() warns once per interface
            )
        return self._app

    def missing_configuration(self) -> list[str]:
        """Environment variables still needed to serve real WhatsApp traffic."""
        missing = []
        if self._sender is None:
            if self.settings.access_token is None:
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
            if self._sender is None:
                self._sender = self._build_sender()
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
            self._started = True
            if not self.receive_only:
                await self._scheduler.start()
                self._beats.start()
                self._handoffs.start()
            logger.info(
                "interface %r started (%s mode, %s%s)",
                self.name,
                self.mode.value,
                type(self.store).__name__,
                ", receive only" if self.receive_only else "",
            )

    def _build_sender(self) -> Sender:
        settings = self.settings
        if settings.access_token is None or not settings.phone_number_id:
            missing = [
                v
                for v in ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID")
                if v in self.missing_configuration()
            ]
            raise ConfigurationError(
                f"interface {self.name!r} cannot send replies: set {', '.join(missing)} "
                "(or pass access_token=/phone_number_id=, or sender=)"
            )
        from .sender import Sender

        kwargs: dict[str, Any] = {"api_version": settings.api_version}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        return Sender(settings.access_token, settings.phone_number_id, **kwargs)

    async def aclose(self) -> None:
        """Stop taking new work, let in-flight replies finish within ``shutdown_timeout``,
        leave the rest in the inbox, then close the Sender (if owned) and the store."""
        if not self._started:
            return
        self._closing = True
        await self._beats.stop()
        await self._scheduler.stop(self.settings.shutdown_timeout)
        await self._tasks.close()
        self._scheduler.clear()
        self._typing.clear()
        if self._owns_sender and self._sender is not None:
            await self._sender.aclose()
            self._sender = None
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
        while not self._scheduler.idle:
            if loop.time() > deadline:
                raise TimeoutError("messages still being processed")
            await asyncio.sleep(0.01)

    @property
    def busy(self) -> bool:
        """Whether a contact is being answered in this process, about to be, or was woken
        for more (the simulator waits for this to turn false)."""
        return self._scheduler.busy

    def health(self) -> dict[str, Any]:
        """State and counters for ``GET /health``."""
        s = self.stats
        data: dict[str, Any] = {
            "status": "ok"
            if self._started and not self._closing
            else ("stopping" if self._closing else "starting"),
            "interface": self.name,
            "mode": self.mode.value,
            "received": s.received,
            "processed": s.processed,
            "in_flight": self._processor.in_flight,
            "queued_senders": self._scheduler.queued,
            "duplicates": s.duplicates,
            "send_failures": s.send_failures,
            "agent_errors": s.agent_errors,
            "refused": s.refused,
            "ignored": s.ignored,
            "deferred": s.deferred,
            "overloaded": s.overloaded,
            "pending": self._backlog.total,
            "statuses": s.statuses,
        }
        if self._app is not None:
            data["store_failures"] = self._app.store_failures
        durability = getattr(self.store, "durability", None)
        if durability is not None:
            data["store_durability"] = durability
        sender = self._sender
        rate = getattr(sender, "rate_limit_state", None) if sender is not None else None
        if rate is not None:
            data["send_rate"] = rate()
        if self.heartbeat is not None:
            data["heartbeat"] = self.heartbeat.state()
        return data

    # -- human handoff ---------------------------------------------------------------------
    async def handoff(self, contact: str, note: str | None = None) -> Handoff:
        """Hand the conversation with ``contact`` to a person: the agent stops answering
        them. Their messages are still acknowledged, kept in the inbox until recorded,
        shown to listeners and written to the history; reply with :meth:`send`, give the
        conversation back with :meth:`resume`. Stored: survives a restart and holds for
        every worker sharing the store. Handing off again renews the note and the
        ``handoff_timeout``."""
        await self.start()
        return await self._handoffs.begin(normalize_number(contact), by="operator", note=note)

    async def resume(self, contact: str) -> bool:
        """Give ``contact`` back to the agent (``False`` if they were not handed off). The
        agent's next request carries the handed-off exchange in ``history`` (user turns and
        ``operator`` turns), in TASK mode too."""
        await self.start()
        return await self._handoffs.end(normalize_number(contact), by="operator")

    async def is_handed_off(self, contact: str) -> bool:
        """Whether a person currently answers ``contact`` instead of the agent."""
        await self.start()
        return await self._handoffs.is_active(normalize_number(contact))

    async def handoffs(self) -> dict[str, Handoff]:
        """Every handed-off contact and its :class:`~wa_agent.Handoff` (since when, by whom,
        the note, when it times out)."""
        await self.start()
        return await self._handoffs.active()

    async def send(
        self,
        contact: str,
        text: str | None = None,
        *,
        media: OperatorMedia | Sequence[OperatorMedia] = (),
        template: dict[str, Any] | None = None,
    ) -> list[str]:
        """Send a person's message to ``contact`` (text and/or media: :class:`~wa_agent.Media`,
        bytes or a ``Path``), recorded in the history as an ``operator`` turn; the Meta
        message ids. Inside the 24-hour window only: outside it ``template`` (``{"name":
        ..., "language": ...}``) is sent instead, or :class:`~wa_agent.OutsideServiceWindow`
        is raised. Works whether or not the contact is handed off."""
        await self.start()
        return await self._handoffs.send(
            normalize_number(contact), text, media=media, template=template
        )

    # -- webhook consumer ------------------------------------------------------------------
    async def accept(self, events: list[Event]) -> str:
        """Record new messages durably and schedule them (the webhook consumer API)."""
        if not self._started:
            await self.start()
        return await self._intake.accept(events)

    async def accept_body(self, body: bytes) -> str | None:
        """The webhook fast path for the most common body: one text message from an allowed
        sender to this number, and nothing else in it. Recorded exactly as :meth:`accept`
        records it, without building the event (the stored payload is the body itself; the
        message is parsed when it is processed). ``None`` for any other body, having done
        nothing: the webhook app then parses it and calls :meth:`accept`."""
        if self.listeners or not self._started:
            return None  # listeners want the parsed event now; start() runs in accept()
        return await self._intake.accept_body(body)

    # -- wiring ---------------------------------------------------------------------------
    def _graph(self) -> Sender:
        sender = self._sender
        if sender is None:
            raise RuntimeError(f"interface {self.name!r} is not started: it has no Sender")
        return sender

    async def _refresh_typing(self, message_id: str) -> None:
        await self._graph().mark_read(message_id, typing=True)

    def _on_status(self, update: StatusUpdate) -> None:
        self._tasks.spawn(self._statuses.apply(update), "status")

    def _on_refused(self, message: Message) -> None:
        self._tasks.spawn(send_refusal(self._graph().send_text, message.sender), "refusal")


def _open_store(storage: SessionStore | str | Path | None) -> SessionStore:
    if isinstance(storage, (str, Path)):
        from .stores.sqlite import SQLiteSessionStore

        return SQLiteSessionStore(storage)
    if storage is None:
        from .stores.memory import MemorySessionStore

        return MemorySessionStore()
    return storage
