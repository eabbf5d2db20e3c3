"""Proactive messages on a schedule: :class:`HeartbeatScheduler` and its helpers.

Every ``period`` the scheduler asks the agent with a fixed ``message`` (``run``) and sends the
answer to one recipient (``deliver``). It knows nothing about WhatsApp, stores or agents: the
hosting layer passes three callables, so the same scheduler works inside any app or worker::

    scheduler = HeartbeatScheduler(
        timedelta(minutes=30), "Anything new to tell the user?",
        run=ask_agent,            # async (message, recipient) -> answer
        deliver=send_answer,      # async (recipient, answer) -> None
        recipient=load_recipient, # "15551234567", None, or async () -> str | None
        lease=StoreLease(store, "heartbeat:WhatsApp", ttl=3600),   # one beat across workers
    )
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        ...
        tg.cancel_scope.cancel()

**Timing.** Beats are due on a fixed grid: ``first_beat_after`` (default: one period) after
:meth:`~HeartbeatScheduler.run` starts, then every ``period``. Beats never overlap: when a
beat runs past the next due time, the due times it overran are skipped (counted as
``missed``, with one WARNING) and the schedule resumes on the grid. A beat that finishes
exactly on a due time is followed by that beat at once.

**Outcomes.** Each beat ends as a :class:`BeatResult`:

* ``delivered``: the answer was handed to ``deliver`` and it returned;
* ``skipped``: nothing was sent, on purpose. Reasons, and the log level that says so:
  the ``lease`` is held by another worker (DEBUG); there is no recipient yet (INFO); the
  agent's answer was empty (INFO); another beat was in progress (INFO); ``run``,
  ``deliver`` or ``recipient`` raised :class:`SkipBeat` (WARNING unless it names another
  level) or :class:`~wa_agent.OutsideServiceWindow` (WARNING);
* ``failed``: ``lease``, ``recipient``, ``run`` or ``deliver`` raised, or the beat took
  longer than ``timeout`` (default: one period) and was cancelled (``failed: TimeoutError``);
  logged at WARNING, and the next beat still runs. A hung agent therefore costs one beat,
  not all the following ones.

Cancellation is never swallowed: a beat cancelled halfway is not recorded at all (in
particular never as ``delivered``), and :meth:`~HeartbeatScheduler.run` stops at its next
checkpoint.

**The 24-hour window.** WhatsApp only accepts free-form messages to a user within 24 hours of
that user's last message (``reference/cloud_api.md`` §11); after that only templates.
:func:`within_service_window` answers the question from the store's last-inbound time, and
``deliver`` (or ``run``, to spare the agent call) raises :class:`SkipBeat` when it would have
to send free text outside the window and no template is configured.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Literal, Protocol, TypeAlias, TypeVar, final

import anyio
from anyio.abc import TaskStatus

from .agents import agent_attribute
from .exceptions import OutsideServiceWindow

__all__ = [
    "DEFAULT_HEARTBEAT_MESSAGE",
    "DEFAULT_HEARTBEAT_PERIOD_MINUTES",
    "SERVICE_WINDOW",
    "BeatResult",
    "HeartbeatConfig",
    "HeartbeatScheduler",
    "SkipBeat",
    "StoreLease",
    "heartbeat_from_agent",
    "within_service_window",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long after a user's last message free-form messages may be sent (Cloud API rule).
SERVICE_WINDOW: Final = timedelta(hours=24)

#: ``heartbeat_period`` when the agent turns the heartbeat on without one (minutes, as the seed).
DEFAULT_HEARTBEAT_PERIOD_MINUTES: Final = 30

#: ``heartbeat_message`` when the agent turns the heartbeat on without one.
DEFAULT_HEARTBEAT_MESSAGE: Final = (
    "This is a scheduled check-in, not a message from the user. Write one short, friendly "
    "message to send them now: follow up on anything open in your conversation, or share "
    "something useful. Do not mention that this is a scheduled check-in."
)

BeatStatus: TypeAlias = Literal["delivered", "skipped", "failed"]
Seconds: TypeAlias = "float | int | timedelta"
RecipientSource: TypeAlias = "str | None | Callable[[], Awaitable[str | None]]"

# Reasons for skipped beats (also shown in ``state()["last_result"]`` after "skipped: ").
LEASE_HELD: Final = "heartbeat lease held by another worker"
NO_RECIPIENT: Final = "no recipient yet"
EMPTY_ANSWER: Final = "the agent's answer was empty"
BEAT_IN_PROGRESS: Final = "another beat is in progress"
OUTSIDE_WINDOW: Final = "outside the 24-hour customer service window (131047)"


@dataclass(frozen=True, slots=True)
class BeatResult:
    """How one beat ended.

    ``status`` is ``"delivered"``, ``"skipped"`` (``reason`` says why) or ``"failed"``
    (``error`` holds the exception). ``recipient`` is the resolved recipient, when the beat
    got that far.
    """

    status: BeatStatus
    recipient: str | None = None
    reason: str | None = None
    error: BaseException | None = None

    @property
    def summary(self) -> str:
        """``"delivered"``, ``"skipped: <reason>"`` or ``"failed: <ExceptionType>"``."""
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        if self.status == "failed":
            return f"failed: {type(self.error).__name__}"
        return "delivered"


class SkipBeat(Exception):
    """Raise from ``run``, ``deliver`` or ``recipient`` to skip this beat on purpose.

    The scheduler records ``skipped: <reason>`` and logs the reason at ``level`` (default
    WARNING, e.g. "outside the 24-hour window and no template configured"; pass
    ``logging.INFO`` or ``logging.DEBUG`` for routine skips, or when the raiser already logged
    it); it is not counted as a failure.
    """

    def __init__(self, reason: str, *, level: int = logging.WARNING) -> None:
        super().__init__(reason)
        self.reason = reason
        self.level = level


@final
class HeartbeatScheduler(Generic[T]):
    """Every ``period``, ask the agent with ``message`` and deliver its answer.

    :param period: seconds (``int``/``float``) or a ``timedelta``; must be > 0.
    :param message: what the agent is asked at each beat.
    :param run: ``async (message, recipient) -> answer``: asks the agent. An answer that is
        ``None`` or a blank string is not delivered (the beat is ``skipped``).
    :param deliver: ``async (recipient, answer) -> None``: sends the answer.
    :param recipient: the recipient, ``None`` (every beat is skipped until there is one), or
        an ``async () -> str | None`` resolved at each beat.
    :param name: used in log lines and :meth:`state`.
    :param lease: optional ``async () -> bool`` called before each beat (including
        :meth:`beat_once`); ``False`` means another worker beats this period, so this one
        skips (DEBUG log). See :class:`StoreLease`.
    :param clock: monotonic seconds, default :func:`time.monotonic`.
    :param sleep: ``async (seconds) -> None``, default :func:`anyio.sleep`. Tests pass a
        :class:`~wa_agent.testing.clock.FakeClock` and its ``sleep``.
    :param first_beat_after: delay before the first beat (seconds or ``timedelta``, may be
        0); default one period.
    :param wall_clock: aware ``datetime`` now, for :meth:`state`; default UTC now.
    :param timeout: the longest one beat (lease, recipient, ``run`` and ``deliver`` together)
        may take, in real seconds or a ``timedelta``; a beat still running then is cancelled
        and recorded as ``failed: TimeoutError``. Default: one period. ``math.inf``: no limit.

    See the module docstring for the timing model and the outcomes of a beat.
    """

    def __init__(
        self,
        period: Seconds,
        message: str,
        *,
        run: Callable[[str, str], Awaitable[T]],
        deliver: Callable[[str, T], Awaitable[None]],
        recipient: RecipientSource,
        name: str = "heartbeat",
        lease: Callable[[], Awaitable[bool]] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        first_beat_after: Seconds | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        timeout: Seconds | None = None,
    ) -> None:
        self._period = _to_seconds(period, "period")
        if timeout is None:
            self._timeout: float | None = self._period
        elif isinstance(timeout, float) and timeout == math.inf:
            self._timeout = None
        else:
            self._timeout = _to_seconds(timeout, "timeout")
        if not isinstance(message, str) or not message.strip():
            raise ValueError("HeartbeatScheduler needs a non-empty message to ask the agent")
        if not (recipient is None or isinstance(recipient, str) or callable(recipient)):
            raise TypeError(
                "recipient must be a phone number (str), None, or an async callable "
                f"returning one, not {type(recipient).__name__}"
            )
        self._first = (
            self._period
            if first_beat_after is None
            else _to_seconds(first_beat_after, "first_beat_after", allow_zero=True)
        )
        self._message = message
        self._run = run
        self._deliver = deliver
        self._recipient = recipient
        self.name = name
        self._lease = lease
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._sleep: Callable[[float], Awaitable[None]] = (
            sleep if sleep is not None else anyio.sleep
        )
        self._wall: Callable[[], datetime] = wall_clock if wall_clock is not None else _utc_now
        # State (single event loop: plain attributes, no locking needed).
        self._running = False
        self._beating = False
        self._next_due: float | None = None
        self._last_beat_at: datetime | None = None
        self._last_result: BeatResult | None = None
        self._beats = self._failures = self._skipped = self._missed = 0

    def __repr__(self) -> str:
        return (
            f"HeartbeatScheduler(name={self.name!r}, period={self._period!r}s, "
            f"running={self._running})"
        )

    @property
    def period(self) -> timedelta:
        """The period between beats."""
        return timedelta(seconds=self._period)

    @property
    def message(self) -> str:
        """What the agent is asked at each beat."""
        return self._message

    @property
    def timeout(self) -> timedelta | None:
        """The longest a beat may take before it is cancelled (``None``: no limit)."""
        return None if self._timeout is None else timedelta(seconds=self._timeout)

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is running."""
        return self._running

    @property
    def last_result(self) -> BeatResult | None:
        """The outcome of the last completed beat, if any."""
        return self._last_result

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Beat forever on the schedule; returns only by cancellation.

        Calls ``task_status.started()`` once the schedule is set, so
        ``await task_group.start(scheduler.run)`` returns when it is running. A failing beat
        never stops the loop. Raises :class:`RuntimeError` if already running.
        """
        if self._running:
            raise RuntimeError(f"{self.name}: run() is already running; start it only once")
        self._running = True
        period = self._period
        try:
            origin = self._clock() + self._first
            index = 0  # due time of beat k is origin + k * period (no drift from adding)
            self._next_due = origin
            task_status.started()
            logger.info(
                "%s: started, every %.0f s, first beat in %.0f s", self.name, period, self._first
            )
            while True:
                due = origin + index * period
                while (delay := due - self._clock()) > 0:
                    await self._sleep(delay)
                self._next_due = due + period
                started = self._clock()
                await self._beat()
                index += 1
                now = self._clock()
                overrun = now - (origin + index * period)
                if overrun > 0:
                    missed = math.ceil(overrun / period)
                    index += missed
                    self._missed += missed
                    logger.warning(
                        "%s: a beat took %.1f s, longer than the %.1f s period; skipped %d due "
                        "beat(s), next in %.1f s",
                        self.name,
                        now - started,
                        period,
                        missed,
                        origin + index * period - now,
                    )
                self._next_due = origin + index * period
        finally:
            self._running = False
            self._next_due = None
            logger.debug("%s: stopped", self.name)

    async def beat_once(self) -> BeatResult:
        """Run one beat now (for tests and manual triggering) and return its outcome.

        Beats never stack: if another beat (scheduled or manual) is in progress, this one does
        not wait for it; it returns ``skipped`` with reason ``"another beat is in progress"``.
        The ``lease`` is honoured as for scheduled beats. Never raises, except on cancellation.
        """
        return await self._beat()

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot for a health endpoint.

        Keys: ``name``, ``running``, ``in_beat``, ``period_s``, ``next_beat_at`` (ISO wall time
        of the next due beat while :meth:`run` runs, else ``None``), ``last_beat_at`` (ISO wall
        time the last completed beat started), ``last_result`` (:attr:`BeatResult.summary` or
        ``None``), and counters ``beats`` (completed beats of any outcome), ``delivered``,
        ``failures``, ``skipped`` and ``missed`` (due times passed over by slow beats).
        No recipient is included.
        """
        next_at: str | None = None
        if self._running and self._next_due is not None:
            ahead = max(0.0, self._next_due - self._clock())
            next_at = (self._wall() + timedelta(seconds=ahead)).isoformat()
        last = self._last_result
        return {
            "name": self.name,
            "running": self._running,
            "in_beat": self._beating,
            "period_s": self._period,
            "next_beat_at": next_at,
            "last_beat_at": None if self._last_beat_at is None else self._last_beat_at.isoformat(),
            "last_result": None if last is None else last.summary,
            "beats": self._beats,
            "delivered": self._beats - self._failures - self._skipped,
            "failures": self._failures,
            "skipped": self._skipped,
            "missed": self._missed,
        }

    # -- internals ---------------------------------------------------------------------

    async def _beat(self) -> BeatResult:
        started_at = self._wall()
        if self._beating:
            logger.info("%s: beat skipped: %s", self.name, BEAT_IN_PROGRESS)
            result = BeatResult("skipped", reason=BEAT_IN_PROGRESS)
        else:
            # Set and cleared with no await in between the check: on one event loop this is
            # the lock that keeps beats from overlapping.
            self._beating = True
            try:
                result = await self._attempt()
            finally:  # on cancellation too; a cancelled beat is not recorded
                self._beating = False
        self._record(result, started_at)
        return result

    async def _attempt(self) -> BeatResult:
        got: list[str] = []  # the resolved recipient, for the outcome of a beat that raised
        try:
            with anyio.move_on_after(self._timeout):
                return await self._steps(got)
            # Reached only when the timeout cancelled the beat.
            logger.warning(
                "%s: beat cancelled after the %.1f s beat timeout (a hung agent or send?); "
                "the next beat still runs",
                self.name,
                self._timeout,
            )
            error = TimeoutError(f"the beat took longer than {self._timeout} s")
            return BeatResult("failed", _first(got), error=error)
        except SkipBeat as exc:
            logger.log(exc.level, "%s: beat skipped: %s", self.name, exc.reason)
            return BeatResult("skipped", _first(got), reason=exc.reason)
        except OutsideServiceWindow:
            logger.warning(
                "%s: beat skipped: %s; only a template can reach %s now",
                self.name,
                OUTSIDE_WINDOW,
                _mask(_first(got)),
            )
            return BeatResult("skipped", _first(got), reason=OUTSIDE_WINDOW)
        except Exception as exc:  # cancellation is a BaseException and propagates
            logger.warning(
                "%s: beat failed with %s; the next beat still runs",
                self.name,
                type(exc).__name__,
                exc_info=True,
            )
            return BeatResult("failed", _first(got), error=exc)

    async def _steps(self, got: list[str]) -> BeatResult:
        """Lease, recipient, run, deliver; skips return, failures raise."""
        if self._lease is not None and not await self._lease():
            logger.debug("%s: beat skipped: %s", self.name, LEASE_HELD)
            return BeatResult("skipped", reason=LEASE_HELD)
        recipient = await self._resolve_recipient()
        if not recipient:
            logger.info(
                "%s: beat skipped: %s (it is set by configuration or by the first allowed sender)",
                self.name,
                NO_RECIPIENT,
            )
            return BeatResult("skipped", reason=NO_RECIPIENT)
        got.append(recipient)
        answer = await self._run(self._message, recipient)
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            logger.info("%s: beat skipped: %s", self.name, EMPTY_ANSWER)
            return BeatResult("skipped", recipient, reason=EMPTY_ANSWER)
        await self._deliver(recipient, answer)
        logger.info("%s: beat delivered to %s", self.name, _mask(recipient))
        return BeatResult("delivered", recipient)

    async def _resolve_recipient(self) -> str | None:
        source = self._recipient
        value = await source() if callable(source) else source
        if value is not None and not isinstance(value, str):
            raise TypeError(f"the recipient source returned {type(value).__name__}, not str")
        return value

    def _record(self, result: BeatResult, started_at: datetime) -> None:
        self._beats += 1
        if result.status == "failed":
            self._failures += 1
        elif result.status == "skipped":
            self._skipped += 1
        self._last_result = result
        self._last_beat_at = started_at


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """Heartbeat settings read from an agent by :func:`heartbeat_from_agent`."""

    period: timedelta
    message: str

    @property
    def period_s(self) -> float:
        """The period in seconds (what :class:`HeartbeatScheduler` takes, as does ``period``)."""
        return self.period.total_seconds()


def heartbeat_from_agent(agent: Any, *, force: bool = False) -> HeartbeatConfig | None:
    """The heartbeat an agent asks for, or ``None`` when its heartbeat is off.

    With ``force``, the settings are read (with their defaults) even when the agent's own
    ``heartbeat`` flag is off or missing: the host turned the heartbeat on.

    Reads ``heartbeat`` (on when truthy; a method of that name does not count),
    ``heartbeat_period`` in **minutes** (default :data:`DEFAULT_HEARTBEAT_PERIOD_MINUTES`) and
    ``heartbeat_message`` (default :data:`DEFAULT_HEARTBEAT_MESSAGE` when unset or blank)
    from the agent or the object it wraps (``.wrapped``), as the seed's autonomous agent and
    :class:`~wa_agent.LLMAgent` carry them. Raises :class:`ValueError`/:class:`TypeError` for
    a period that is not a positive number of minutes or a message that is not a string.
    """
    enabled = agent_attribute(agent, "heartbeat", False)
    if not force and (callable(enabled) or not enabled):
        return None
    minutes = agent_attribute(agent, "heartbeat_period", None)
    if minutes is None:
        minutes = DEFAULT_HEARTBEAT_PERIOD_MINUTES
    period = timedelta(minutes=_to_seconds(minutes, "heartbeat_period (minutes)"))
    message = agent_attribute(agent, "heartbeat_message", None)
    if message is None or (isinstance(message, str) and not message.strip()):
        message = DEFAULT_HEARTBEAT_MESSAGE
    if not isinstance(message, str):
        raise TypeError(f"heartbeat_message must be a str, not {type(message).__name__}")
    return HeartbeatConfig(period=period, message=message)


def within_service_window(
    last_inbound: datetime | None,
    now: datetime | None = None,
    *,
    margin: timedelta = timedelta(0),
) -> bool:
    """Whether free-form messages may still be sent to a user who last wrote at ``last_inbound``.

    The window lasts :data:`SERVICE_WINDOW` (24 h) from the user's last message and is closed
    *at* 24 h exactly. ``None`` (the user never wrote) is outside. ``margin`` closes the window
    that much earlier, e.g. to allow for the time the agent takes before the send. Datetimes
    must be timezone-aware (:class:`ValueError` otherwise); ``now`` defaults to UTC now.
    """
    if last_inbound is None:
        return False
    now = _utc_now() if now is None else now
    if last_inbound.tzinfo is None or now.tzinfo is None:
        raise ValueError("within_service_window needs timezone-aware datetimes (e.g. UTC)")
    return now - last_inbound < SERVICE_WINDOW - margin


class _LeaseStore(Protocol):
    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool: ...

    async def release_lease(self, name: str, owner: str) -> None: ...


@final
class StoreLease:
    """The ``lease`` callable for :class:`HeartbeatScheduler`, backed by a store's named lease.

    Each call takes or renews the lease ``name`` for this process (``owner``, default
    ``"<host>:<pid>:<random>"``) for ``ttl`` seconds and answers whether it holds it. With a
    shared store (Redis, one SQLite file), only the holder beats; if it dies, its lease
    expires and the next worker to reach a due beat takes over. Choose ``ttl`` longer than
    the period plus the longest beat (two periods is a good default), so the holder keeps it
    between its beats; takeover then happens within ``ttl`` plus one period.
    :meth:`release` on shutdown hands over at once.
    """

    def __init__(
        self, store: _LeaseStore, name: str, *, ttl: Seconds, owner: str | None = None
    ) -> None:
        self._store = store
        self.name = name
        self.ttl = _to_seconds(ttl, "ttl")
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def __repr__(self) -> str:
        return f"StoreLease(name={self.name!r}, owner={self.owner!r}, ttl={self.ttl!r})"

    async def __call__(self) -> bool:
        """Take or renew the lease; ``True`` if this owner holds it."""
        return await self._store.acquire_lease(self.name, self.owner, self.ttl)

    async def release(self) -> None:
        """Give the lease up if this owner holds it."""
        await self._store.release_lease(self.name, self.owner)


def _to_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{what} must be a number or a timedelta, not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be finite and {bound}, got {value!r}")
    return seconds


def _first(items: list[str]) -> str | None:
    return items[0] if items else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _mask(number: str | None) -> str:
    """A phone number for logs: only its last four digits."""
    if not number:
        return "<none>"
    return "***" + number[-4:]
