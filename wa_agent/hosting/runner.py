"""Asking the agent: one place for the timeout, the typing indicator and failures.

Every agent call of an interface goes through :class:`AgentRunner`: a user's message
(:meth:`AgentRunner.answer`: a failure becomes the apology), the greeting after a reset
and the heartbeat (:meth:`AgentRunner.run`: the caller decides what a failure means).
While the agent works on a user's message, :class:`TypingKeeper` keeps WhatsApp's typing
indicator showing (Meta hides it after 25 s) with one task for all running agents.

Failures are logged with the exception's type and where it was raised; its text, which may
quote the user's message, only at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..agents import AgentReply, AgentRequest
from ..numbers import mask_number

if TYPE_CHECKING:
    from ..agents import Agent
    from .observers import Listeners, Stats
    from .tasks import TaskSet

__all__ = ["AgentRunner", "TypingKeeper", "describe_failure"]

logger = logging.getLogger("wa_agent.interface")

TYPING_REFRESH = 20.0  # Meta hides the typing indicator after 25 s
TYPING_TICK = 1.0  # how often the typing keeper looks for due renewals


def describe_failure(exc: BaseException) -> str:
    """An exception for an ERROR log: its type and the stack, without its message."""
    stack = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    return f"{type(exc).__name__}\n{stack}" if stack else type(exc).__name__


class Typing:
    """One running agent's typing indicator (renewed by the :class:`TypingKeeper`)."""

    __slots__ = ("_keeper", "due", "message_id", "task")

    def __init__(self, keeper: TypingKeeper, message_id: str) -> None:
        self._keeper = keeper
        self.message_id = message_id
        self.task: asyncio.Task[Any] | None = None
        self.due = time.monotonic() + TYPING_REFRESH

    def cancel(self) -> None:
        self._keeper.active.discard(self)
        if self.task is not None:
            self.task.cancel()


class TypingKeeper:
    """Renews the typing indicator of every running agent whose renewal is due, with one
    task that runs only while agents do (no timer or task per message: thousands of agents
    in flight stay cheap for the garbage collector)."""

    def __init__(self, tasks: TaskSet, refresh: Callable[[str], Awaitable[object]]) -> None:
        self._tasks = tasks
        self._refresh = refresh
        self.active: set[Typing] = set()
        self.task: asyncio.Task[None] | None = None

    def start(self, message_id: str) -> Typing:
        """Keep the indicator for ``message_id`` showing until the returned handle is
        cancelled (the first indicator was sent with the read receipt)."""
        entry = Typing(self, message_id)
        self.active.add(entry)
        if self.task is None:
            self.task = self._tasks.spawn(self._loop(), "typing-keeper")
        return entry

    def clear(self) -> None:
        self.active.clear()
        self.task = None

    async def _loop(self) -> None:
        try:
            while self.active:
                await asyncio.sleep(TYPING_TICK)
                now = time.monotonic()
                for entry in list(self.active):
                    if entry.due <= now and (entry.task is None or entry.task.done()):
                        entry.due = now + TYPING_REFRESH
                        entry.task = self._tasks.spawn(self._renew(entry.message_id), "typing")
        finally:
            if self.task is asyncio.current_task():
                self.task = None

    async def _renew(self, message_id: str) -> None:
        try:
            await self._refresh(message_id)
        except Exception:
            logger.debug("could not renew the typing indicator", exc_info=True)


class AgentRunner:
    """Runs the interface's agent under ``agent_timeout`` (see the module docstring)."""

    def __init__(
        self,
        agent: Agent,
        *,
        timeout: float | None,
        apology: str,
        stats: Stats,
        listeners: Listeners,
        typing: TypingKeeper,
    ) -> None:
        self.agent = agent
        self.timeout = timeout
        self.apology = apology
        self.stats = stats
        self.listeners = listeners
        self.typing = typing

    async def run(self, request: AgentRequest, *, typing_for: str | None = None) -> AgentReply:
        """The agent's reply; raises what the agent raises, or ``TimeoutError``. With
        ``typing_for`` (a message id) the typing indicator is kept up meanwhile."""
        typing = self.typing.start(typing_for) if typing_for else None
        try:
            # asyncio.timeout, not wait_for: no extra task per message (fewer objects for
            # the GC to walk with thousands of agents in flight)
            async with asyncio.timeout(self.timeout):
                return await self.agent.answer(request)
        finally:
            if typing is not None:
                typing.cancel()

    async def answer(self, request: AgentRequest, message_id: str) -> tuple[AgentReply, bool]:
        """The agent's reply to a user's message, and whether it succeeded: on a failure
        (or time-out) the user gets :attr:`apology` and the listeners an error."""
        try:
            return await self.run(request, typing_for=message_id), True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.agent_errors += 1
            logger.error(
                "agent failed on message %s from %s: %s",
                message_id,
                mask_number(request.sender),
                describe_failure(exc),
            )
            logger.debug("agent failure on message %s", message_id, exc_info=True)
            self.listeners.error(request.sender, f"agent error: {type(exc).__name__}")
            return AgentReply(text=self.apology), False
