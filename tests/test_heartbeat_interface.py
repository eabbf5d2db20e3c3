"""The heartbeat inside :class:`~wa_agent.WhatsAppInterface`, against real parts.

Bots run in the :class:`~wa_agent.testing.Simulator` (Cloud API emulator and webhook server
on loopback) with real stores (SQLite files in ``tmp_path``, a real ``redis-server``). Beats
are triggered with ``beat_once()`` (the interfaces' own schedulers run with the default
30-minute period and never fire on their own) or with periods of a fraction of a second.
The scale-out test runs two worker processes (``tests/heartbeat_process.py``) on one Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from wa_agent.agents import AgentReply, AgentRequest
from wa_agent.exceptions import ConfigurationError
from wa_agent.heartbeat import (
    DEFAULT_HEARTBEAT_MESSAGE,
    EMPTY_ANSWER,
    NO_RECIPIENT,
    OUTSIDE_WINDOW,
    HeartbeatScheduler,
)
from wa_agent.interface import NOT_ALLOWED_MESSAGE, WhatsAppInterface
from wa_agent.server import BackgroundServer
from wa_agent.testing import webhooks
from wa_agent.testing.emulator import CloudAPIEmulator, SentMessage
from wa_agent.testing.simulator import Simulator

ALICE = "15551230001"
BOB = "15551230002"
MALLORY = "15559990000"  # never in the whitelist
BOSS = "15557770000"  # an explicit heartbeat_recipient
TEMPLATE = {"name": "check_in", "language": "en_US"}
IFACE_LOG = "wa_agent.interface"
REPO = Path(__file__).resolve().parent.parent


class SeedAgent:
    """Shaped like the seed's autonomous agent: ``do_async(task)`` plus heartbeat settings
    as attributes (``heartbeat_period`` in minutes)."""

    heartbeat = True
    heartbeat_message = "Anything new to tell the user?"

    def __init__(self, period_minutes: float = 30) -> None:
        self.heartbeat_period = period_minutes
        self.tasks: list[str] = []
        self.beats = 0

    async def do_async(self, task: str) -> str:
        self.tasks.append(task)
        if task.endswith(self.heartbeat_message):
            self.beats += 1
            return f"Check-in #{self.beats}"
        return f"echo: {task}"


class ChatAgent:
    """An ``answer(request)`` agent that records every request it gets."""

    heartbeat = True
    heartbeat_message = "HEARTBEAT"

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.hang_beats: set[int] = set()  # 1-based heartbeat calls that never answer

    async def answer(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        if request.purpose == "heartbeat":
            n = len(self.heartbeats)
            if n in self.hang_beats:
                await anyio.sleep_forever()
            return AgentReply(text=f"**beat {n}**")
        return AgentReply(text=f"you said {request.text}")

    @property
    def heartbeats(self) -> list[AgentRequest]:
        return [r for r in self.requests if r.purpose == "heartbeat"]


def _texts(emulator: CloudAPIEmulator, to: str) -> list[str]:
    return emulator.texts_to(to)


def _templates(emulator: CloudAPIEmulator, to: str) -> list[SentMessage]:
    return [m for m in emulator.sent_to(to) if m.type == "template"]


def _scheduler(sim: Simulator) -> HeartbeatScheduler[Any]:
    assert sim.interface.heartbeat is not None, "the interface built no heartbeat"
    return sim.interface.heartbeat


async def _set_last_inbound(iface: WhatsAppInterface, number: str, ago: timedelta) -> None:
    await iface.store.touch_inbound(iface.name, number, datetime.now(UTC) - ago)


@pytest.fixture
async def chat_agent() -> ChatAgent:
    return ChatAgent()


# -- the seed's example ------------------------------------------------------------------


async def test_seed_shaped_agent_beats_on_its_own_against_the_emulator() -> None:
    """An agent object with heartbeat=True, heartbeat_period (minutes) and heartbeat_message
    gets a heartbeat from the interface with no other configuration: once a user has
    written, beats arrive at the emulator every period as text messages to that user."""
    agent = SeedAgent(period_minutes=0.25 / 60)  # 0.25 s
    async with Simulator(agent) as sim:
        assert _scheduler(sim).period == timedelta(seconds=0.25)
        assert _scheduler(sim).message == SeedAgent.heartbeat_message
        await sim.user(ALICE).send_text("hello")
        await sim.emulator.wait_for_messages(3, to=ALICE, timeout=10)
        await sim.settle()
    texts = _texts(sim.emulator, ALICE)  # a beat may overtake the reply: order not checked
    assert texts.count("echo: hello") == 1
    assert [t for t in texts if t != "echo: hello"][:2] == ["Check-in #1", "Check-in #2"]
    beats = [t for t in agent.tasks if t != "hello"]
    assert beats[:2] == [SeedAgent.heartbeat_message] * 2  # TASK mode: the bare message


async def test_beat_once_with_the_seed_agent_and_a_30_minute_period() -> None:
    """With the seed's 30-minute period nothing fires by itself; beat_once() asks the agent
    with heartbeat_message and delivers the answer to the first sender."""
    agent = SeedAgent()
    async with Simulator(agent) as sim:
        scheduler = _scheduler(sim)
        assert scheduler.period == timedelta(minutes=30)
        await sim.user(ALICE).ask("hi")
        result = await scheduler.beat_once()
        assert (result.status, result.recipient) == ("delivered", ALICE)
        await sim.settle()
    assert _texts(sim.emulator, ALICE) == ["echo: hi", "Check-in #1"]


# -- recipient -------------------------------------------------------------------------


async def test_explicit_recipient_wins_over_the_first_sender(chat_agent: ChatAgent) -> None:
    """heartbeat_recipient is used even after another user wrote first."""
    async with Simulator(chat_agent, heartbeat_recipient=f"+{BOSS[:4]} {BOSS[4:]}") as sim:
        await _set_last_inbound(sim.interface, BOSS, timedelta(hours=1))
        await sim.user(ALICE).ask("hi")
        result = await _scheduler(sim).beat_once()
        await sim.settle()
    assert (result.status, result.recipient) == ("delivered", BOSS)
    assert _texts(sim.emulator, BOSS) == ["*beat 1*"]  # Markdown converted
    assert _texts(sim.emulator, ALICE) == ["you said hi"]


async def test_a_handed_off_recipient_gets_no_beat_until_resumed(chat_agent: ChatAgent) -> None:
    """While a person has the recipient's conversation (handoff) the beat is skipped
    without asking the agent; after the resume it is delivered again."""
    async with Simulator(chat_agent, heartbeat_recipient=BOSS) as sim:
        await _set_last_inbound(sim.interface, BOSS, timedelta(hours=1))
        await sim.interface.handoff(BOSS)
        skipped = await _scheduler(sim).beat_once()
        await sim.interface.resume(BOSS)
        delivered = await _scheduler(sim).beat_once()
        await sim.settle()
    assert (skipped.status, skipped.reason) == (
        "skipped",
        "the conversation is handed off to a person",
    )
    assert delivered.status == "delivered"
    assert len(chat_agent.heartbeats) == 1
    assert _texts(sim.emulator, BOSS) == ["*beat 1*"]


async def test_no_recipient_yet_skips_without_asking_the_agent(chat_agent: ChatAgent) -> None:
    """Before anyone writes there is no recipient: the beat is skipped and the agent is
    not asked."""
    async with Simulator(chat_agent) as sim:
        result = await _scheduler(sim).beat_once()
    assert (result.status, result.reason) == ("skipped", NO_RECIPIENT)
    assert chat_agent.requests == [] and sim.emulator.messages == []


async def test_first_allowed_sender_is_persisted_and_survives_a_restart(
    tmp_path: Path, chat_agent: ChatAgent
) -> None:
    """With a whitelist, a refused sender writing first is answered 'This operation not
    allowed' and does not become the recipient; the first allowed sender does, and a new
    interface on the same SQLite file (a restart) still beats to that sender — never to the
    refused one."""
    db = tmp_path / "bot.sqlite"
    options: dict[str, Any] = {"storage": db, "allowed_numbers": [f"+{ALICE}", BOB]}
    async with Simulator(chat_agent, **options) as sim:
        assert (await sim.user(MALLORY).ask("let me in")).text == NOT_ALLOWED_MESSAGE
        assert await _scheduler(sim).beat_once() is not None
        assert sim.interface.store is not None
        assert await sim.interface.store.get_heartbeat_recipient(sim.interface.name) is None
        await sim.user(ALICE).ask("hi")
        await sim.user(BOB).ask("hi")
        result = await _scheduler(sim).beat_once()
        await sim.settle()
        first = sim.emulator
    assert result.recipient == ALICE
    assert _texts(first, ALICE) == ["you said hi", "*beat 1*"]
    assert _texts(first, BOB) == ["you said hi"]
    assert _texts(first, MALLORY) == [NOT_ALLOWED_MESSAGE]

    async with Simulator(chat_agent, **options) as sim:  # restart: nobody writes
        result = await _scheduler(sim).beat_once()
        await sim.settle()
    assert (result.status, result.recipient) == ("delivered", ALICE)
    assert _texts(sim.emulator, ALICE) == ["*beat 2*"]
    assert _texts(sim.emulator, MALLORY) == []


async def test_refused_sender_alone_never_becomes_the_recipient(chat_agent: ChatAgent) -> None:
    """When only a refused number writes, beats stay skipped for lack of a recipient and
    nothing is ever sent to it but the refusal."""
    async with Simulator(chat_agent, allowed_numbers=[ALICE]) as sim:
        mallory = sim.user(MALLORY)
        for _ in range(2):
            assert (await mallory.ask("hello?")).text == NOT_ALLOWED_MESSAGE
            result = await _scheduler(sim).beat_once()
            assert (result.status, result.reason) == ("skipped", NO_RECIPIENT)
        await sim.settle()
    assert _texts(sim.emulator, MALLORY) == [NOT_ALLOWED_MESSAGE] * 2
    assert chat_agent.heartbeats == []


async def test_stored_recipient_no_longer_allowed_is_replaced(
    tmp_path: Path, chat_agent: ChatAgent
) -> None:
    """A recipient stored before the whitelist changed is ignored (no beat to a number that
    is not allowed) and the next allowed sender replaces it."""
    db = tmp_path / "bot.sqlite"
    async with Simulator(chat_agent, storage=db) as sim:
        await sim.user(MALLORY).ask("hi")  # allowed while there is no whitelist
        await sim.settle()
    async with Simulator(chat_agent, storage=db, allowed_numbers=[ALICE]) as sim:
        skipped = await _scheduler(sim).beat_once()
        await sim.user(ALICE).ask("hi")
        delivered = await _scheduler(sim).beat_once()
        await sim.settle()
    assert (skipped.status, skipped.reason) == ("skipped", NO_RECIPIENT)
    assert (delivered.status, delivered.recipient) == ("delivered", ALICE)
    assert _texts(sim.emulator, MALLORY) == []


def test_explicit_recipient_outside_the_whitelist_is_refused() -> None:
    """heartbeat_recipient must be an allowed number (it could never receive otherwise)."""
    with pytest.raises(ConfigurationError, match="allowed_numbers"):
        WhatsAppInterface(ChatAgent(), allowed_numbers=[ALICE], heartbeat_recipient=MALLORY)


# -- 24-hour window -----------------------------------------------------------------------


async def test_outside_the_window_the_template_is_sent_and_the_agent_not_asked(
    chat_agent: ChatAgent,
) -> None:
    """A recipient who last wrote 25 h ago gets the configured template, not free text;
    the agent is not asked for text that could not be sent."""
    async with Simulator(chat_agent, heartbeat_recipient=BOSS, heartbeat_template=TEMPLATE) as sim:
        await _set_last_inbound(sim.interface, BOSS, timedelta(hours=25))
        result = await _scheduler(sim).beat_once()
        await sim.settle()
    assert (result.status, result.recipient) == ("delivered", BOSS)
    [template] = _templates(sim.emulator, BOSS)
    assert template.content["name"] == "check_in"
    assert template.content["language"] == {"code": "en_US"}
    assert _texts(sim.emulator, BOSS) == [] and chat_agent.heartbeats == []


async def test_outside_the_window_without_template_skips_with_one_warning(
    chat_agent: ChatAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a template a beat outside the window sends nothing and says why in one
    WARNING (the 24 h rule and the missing template); while the window stays closed later
    beats say it at INFO only."""
    async with Simulator(chat_agent, heartbeat_recipient=BOSS) as sim:
        await _set_last_inbound(sim.interface, BOSS, timedelta(hours=30))
        with caplog.at_level(logging.DEBUG):
            first = await _scheduler(sim).beat_once()
            second = await _scheduler(sim).beat_once()
    assert first.status == second.status == "skipped"
    assert first.reason == OUTSIDE_WINDOW and first.recipient == BOSS
    assert sim.emulator.messages == [] and chat_agent.heartbeats == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert "24 hours" in text and "heartbeat_template" in text and "131047" in text
    assert BOSS not in text  # masked
    assert any(
        r.levelno == logging.INFO and "heartbeat_template" in r.getMessage() for r in caplog.records
    )


async def test_recipient_who_never_wrote_is_outside_the_window(chat_agent: ChatAgent) -> None:
    """An explicit recipient with no inbound message at all is treated as outside the
    window (no free text)."""
    async with Simulator(chat_agent, heartbeat_recipient=BOSS) as sim:
        result = await _scheduler(sim).beat_once()
    assert (result.status, result.reason) == ("skipped", OUTSIDE_WINDOW)
    assert sim.emulator.messages == []


@pytest.mark.parametrize("template", [TEMPLATE, None], ids=["template", "no-template"])
async def test_131047_from_the_api_is_handled_like_a_closed_window(
    chat_agent: ChatAgent, template: dict[str, str] | None, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store thinks the window is open but the Cloud API answers 131047, the
    beat falls back to the template if one is configured, else is skipped with a WARNING
    naming 131047; the text is not retried."""
    async with Simulator(chat_agent, heartbeat_template=template) as sim:
        await sim.user(ALICE).ask("hi")
        sim.emulator.fail_next(1, 131047)
        with caplog.at_level(logging.INFO):
            result = await _scheduler(sim).beat_once()
        await sim.settle()
    texts = _texts(sim.emulator, ALICE)
    assert texts == ["you said hi"]  # the failed text was not resent
    if template:
        assert result.status == "delivered"
        assert [t.content["name"] for t in _templates(sim.emulator, ALICE)] == ["check_in"]
    else:
        assert (result.status, result.reason) == ("skipped", OUTSIDE_WINDOW)
        assert _templates(sim.emulator, ALICE) == []
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and r.name == IFACE_LOG
        ]
        assert len(warnings) == 1 and "131047" in warnings[0]


async def test_131047_reported_as_a_failed_status_sends_the_template(
    chat_agent: ChatAgent,
) -> None:
    """Meta usually reports 131047 later, as a ``failed`` status of the sent text: for a
    heartbeat message the template is then sent (once, even if the status is redelivered)."""
    async with Simulator(chat_agent, heartbeat_template=TEMPLATE, statuses=False) as sim:
        await sim.user(ALICE).ask("hi")
        assert (await _scheduler(sim).beat_once()).status == "delivered"
        beat = sim.emulator.sent_to(ALICE)[-1]
        assert beat.text == "*beat 1*"
        failed = webhooks.status_item(
            beat.wamid,
            "failed",
            ALICE,
            errors=[
                {
                    "code": 131047,
                    "title": "Re-engagement message",
                    "message": "Re-engagement message",
                    "error_data": {"details": "24 h"},
                }
            ],
        )
        await sim.deliver(webhooks.envelope(statuses=[failed]), times=2, concurrently=False)
        await sim.emulator.wait_for_messages(3, to=ALICE)
        await sim.settle()
    assert [m.type for m in sim.emulator.sent_to(ALICE)] == ["text", "text", "template"]


# -- CHAT mode ------------------------------------------------------------------------------


async def test_chat_mode_beats_use_and_extend_the_recipient_history(
    chat_agent: ChatAgent,
) -> None:
    """In CHAT mode a beat sees the recipient's conversation, and its own text joins it:
    the next beat (and the user's next message) see what the heartbeat said. Another user's
    history is untouched."""
    async with Simulator(chat_agent, mode="chat") as sim:
        await sim.user(ALICE).ask("my cat is ill")
        await sim.user(BOB).ask("bob here")
        scheduler = _scheduler(sim)
        await scheduler.beat_once()
        await scheduler.beat_once()
        await sim.user(ALICE).ask("thanks")
        await sim.settle()
        bob_history = await sim.interface.store.get_history(sim.interface.name, BOB)
    first, second = chat_agent.heartbeats
    assert first.text == ChatAgent.heartbeat_message and first.sender == ALICE
    assert [(t.role, t.text) for t in first.history] == [
        ("user", "my cat is ill"),
        ("assistant", "you said my cat is ill"),
    ]
    assert [(t.role, t.text) for t in second.history][-1] == ("assistant", "**beat 1**")
    last_user_request = chat_agent.requests[-1]
    assert last_user_request.text == "thanks"
    assert [t.text for t in last_user_request.history][-2:] == ["**beat 1**", "**beat 2**"]
    assert [t.text for t in bob_history] == ["bob here", "you said bob here"]


async def test_task_mode_beats_have_no_history(chat_agent: ChatAgent) -> None:
    """In TASK mode the heartbeat request carries no history and nothing is stored."""
    async with Simulator(chat_agent, mode="task") as sim:
        await sim.user(ALICE).ask("hi")
        await _scheduler(sim).beat_once()
        stored = await sim.interface.store.get_history(sim.interface.name, ALICE)
    assert chat_agent.heartbeats[0].history == () and stored == []


async def test_empty_heartbeat_answer_is_skipped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An agent answering a beat with blank text sends nothing; the skip is logged at INFO,
    not WARNING."""

    async def agent(request: AgentRequest) -> str:
        return "   " if request.purpose == "heartbeat" else "ok"

    async with Simulator(agent, heartbeat=True) as sim:
        await sim.user(ALICE).ask("hi")
        with caplog.at_level(logging.INFO):
            result = await _scheduler(sim).beat_once()
        await sim.settle()
    assert (result.status, result.reason) == ("skipped", EMPTY_ANSWER)
    assert _texts(sim.emulator, ALICE) == ["ok"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_heartbeat_images_are_uploaded_and_sent() -> None:
    """A beat answered with text and an image sends both (the image uploaded first), like a
    reply to a message."""
    from wa_agent.demo import make_png

    png = make_png()

    async def agent(request: AgentRequest) -> AgentReply | str:
        if request.purpose == "heartbeat":
            return AgentReply(text="Today's chart", images=[png])
        return "ok"

    async with Simulator(agent, heartbeat=True) as sim:
        await sim.user(ALICE).ask("hi")
        assert (await _scheduler(sim).beat_once()).status == "delivered"
        await sim.settle()
    text, image = sim.emulator.sent_to(ALICE)[1:]
    assert (text.type, text.text) == ("text", "Today's chart")
    assert image.type == "image"
    assert sim.emulator.media[image.content["id"]].data == png


# -- hung agent, health, configuration ------------------------------------------------------


async def test_hung_heartbeat_agent_costs_one_beat_not_all(chat_agent: ChatAgent) -> None:
    """A heartbeat whose agent never answers is cut by the beat timeout (one period) and
    recorded as failed; the following beats are delivered."""
    chat_agent.hang_beats = {1}
    async with Simulator(chat_agent, heartbeat_period=timedelta(seconds=0.3)) as sim:
        await sim.user(ALICE).ask("hi")
        await sim.emulator.wait_for_messages(2, to=ALICE, timeout=10)
        state = _scheduler(sim).state()
        await sim.settle()
    assert state["failures"] >= 1
    assert _scheduler(sim).last_result is not None
    assert _texts(sim.emulator, ALICE)[:2] == ["you said hi", "*beat 2*"]


async def test_health_endpoint_shows_the_heartbeat_state(chat_agent: ChatAgent) -> None:
    """GET /health includes the heartbeat: running, period, the next beat time and the last
    result, and no recipient number."""
    async with Simulator(chat_agent) as sim:
        assert sim.bot_url is not None
        url = f"{sim.bot_url}/whatsapp/health"
        async with httpx.AsyncClient() as client:
            before = (await client.get(url)).json()["heartbeat"]
            await sim.user(ALICE).ask("hi")
            await _scheduler(sim).beat_once()
            response = await client.get(url)
    after = response.json()["heartbeat"]
    assert before["running"] is True and before["last_result"] is None
    assert before["period_s"] == 1800
    assert datetime.fromisoformat(before["next_beat_at"]) > datetime.now(UTC)
    assert after["last_result"] == "delivered" and after["delivered"] == 1
    assert ALICE not in response.text


async def test_interface_options_turn_the_heartbeat_on_for_any_agent() -> None:
    """heartbeat=True with heartbeat_period (minutes or timedelta) and heartbeat_message on
    the interface works for a plain function agent; without them the defaults apply; an
    agent's own settings are overridden."""

    async def fn(request: AgentRequest) -> str:
        return "ok"

    def config(agent: Any, **kw: Any) -> tuple[timedelta, str]:
        iface = WhatsAppInterface(agent, **kw)
        assert iface.heartbeat is not None and not iface.heartbeat.running  # built, not run
        return iface.heartbeat.period, iface.heartbeat.message

    assert config(fn, heartbeat=True) == (timedelta(minutes=30), DEFAULT_HEARTBEAT_MESSAGE)
    assert config(fn, heartbeat_period=5, heartbeat_message="Hi?") == (timedelta(minutes=5), "Hi?")
    assert config(fn, heartbeat=True, heartbeat_period=timedelta(seconds=2))[0] == timedelta(
        seconds=2
    )
    assert config(SeedAgent(), heartbeat_message="Override") == (timedelta(minutes=30), "Override")
    assert WhatsAppInterface(fn).heartbeat is None
    assert WhatsAppInterface(SeedAgent(), heartbeat=False).heartbeat is None


async def test_interface_restarted_in_process_beats_again(chat_agent: ChatAgent) -> None:
    """Stopping an interface stops its heartbeat; starting the same object again runs it
    again (and beats still reach the stored recipient)."""
    iface = WhatsAppInterface(chat_agent, heartbeat=True)
    async with Simulator(iface) as sim:
        await sim.user(ALICE).ask("hi")
        assert iface.heartbeat is not None and iface.heartbeat.running
    assert not iface.heartbeat.running
    async with Simulator(iface) as sim:
        assert iface.heartbeat.running
        result = await iface.heartbeat.beat_once()
        await sim.settle()
    assert (result.status, result.recipient) == ("delivered", ALICE)
    assert _texts(sim.emulator, ALICE) == ["*beat 1*"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"heartbeat": False, "heartbeat_period": 5}, ConfigurationError),
        ({"heartbeat": "yes"}, TypeError),
        ({"heartbeat": True, "heartbeat_period": 0}, ValueError),
        ({"heartbeat": True, "heartbeat_message": "  "}, ValueError),
        ({"heartbeat": True, "heartbeat_period": 1, "heartbeat_lease_ttl": 60}, ConfigurationError),
        ({"heartbeat_template": {"language": "en_US"}}, ConfigurationError),
    ],
)
def test_bad_heartbeat_configuration_is_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Contradictory or invalid heartbeat options fail when the interface is built, not
    at start-up (a lease ttl not longer than the period would let workers beat in turn)."""
    with pytest.raises(error):
        WhatsAppInterface(ChatAgent(), **kwargs)


async def test_passed_in_scheduler_is_run_by_the_interface_or_left_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A HeartbeatScheduler passed as heartbeat= is started and stopped with the interface
    and shown in health; one already running in the caller's task group is left alone
    (no second run(), no error) and still shown."""
    delivered: list[str] = []

    async def run(message: str, recipient: str) -> str:
        return "own beat"

    async def deliver(recipient: str, answer: str) -> None:
        delivered.append(answer)

    def make() -> HeartbeatScheduler[str]:
        return HeartbeatScheduler(3600, "ping", run=run, deliver=deliver, recipient=BOSS)

    async def fn(request: AgentRequest) -> str:
        return "ok"

    own = make()
    async with Simulator(fn, heartbeat=own) as sim:
        assert sim.interface.heartbeat is own and own.running
        assert sim.interface.health()["heartbeat"]["running"] is True
    assert not own.running

    external = make()
    with caplog.at_level(logging.INFO):
        async with anyio.create_task_group() as tg:
            await tg.start(external.run)
            async with Simulator(fn, heartbeat=external) as sim:
                assert sim.interface.health()["heartbeat"]["running"] is True
                assert (await external.beat_once()).status == "delivered"
            assert external.running  # the interface did not stop what it did not start
            tg.cancel_scope.cancel()
    assert delivered == ["own beat"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- two workers sharing Redis -------------------------------------------------------------


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[list[_Worker]]:
    started: list[_Worker] = []
    yield started
    for worker in started:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in started:
        try:
            await asyncio.wait_for(worker.proc.wait(), 10)
        except TimeoutError:
            worker.proc.kill()
            await worker.proc.wait()


async def _spawn(workers: list[_Worker], tmp_path: Path, *args: str) -> _Worker:
    log = tmp_path / f"worker{len(workers)}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.heartbeat_process",
            *args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    worker = _Worker(proc, log)
    workers.append(worker)
    return worker


async def _ready(worker: _Worker) -> None:
    assert worker.proc.stdout is not None
    try:
        line = await asyncio.wait_for(worker.proc.stdout.readline(), 30)
    except TimeoutError:
        line = b""
    assert line.startswith(b"ready"), worker.log.read_text()[-3000:]


def _beats(emulator: CloudAPIEmulator, to: str) -> list[tuple[float, int]]:
    """(time, pid) of every beat accepted for ``to``."""
    return [
        (m.time, int((m.text or "").rsplit(" ", 1)[-1]))
        for m in emulator.sent_to(to)
        if (m.text or "").startswith("beat from ")
    ]


async def test_two_workers_on_redis_beat_once_per_period_and_the_survivor_takes_over(
    redis_url: str, tmp_path: Path, workers: list[_Worker]
) -> None:
    """Two worker processes share one Redis store: together they send about one beat per
    period (each alone would send one, so twice that without the lease). When the worker
    holding the heartbeat is SIGKILLed, the other one takes over (within lease ttl plus one
    period) and carries on."""
    from wa_agent.stores.redis import RedisSessionStore

    period, ttl = 0.5, 1.5
    prefix = f"hb-{uuid.uuid4().hex[:8]}"
    emulator = CloudAPIEmulator(access_token="test-token")
    store = RedisSessionStore(redis_url, prefix=prefix)
    async with store, BackgroundServer(emulator) as server:
        await store.touch_inbound("beats", BOSS, datetime.now(UTC))
        args = (
            "--redis",
            redis_url,
            "--prefix",
            prefix,
            "--emulator",
            server.url,
            "--recipient",
            BOSS,
            "--period",
            str(period),
            "--lease-ttl",
            str(ttl),
        )
        for _ in range(2):
            await _spawn(workers, tmp_path, *args)
        for worker in workers:
            await _ready(worker)
        await emulator.wait_for_messages(1, to=BOSS, timeout=15)

        # Steady state: count beats over a window of several periods.
        start, before = time.time(), len(_beats(emulator, BOSS))
        await asyncio.sleep(6 * period)
        window = time.time() - start
        steady = _beats(emulator, BOSS)[before:]
        periods = window / period
        assert 1 <= len(steady) <= periods + 2, (len(steady), periods, steady)
        holders = {pid for _, pid in steady}
        assert holders <= {w.pid for w in workers}

        # Kill the worker that beat last; the other must take over.
        holder = next(w for w in workers if w.pid == steady[-1][1])
        survivor = next(w for w in workers if w is not holder)
        holder.proc.send_signal(signal.SIGKILL)
        await holder.proc.wait()
        killed_at = time.time()

        async def survivor_beats() -> list[tuple[float, int]]:
            while (
                len(
                    found := [
                        b
                        for b in _beats(emulator, BOSS)
                        if b[1] == survivor.pid and b[0] > killed_at
                    ]
                )
                < 3
            ):
                await asyncio.sleep(0.05)
            return found

        # A generous liveness bound, not a timing assertion: ttl + period plus slack.
        taken = await asyncio.wait_for(survivor_beats(), ttl + period + 10)
        takeover = taken[0][0] - killed_at
        print(
            f"\nsteady: {len(steady)} beats in {periods:.1f} periods from "
            f"{len(holders)} worker(s); takeover after SIGKILL: {takeover:.2f} s "
            f"(ttl {ttl} s + period {period} s)"
        )
    late = [b for b in _beats(emulator, BOSS) if b[0] > killed_at]
    assert {pid for _, pid in late} == {survivor.pid}
