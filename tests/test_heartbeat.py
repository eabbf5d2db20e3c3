"""HeartbeatScheduler, the 24-hour window helper, StoreLease and heartbeat_from_agent.

Scheduled runs use a FakeClock: time moves only when the scheduler sleeps, so no test waits
for real time. ``VirtualRun`` stops ``run()`` at the first sleep after a condition holds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from wa_agent.exceptions import OutsideServiceWindow
from wa_agent.heartbeat import (
    BEAT_IN_PROGRESS,
    DEFAULT_HEARTBEAT_MESSAGE,
    EMPTY_ANSWER,
    LEASE_HELD,
    NO_RECIPIENT,
    OUTSIDE_WINDOW,
    SERVICE_WINDOW,
    BeatResult,
    HeartbeatConfig,
    HeartbeatScheduler,
    SkipBeat,
    StoreLease,
    heartbeat_from_agent,
    within_service_window,
)
from wa_agent.testing.clock import FAKE_EPOCH, FakeClock

USER = "15550001234"
LOGGER = "wa_agent.heartbeat"


class Agent:
    """Stand-in run/deliver pair that records what happened and when (virtual time)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.asked: list[tuple[float, str, str]] = []
        self.delivered: list[tuple[float, str, str]] = []
        self.fail_run: set[int] = set()  # 1-based call numbers of run() that raise
        self.run_takes: dict[int, float] = {}  # call number -> virtual seconds it lasts

    async def run(self, message: str, recipient: str) -> str:
        n = len(self.asked) + 1
        self.asked.append((self.clock(), message, recipient))
        if n in self.run_takes:
            await self.clock.sleep(self.run_takes[n])
        if n in self.fail_run:
            raise RuntimeError(f"agent broke on call {n}")
        return f"answer {n}"

    async def deliver(self, recipient: str, answer: str) -> None:
        self.delivered.append((self.clock(), recipient, answer))


class VirtualRun:
    """Runs ``scheduler.run()`` on a FakeClock until ``until()`` holds at a sleep."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.until: Callable[[], bool] = lambda: False
        self.scope: anyio.CancelScope | None = None

    async def sleep(self, seconds: float) -> None:
        if self.until() and self.scope is not None:
            self.scope.cancel()
        if len(self.clock.sleeps) > 500:
            raise AssertionError("runaway schedule: the stop condition never held")
        await self.clock.sleep(seconds)

    async def run(self, scheduler: HeartbeatScheduler[Any], until: Callable[[], bool]) -> None:
        self.until = until
        with anyio.fail_after(10):  # real-time guard only; nothing here waits for real
            with anyio.CancelScope() as self.scope:
                await scheduler.run()
        assert self.scope.cancelled_caught


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vrun(clock: FakeClock) -> VirtualRun:
    return VirtualRun(clock)


@pytest.fixture
def agent(clock: FakeClock) -> Agent:
    return Agent(clock)


def make(
    agent: Agent, vrun: VirtualRun, period: float | timedelta = 10, **kw: Any
) -> HeartbeatScheduler[str]:
    kw.setdefault("recipient", USER)
    return HeartbeatScheduler(
        period,
        "ping",
        run=agent.run,
        deliver=agent.deliver,
        clock=vrun.clock,
        sleep=vrun.sleep,
        wall_clock=vrun.clock.wall,
        **kw,
    )


# -- timing -----------------------------------------------------------------------------


async def test_beats_fall_on_the_period_grid(agent: Agent, vrun: VirtualRun) -> None:
    """With period p, beats happen at t = p, 2p, 3p and each asks and delivers once."""
    s = make(agent, vrun, 10)
    await vrun.run(s, lambda: len(agent.delivered) >= 3)
    assert [t for t, _, _ in agent.asked] == [10, 20, 30]
    assert [(m, r) for _, m, r in agent.asked] == [("ping", USER)] * 3
    assert agent.delivered == [
        (10, USER, "answer 1"),
        (20, USER, "answer 2"),
        (30, USER, "answer 3"),
    ]
    assert s.state()["beats"] == 3 and s.state()["delivered"] == 3


async def test_period_as_timedelta(agent: Agent, vrun: VirtualRun) -> None:
    """A timedelta period means the same seconds as a number (2 minutes = 120 s)."""
    s = make(agent, vrun, timedelta(minutes=2))
    assert s.period == timedelta(minutes=2) and s.state()["period_s"] == 120
    await vrun.run(s, lambda: len(agent.delivered) >= 2)
    assert [t for t, _, _ in agent.asked] == [120, 240]


async def test_first_beat_after_zero_beats_at_once(agent: Agent, vrun: VirtualRun) -> None:
    """first_beat_after=0 beats immediately, then keeps the period."""
    s = make(agent, vrun, 10, first_beat_after=0)
    await vrun.run(s, lambda: len(agent.delivered) >= 3)
    assert [t for t, _, _ in agent.asked] == [0, 10, 20]


@pytest.mark.parametrize(
    ("period", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (timedelta(0), ValueError),
        ("10", TypeError),
        (True, TypeError),
    ],
)
def test_invalid_period_is_refused(period: Any, error: type[Exception]) -> None:
    """A period that is not a positive finite number or timedelta is refused up front."""

    async def run(message: str, recipient: str) -> str:
        return ""

    async def deliver(recipient: str, answer: str) -> None:
        pass

    with pytest.raises(error):
        HeartbeatScheduler(period, "ping", run=run, deliver=deliver, recipient=USER)


def test_blank_message_and_bad_recipient_are_refused(agent: Agent) -> None:
    """An empty message or a recipient that is neither str, None nor callable is refused."""
    with pytest.raises(ValueError, match="message"):
        HeartbeatScheduler(10, "  ", run=agent.run, deliver=agent.deliver, recipient=USER)
    with pytest.raises(TypeError, match="recipient"):
        HeartbeatScheduler(10, "hi", run=agent.run, deliver=agent.deliver, recipient=123)  # type: ignore[arg-type]


# -- no overlap -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("takes", "times", "missed"),
    [
        (15, [10, 30, 40], 1),  # overruns the 20 s due time: skipped
        (25, [10, 40, 50], 2),  # overruns 20 and 30
        (10, [10, 20, 30], 0),  # ends exactly on the next due time: not late, beats at once
    ],
)
async def test_slow_beat_skips_overrun_due_times_and_warns(
    agent: Agent,
    vrun: VirtualRun,
    caplog: pytest.LogCaptureFixture,
    takes: float,
    times: list[float],
    missed: int,
) -> None:
    """A beat longer than the period never overlaps the next: due times it overran are
    skipped (counted in ``missed``, one WARNING) and the schedule resumes on the grid."""
    caplog.set_level(logging.DEBUG, LOGGER)
    agent.run_takes[1] = takes
    s = make(agent, vrun, 10)
    await vrun.run(s, lambda: len(agent.delivered) >= 3)
    assert [t for t, _, _ in agent.asked] == times
    assert s.state()["missed"] == missed
    overrun_logs = [r for r in caplog.records if "longer than" in r.getMessage()]
    assert len(overrun_logs) == (1 if missed else 0)
    if missed:
        assert overrun_logs[0].levelno == logging.WARNING
        assert f"skipped {missed} due beat(s)" in overrun_logs[0].getMessage()


async def test_beat_once_during_a_beat_is_skipped_not_stacked() -> None:
    """While a beat is in progress, beat_once() does not run a second one: it returns
    skipped ("another beat is in progress") and only the first beat delivers."""
    release, entered = anyio.Event(), anyio.Event()
    delivered: list[str] = []

    async def run(message: str, recipient: str) -> str:
        return "hello"

    async def deliver(recipient: str, answer: str) -> None:
        entered.set()
        await release.wait()
        delivered.append(recipient)

    s = HeartbeatScheduler(10, "ping", run=run, deliver=deliver, recipient=USER)
    results: list[BeatResult] = []

    async def first() -> None:
        results.append(await s.beat_once())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await entered.wait()
            assert s.state()["in_beat"] is True
            second = await s.beat_once()
            release.set()
    assert second == BeatResult("skipped", reason=BEAT_IN_PROGRESS)
    assert results == [BeatResult("delivered", USER)]
    assert delivered == [USER]
    assert s.state()["in_beat"] is False and s.state()["skipped"] == 1


async def test_last_beat_at_is_when_the_beat_started(agent: Agent, vrun: VirtualRun) -> None:
    """last_beat_at is the wall time a beat started, not when it finished."""
    agent.run_takes[1] = 15
    s = make(agent, vrun)
    await s.beat_once()
    assert vrun.clock() == 15
    assert s.state()["last_beat_at"] == FAKE_EPOCH.isoformat()


# -- failures and skips -----------------------------------------------------------------


async def test_failing_beat_is_logged_and_the_next_one_runs(
    agent: Agent, vrun: VirtualRun, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in run() fails that beat only: it is logged at WARNING with the
    traceback, counted as a failure, and the following beats deliver."""
    caplog.set_level(logging.INFO, LOGGER)
    agent.fail_run = {1}
    s = make(agent, vrun, 10)
    await vrun.run(s, lambda: len(agent.delivered) >= 2)
    assert [t for t, _, _ in agent.asked] == [10, 20, 30]
    assert [t for t, _, _ in agent.delivered] == [20, 30]
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert failed[0].exc_info is not None and failed[0].exc_info[0] is RuntimeError
    st = s.state()
    assert (st["beats"], st["failures"], st["delivered"], st["last_result"]) == (
        3,
        1,
        2,
        "delivered",
    )


async def test_failed_result_names_the_exception_and_recipient(
    agent: Agent, vrun: VirtualRun
) -> None:
    """A failing deliver() gives a 'failed' BeatResult carrying the recipient and the error,
    and state() reports 'failed: <ExceptionType>'."""

    async def deliver(recipient: str, answer: str) -> None:
        raise ConnectionError("network down")

    s = HeartbeatScheduler(10, "ping", run=agent.run, deliver=deliver, recipient=USER)
    result = await s.beat_once()
    assert result.status == "failed" and result.recipient == USER
    assert isinstance(result.error, ConnectionError)
    assert result.summary == "failed: ConnectionError"
    assert s.state()["last_result"] == "failed: ConnectionError"
    assert s.state()["failures"] == 1


async def test_no_recipient_skips_without_asking(
    agent: Agent, vrun: VirtualRun, caplog: pytest.LogCaptureFixture
) -> None:
    """With no recipient the beat is skipped, the agent is not asked, and an INFO line says
    there is no recipient yet."""
    caplog.set_level(logging.INFO, LOGGER)
    s = make(agent, vrun, recipient=None)
    result = await s.beat_once()
    assert result == BeatResult("skipped", reason=NO_RECIPIENT)
    assert agent.asked == []
    assert any(r.levelno == logging.INFO and NO_RECIPIENT in r.getMessage() for r in caplog.records)
    assert s.state()["last_result"] == f"skipped: {NO_RECIPIENT}"


async def test_recipient_callable_is_resolved_at_each_beat(agent: Agent, vrun: VirtualRun) -> None:
    """An async recipient source is asked at every beat: None first (skipped), then a number
    that the next beat delivers to."""
    answers: list[str | None] = [None, USER, "15559999999"]

    async def recipient() -> str | None:
        return answers.pop(0)

    s = make(agent, vrun, recipient=recipient)
    await vrun.run(s, lambda: len(agent.delivered) >= 2)
    assert [r for _, _, r in agent.asked] == [USER, "15559999999"]
    assert [t for t, _, _ in agent.asked] == [20, 30]
    st = s.state()
    assert (st["skipped"], st["delivered"]) == (1, 2)


async def test_recipient_source_returning_non_str_fails_the_beat(
    agent: Agent, vrun: VirtualRun
) -> None:
    """A recipient source that returns something other than str/None fails that beat."""

    async def recipient() -> Any:
        return 15550001234

    s = make(agent, vrun, recipient=recipient)
    result = await s.beat_once()
    assert result.status == "failed" and isinstance(result.error, TypeError)
    assert agent.asked == []


async def test_lease_not_held_skips_the_beat(
    agent: Agent, vrun: VirtualRun, caplog: pytest.LogCaptureFixture
) -> None:
    """When the lease says another worker holds it, the beat is skipped at DEBUG and the
    agent is not asked; when it is held, the beat proceeds."""
    caplog.set_level(logging.DEBUG, LOGGER)
    held = [False, True, False, True]

    async def lease() -> bool:
        return held.pop(0)

    s = make(agent, vrun, lease=lease)
    await vrun.run(s, lambda: not held)
    assert [t for t, _, _ in agent.asked] == [20, 40]
    lease_logs = [r for r in caplog.records if LEASE_HELD in r.getMessage()]
    assert len(lease_logs) == 2 and all(r.levelno == logging.DEBUG for r in lease_logs)
    assert s.state()["skipped"] == 2 and s.state()["last_result"] == "delivered"


async def test_lease_error_fails_the_beat(agent: Agent, vrun: VirtualRun) -> None:
    """A lease that raises (e.g. Redis unreachable) fails the beat; nothing is sent."""

    async def lease() -> bool:
        raise OSError("redis down")

    s = make(agent, vrun, lease=lease)
    result = await s.beat_once()
    assert result.status == "failed" and isinstance(result.error, OSError)
    assert agent.asked == []


async def test_skipbeat_and_131047_are_skips_with_a_warning(
    agent: Agent, vrun: VirtualRun, caplog: pytest.LogCaptureFixture
) -> None:
    """SkipBeat from run() and OutsideServiceWindow (131047) from deliver() are recorded as
    skipped with their reason and a WARNING, not as failures."""
    caplog.set_level(logging.INFO, LOGGER)

    async def run(message: str, recipient: str) -> str:
        raise SkipBeat("outside the 24-hour window and no template configured")

    async def deliver(recipient: str, answer: str) -> None:
        raise OutsideServiceWindow("re-engagement", code=131047, http_status=400)

    s1 = HeartbeatScheduler(10, "ping", run=run, deliver=agent.deliver, recipient=USER)
    r1 = await s1.beat_once()
    assert r1 == BeatResult(
        "skipped", USER, reason="outside the 24-hour window and no template configured"
    )
    s2 = HeartbeatScheduler(10, "ping", run=agent.run, deliver=deliver, recipient=USER)
    r2 = await s2.beat_once()
    assert r2 == BeatResult("skipped", USER, reason=OUTSIDE_WINDOW)
    assert s1.state()["failures"] == s2.state()["failures"] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(r.exc_info is None for r in warnings)
    assert "no template configured" in warnings[0].getMessage()


async def test_skipbeat_can_name_its_log_level(caplog: pytest.LogCaptureFixture) -> None:
    """SkipBeat(reason, level=INFO) is logged at INFO instead of WARNING."""
    caplog.set_level(logging.DEBUG, LOGGER)

    async def run(message: str, recipient: str) -> str:
        raise SkipBeat("nothing new", level=logging.INFO)

    async def deliver(recipient: str, answer: str) -> None:
        raise AssertionError("not reached")

    s = HeartbeatScheduler(10, "ping", run=run, deliver=deliver, recipient=USER)
    assert (await s.beat_once()).reason == "nothing new"
    [record] = [r for r in caplog.records if "nothing new" in r.getMessage()]
    assert record.levelno == logging.INFO


@pytest.mark.parametrize("answer", [None, "", "  \n"])
async def test_empty_answer_is_not_delivered(answer: str | None) -> None:
    """An empty answer from the agent is not sent: the beat is skipped."""
    sent: list[str] = []

    async def run(message: str, recipient: str) -> str | None:
        return answer

    async def deliver(recipient: str, text: str | None) -> None:
        sent.append(recipient)

    s = HeartbeatScheduler(10, "ping", run=run, deliver=deliver, recipient=USER)
    assert await s.beat_once() == BeatResult("skipped", USER, reason=EMPTY_ANSWER)
    assert sent == []


async def test_logs_never_show_the_whole_number_or_the_answer(
    agent: Agent, vrun: VirtualRun, caplog: pytest.LogCaptureFixture
) -> None:
    """Log lines mask the recipient to its last four digits and never include the answer."""
    caplog.set_level(logging.DEBUG, LOGGER)
    s = make(agent, vrun)
    assert (await s.beat_once()).status == "delivered"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "***1234" in text
    assert USER not in text and "answer 1" not in text


# -- lifecycle and cancellation ---------------------------------------------------------


async def test_task_status_started_and_state_while_running(agent: Agent, vrun: VirtualRun) -> None:
    """tg.start(run) returns once running; state() then shows running and the next beat's
    wall time; after cancellation running is False and next_beat_at is None."""
    s = make(agent, vrun, 60)
    before = s.state()
    assert before["running"] is False and before["next_beat_at"] is None
    assert before["last_beat_at"] is None and before["last_result"] is None
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(s.run)
            st = s.state()
            assert st["running"] is True and s.running
            assert st["next_beat_at"] == (FAKE_EPOCH + timedelta(seconds=60)).isoformat()
            tg.cancel_scope.cancel()
    assert s.state()["running"] is False and s.state()["next_beat_at"] is None


async def test_state_fields_after_beats(agent: Agent, vrun: VirtualRun) -> None:
    """state() has exactly the documented keys, and after beats at 10 and 20 it reports the
    last beat's start time, its result and the counters."""
    s = make(agent, vrun, 10)
    await vrun.run(s, lambda: len(agent.delivered) >= 2)
    st = s.state()
    assert set(st) == {
        "name",
        "running",
        "in_beat",
        "period_s",
        "next_beat_at",
        "last_beat_at",
        "last_result",
        "beats",
        "delivered",
        "failures",
        "skipped",
        "missed",
    }
    assert st["name"] == "heartbeat" and st["period_s"] == 10.0
    assert st["last_beat_at"] == (FAKE_EPOCH + timedelta(seconds=20)).isoformat()
    assert (st["last_result"], st["beats"], st["delivered"], st["failures"], st["skipped"]) == (
        "delivered",
        2,
        2,
        0,
        0,
    )


async def test_cancel_right_after_start_stops_within_one_tick(
    agent: Agent, vrun: VirtualRun
) -> None:
    """Cancelling the task group right after start stops run() at its first fake sleep:
    no beat runs and the clock advanced at most one tick."""
    s = make(agent, vrun, 10)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(s.run)
            tg.cancel_scope.cancel()
    assert agent.asked == [] and s.state()["beats"] == 0
    assert len(vrun.clock.sleeps) <= 1


async def test_cancel_with_real_time_is_prompt() -> None:
    """With the real clock and a one-hour period, cancellation ends run() at once (the
    real-time bound is only a guard against hanging)."""

    async def run(message: str, recipient: str) -> str:
        raise AssertionError("no beat should run")

    async def deliver(recipient: str, answer: str) -> None:
        raise AssertionError("no beat should run")

    s = HeartbeatScheduler(3600, "ping", run=run, deliver=deliver, recipient=USER)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            await tg.start(s.run)
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    assert not s.running and s.state()["beats"] == 0


async def test_cancel_mid_delivery_is_not_reported_as_delivered(clock: FakeClock) -> None:
    """A beat cancelled while deliver() is in progress is not recorded (never 'delivered'),
    and the scheduler is left idle and stopped."""
    entered = anyio.Event()

    async def run(message: str, recipient: str) -> str:
        return "hello"

    async def deliver(recipient: str, answer: str) -> None:
        entered.set()
        await anyio.sleep_forever()

    s = HeartbeatScheduler(
        10,
        "ping",
        run=run,
        deliver=deliver,
        recipient=USER,
        clock=clock,
        sleep=clock.sleep,
        first_beat_after=0,
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(s.run)
            await entered.wait()
            assert s.state()["in_beat"] is True
            tg.cancel_scope.cancel()
    st = s.state()
    assert (st["beats"], st["delivered"], st["last_result"]) == (0, 0, None)
    assert st["in_beat"] is False and st["running"] is False
    assert s.last_result is None


async def test_run_twice_concurrently_is_refused(agent: Agent, vrun: VirtualRun) -> None:
    """A second run() while one is running raises RuntimeError; run() can start again
    after the first one stopped."""
    s = make(agent, vrun, 10)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(s.run)
            with pytest.raises(RuntimeError, match="already running"):
                await s.run()
            tg.cancel_scope.cancel()
        async with anyio.create_task_group() as tg:
            await tg.start(s.run)
            assert s.running
            tg.cancel_scope.cancel()


# -- 24-hour window ---------------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        (None, False),  # never wrote
        (NOW, True),
        (NOW - SERVICE_WINDOW + timedelta(microseconds=1), True),
        (NOW - SERVICE_WINDOW, False),  # exactly 24 h: closed
        (NOW - SERVICE_WINDOW - timedelta(seconds=1), False),
        (NOW + timedelta(minutes=5), True),  # clock skew: user "in the future" is inside
    ],
)
def test_within_service_window_edges(last: datetime | None, expected: bool) -> None:
    """The window is open for less than 24 h after the last inbound message; at exactly
    24 h, or with no inbound message, it is closed."""
    assert within_service_window(last, NOW) is expected


def test_within_service_window_margin_timezones_and_default_now() -> None:
    """A margin closes the window earlier; any aware timezone works; naive datetimes are
    refused; ``now`` defaults to the current UTC time."""
    last = NOW - timedelta(hours=23, minutes=50)
    assert within_service_window(last, NOW)
    assert not within_service_window(last, NOW, margin=timedelta(minutes=10))
    plus2 = NOW.astimezone(datetime.fromisoformat("2025-01-01T00:00+02:00").tzinfo)
    assert within_service_window(NOW - timedelta(hours=1), plus2)
    with pytest.raises(ValueError, match="timezone-aware"):
        within_service_window(datetime(2025, 6, 1, 11, 0), NOW)
    assert within_service_window(datetime.now(UTC) - timedelta(hours=1))
    assert not within_service_window(datetime.now(UTC) - timedelta(hours=25))


# -- beat timeout -------------------------------------------------------------------------


async def test_hung_beat_is_cut_by_the_timeout_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A beat whose agent never answers is cancelled after ``timeout`` (real seconds),
    recorded as failed with TimeoutError and logged once at WARNING; the next beat runs."""
    calls = 0

    async def run(message: str, recipient: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()
        return "fine"

    delivered: list[str] = []

    async def deliver(recipient: str, answer: str) -> None:
        delivered.append(answer)

    s = HeartbeatScheduler(3600, "ping", run=run, deliver=deliver, recipient=USER, timeout=0.05)
    assert s.timeout == timedelta(seconds=0.05)
    with caplog.at_level(logging.WARNING, LOGGER), anyio.fail_after(5):
        first = await s.beat_once()
        second = await s.beat_once()
    assert first.status == "failed" and isinstance(first.error, TimeoutError)
    assert first.recipient == USER and first.summary == "failed: TimeoutError"
    assert second.status == "delivered" and delivered == ["fine"]
    timeouts = [r for r in caplog.records if "timeout" in r.getMessage()]
    assert len(timeouts) == 1 and timeouts[0].levelno == logging.WARNING
    assert s.state()["failures"] == 1 and s.state()["in_beat"] is False


def test_timeout_defaults_to_one_period_and_inf_means_none(agent: Agent) -> None:
    """Without ``timeout`` a beat may last one period; ``math.inf`` removes the limit;
    zero or negative timeouts are refused."""

    def build(**kw: Any) -> HeartbeatScheduler[str]:
        return HeartbeatScheduler(
            timedelta(minutes=2), "ping", run=agent.run, deliver=agent.deliver, recipient=USER, **kw
        )

    assert build().timeout == timedelta(minutes=2)
    assert build(timeout=math.inf).timeout is None
    assert build(timeout=timedelta(seconds=3)).timeout == timedelta(seconds=3)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            build(timeout=bad)


async def test_skip_raised_inside_the_timeout_keeps_the_recipient() -> None:
    """A SkipBeat raised by deliver() is a skip (not a timeout or failure) and still names
    the resolved recipient."""

    async def run(message: str, recipient: str) -> str:
        return "hello"

    async def deliver(recipient: str, answer: str) -> None:
        raise SkipBeat("not today", level=logging.INFO)

    s = HeartbeatScheduler(60, "ping", run=run, deliver=deliver, recipient=USER)
    result = await s.beat_once()
    assert (result.status, result.recipient, result.reason) == ("skipped", USER, "not today")


# -- configuration from the agent -------------------------------------------------------


def test_heartbeat_from_agent_reads_minutes_and_message() -> None:
    """heartbeat=True with heartbeat_period in minutes and heartbeat_message gives that
    period (minutes, not seconds) and message."""
    agent = SimpleNamespace(heartbeat=True, heartbeat_period=5, heartbeat_message="Any news?")
    assert heartbeat_from_agent(agent) == HeartbeatConfig(timedelta(minutes=5), "Any news?")
    assert heartbeat_from_agent(agent).period_s == 300  # type: ignore[union-attr]
    fractional = SimpleNamespace(heartbeat=True, heartbeat_period=0.5)
    assert heartbeat_from_agent(fractional).period == timedelta(seconds=30)  # type: ignore[union-attr]


def test_heartbeat_from_agent_defaults_and_wrapped_object() -> None:
    """Settings are read from ``.wrapped`` when the adapter lacks them; unset or blank
    period/message fall back to 30 minutes and the default message."""
    adapter = SimpleNamespace(wrapped=SimpleNamespace(heartbeat=True))
    assert heartbeat_from_agent(adapter) == HeartbeatConfig(
        timedelta(minutes=30), DEFAULT_HEARTBEAT_MESSAGE
    )
    blank = SimpleNamespace(heartbeat=True, heartbeat_period=None, heartbeat_message=" ")
    assert heartbeat_from_agent(blank) == HeartbeatConfig(
        timedelta(minutes=30), DEFAULT_HEARTBEAT_MESSAGE
    )


def test_heartbeat_from_agent_off() -> None:
    """No heartbeat attribute, heartbeat=False, or a method named heartbeat means off."""

    async def fn(request: object) -> str:
        return "hi"

    class WithMethod:
        def heartbeat(self) -> None:
            pass

    assert heartbeat_from_agent(fn) is None
    assert heartbeat_from_agent(SimpleNamespace(heartbeat=False, heartbeat_period=5)) is None
    assert heartbeat_from_agent(WithMethod()) is None


def test_heartbeat_from_agent_force_reads_settings_of_an_agent_that_is_off() -> None:
    """With force=True the host turns the heartbeat on: the agent's period and message (or
    the defaults) are read even though its own flag is off or missing."""

    async def fn(request: object) -> str:
        return "hi"

    assert heartbeat_from_agent(fn, force=True) == HeartbeatConfig(
        timedelta(minutes=30), DEFAULT_HEARTBEAT_MESSAGE
    )
    off = SimpleNamespace(heartbeat=False, heartbeat_period=5, heartbeat_message="Hi?")
    assert heartbeat_from_agent(off, force=True) == HeartbeatConfig(timedelta(minutes=5), "Hi?")


@pytest.mark.parametrize(
    ("attrs", "error"),
    [
        ({"heartbeat_period": 0}, ValueError),
        ({"heartbeat_period": -3}, ValueError),
        ({"heartbeat_period": "30"}, TypeError),
        ({"heartbeat_message": 42}, TypeError),
    ],
)
def test_heartbeat_from_agent_refuses_bad_settings(attrs: dict[str, Any], error: type) -> None:
    """A non-positive or non-numeric period, or a non-str message, is refused clearly."""
    with pytest.raises(error):
        heartbeat_from_agent(SimpleNamespace(heartbeat=True, **attrs))


# -- StoreLease ---------------------------------------------------------------------------


class LeaseBoard:
    """Stand-in for the store's named leases, on a FakeClock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.leases: dict[str, tuple[str, float]] = {}

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        holder = self.leases.get(name)
        if holder and holder[0] != owner and holder[1] > self.clock():
            return False
        self.leases[name] = (owner, self.clock() + ttl)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        if self.leases.get(name, ("", 0))[0] == owner:
            del self.leases[name]


async def test_store_lease_elects_one_beater_and_hands_over(clock: FakeClock) -> None:
    """Two schedulers sharing a lease: at each period only the holder delivers; when the
    holder stops renewing, the other takes over after the TTL; release hands over at once."""
    board = LeaseBoard(clock)
    sent: list[str] = []

    def worker(tag: str) -> tuple[HeartbeatScheduler[str], StoreLease]:
        lease = StoreLease(board, "heartbeat:WhatsApp", ttl=timedelta(seconds=20))

        async def run(message: str, recipient: str) -> str:
            return tag

        async def deliver(recipient: str, answer: str) -> None:
            sent.append(answer)

        return HeartbeatScheduler(
            10, "ping", run=run, deliver=deliver, recipient=USER, lease=lease
        ), lease

    (a, lease_a), (b, lease_b) = worker("a"), worker("b")
    assert lease_a.owner != lease_b.owner and lease_a.ttl == 20
    for _ in range(3):  # three periods, both workers beat each period
        await a.beat_once()
        await b.beat_once()
        clock.advance(10)
    assert sent == ["a", "a", "a"]
    clock.advance(25)  # a died: its lease expires
    await b.beat_once()
    assert sent[-1] == "b"
    await lease_b.release()
    await a.beat_once()
    assert sent[-1] == "a"
    assert b.state()["skipped"] == 3 and a.state()["skipped"] == 0


def test_store_lease_validates_ttl() -> None:
    """A lease needs a positive TTL."""
    with pytest.raises(ValueError):
        StoreLease(LeaseBoard(FakeClock()), "x", ttl=0)


def test_fake_clock_basics() -> None:
    """FakeClock starts where told, advances only forward, and maps to a fixed wall time."""
    c = FakeClock(5)
    c.advance(-1)
    assert c() == 5.0 and c.wall() == FAKE_EPOCH + timedelta(seconds=5)
    c.advance(2.5)
    assert c() == 7.5 and repr(c) == "FakeClock(now=7.5)"
