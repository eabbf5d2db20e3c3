"""The interface's heartbeat: whom it writes to, and what it may send.

:class:`HeartbeatWiring` builds (or adopts) the :class:`~wa_agent.HeartbeatScheduler` and
gives it the interface's three callables:

* the **recipient**: the explicit ``heartbeat_recipient``, else the first *allowed*
  contact, remembered in the store so a restart and every worker agree
  (:meth:`HeartbeatWiring.note_contact` is called for every answered message);
* **run**: inside the recipient's 24-hour window the agent is asked (with their history in
  CHAT mode); outside it the agent is not asked and the beat sends ``heartbeat_template``,
  or is skipped with a WARNING when there is none;
* **deliver**: the reply's parts, through the same :class:`~.delivery.Delivery` as every
  reply; a 131047 (window closed meanwhile), synchronous or reported later by a ``failed``
  status, falls back to the template too.

With a shared store the heartbeat holds a lease, so workers beat once per period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..agents import AgentReply, AgentRequest, Turn
from ..events import StatusUpdate
from ..exceptions import WhatsAppAPIError
from ..numbers import mask_number
from .delivery import service_window_open
from .settings import InterfaceMode

if TYPE_CHECKING:
    from ..heartbeat import HeartbeatScheduler, StoreLease
    from ..stores.base import SessionStore
    from .delivery import Delivery
    from .handoff import Handoffs
    from .runner import AgentRunner
    from .settings import InterfaceSettings
    from .tasks import TaskSet

__all__ = ["HeartbeatWiring"]

logger = logging.getLogger("wa_agent.interface")

#: What :meth:`HeartbeatWiring._run` answers (compared by identity) when the beat must send
#: the template instead of asking the agent.
_TEMPLATE_BEAT = AgentReply(text="<heartbeat template>")


class HeartbeatWiring:
    """Connects a heartbeat to one interface (see the module docstring)."""

    def __init__(
        self,
        settings: InterfaceSettings,
        option: object,
        *,
        store: SessionStore,
        runner: AgentRunner,
        delivery: Delivery,
        tasks: TaskSet,
        owner: str,
        handoffs: Handoffs,
    ) -> None:
        from ..heartbeat import HeartbeatScheduler, StoreLease

        self.settings = settings
        self.name = settings.name
        self.store = store
        self.runner = runner
        self.delivery = delivery
        self.tasks = tasks
        self.handoffs = handoffs
        self.scheduler: HeartbeatScheduler[Any] | None = None
        self.lease: StoreLease | None = None
        self._task: asyncio.Task[Any] | None = None
        self._known: str | None = None  # recipient known to be stored
        self._wamids: OrderedDict[str, str] = OrderedDict()  # wamid -> recipient
        self._window_warned: set[str] = set()
        config = settings.heartbeat_config
        if isinstance(option, HeartbeatScheduler):
            self.scheduler = option
        elif config is not None:
            ttl = settings.heartbeat_lease_ttl or max(2 * config.period_s, 30.0)
            self.lease = StoreLease(store, f"heartbeat:{self.name}", ttl=ttl, owner=owner)
            self.scheduler = HeartbeatScheduler(
                config.period,
                config.message,
                run=self._run,
                deliver=self._deliver,
                recipient=self._recipient,
                name=f"{self.name} heartbeat",
                lease=self.lease,
            )

    def start(self) -> None:
        """Run the heartbeat, unless something else already runs it."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        if scheduler.running:
            logger.info(
                "%s is already running elsewhere; interface %r shows its state but "
                "does not run it again",
                scheduler.name,
                self.name,
            )
            return
        self._task = self.tasks.spawn(scheduler.run(), "heartbeat")

    async def stop(self) -> None:
        """Stop beating (before in-flight replies drain) and hand the lease over at once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.release()

    # -- the recipient --------------------------------------------------------------------
    async def note_contact(self, contact: str) -> None:
        """The first allowed contact becomes the recipient, kept in the store so a restart
        and every worker agree. Refused contacts never get here (nor into the store)."""
        settings = self.settings
        if (
            self.scheduler is None
            or settings.heartbeat_recipient
            or self._known
            or not settings.is_allowed(contact)
        ):
            return
        current = await self.store.set_heartbeat_recipient(self.name, contact)
        if not settings.is_allowed(current):  # stored before the whitelist changed
            current = await self.store.set_heartbeat_recipient(self.name, contact, overwrite=True)
        if self._known is None:
            logger.info("heartbeat recipient: %s", mask_number(current))
        self._known = current

    async def _recipient(self) -> str | None:
        if self.settings.heartbeat_recipient:
            return self.settings.heartbeat_recipient
        recipient = await self.store.get_heartbeat_recipient(self.name)
        if recipient is not None and not self.settings.is_allowed(recipient):
            logger.debug(
                "stored heartbeat recipient %s is not allowed; ignored", mask_number(recipient)
            )
            return None
        return recipient

    # -- the 24-hour window ---------------------------------------------------------------
    def _outside_window(self, recipient: str, why: str) -> None:
        """Free text cannot reach ``recipient``: return if a template can be sent instead,
        else skip the beat (WARNING the first time, INFO while the window stays closed)."""
        from ..heartbeat import OUTSIDE_WINDOW, SkipBeat

        if self.settings.heartbeat_template:
            return
        level = logging.INFO if recipient in self._window_warned else logging.WARNING
        self._window_warned.add(recipient)
        logger.log(
            level,
            "heartbeat to %s skipped: %s; WhatsApp then accepts only a template "
            "(131047) and no heartbeat_template is configured",
            mask_number(recipient),
            why,
        )
        raise SkipBeat(OUTSIDE_WINDOW, level=logging.DEBUG)

    # -- a beat ---------------------------------------------------------------------------
    async def _run(self, message: str, recipient: str) -> AgentReply | None:
        """Ask the agent (with the recipient's history in CHAT mode). Outside the 24-hour
        window the agent is not asked: the beat sends the template, or is skipped; while a
        person has the conversation (handoff) the beat is skipped."""
        from ..heartbeat import SkipBeat

        if await self.handoffs.is_active(recipient):
            raise SkipBeat("the conversation is handed off to a person", level=logging.INFO)
        if not await service_window_open(self.store, self.name, recipient):
            self._outside_window(recipient, "the recipient has not written in the last 24 hours")
            return _TEMPLATE_BEAT
        history: tuple[Turn, ...] = ()
        if self.settings.mode is InterfaceMode.CHAT:
            history = tuple(
                await self.store.get_history(self.name, recipient, self.settings.history_limit)
            )
        request = AgentRequest(
            text=message,
            sender=recipient,
            history=history,
            interface=self.name,
            purpose="heartbeat",
        )
        reply = await self.runner.run(request)
        if not (reply.text or "").strip() and not reply.images and not reply.files:
            return None  # the scheduler records "skipped: the agent's answer was empty"
        return reply

    async def _deliver(self, recipient: str, reply: AgentReply) -> None:
        from ..exceptions import OutsideServiceWindow
        from ..heartbeat import EMPTY_ANSWER, SkipBeat

        if reply is _TEMPLATE_BEAT:
            await self._send_template(recipient)
            return
        if not await service_window_open(self.store, self.name, recipient):
            self._outside_window(recipient, "the 24-hour window closed while the agent answered")
            await self._send_template(recipient)
            return
        parts = await self.delivery.parts(reply)
        if not parts:
            raise SkipBeat(EMPTY_ANSWER, level=logging.INFO)
        try:
            wamids = await self.delivery.send_all(recipient, parts)
        except OutsideServiceWindow:
            self._outside_window(
                recipient, "the Cloud API answered 131047 (more than 24 hours since the user wrote)"
            )
            await self._send_template(recipient)
            return
        self._window_warned.discard(recipient)
        for wamid in wamids:
            self._wamids[wamid] = recipient
        while len(self._wamids) > 1000:
            self._wamids.popitem(last=False)
        if self.settings.mode is InterfaceMode.CHAT and (reply.text or "").strip():
            await self.store.append_history(
                self.name, recipient, [Turn(role="assistant", text=reply.text or "")]
            )

    async def _send_template(self, recipient: str) -> None:
        template = self.settings.heartbeat_template
        assert template is not None
        await self.delivery.send_part(recipient, {"type": "template", **template})
        logger.info(
            "heartbeat to %s: outside the 24-hour window, sent template %r instead",
            mask_number(recipient),
            template["name"],
        )

    def on_failed(self, update: StatusUpdate) -> None:
        """A heartbeat text that failed later with 131047 (Meta usually reports it as a
        ``failed`` status): handled like a synchronous 131047."""
        from ..heartbeat import SkipBeat

        recipient = self._wamids.pop(update.id, None)
        if recipient is None or not any(e.code == 131047 for e in update.errors):
            return
        try:
            self._outside_window(recipient, "the Cloud API reported 131047 for the heartbeat")
        except SkipBeat:
            return
        self.tasks.spawn(self._template_later(recipient), "heartbeat-template")

    async def _template_later(self, recipient: str) -> None:
        try:
            await self._send_template(recipient)
        except WhatsAppAPIError as exc:
            logger.warning(
                "could not send the heartbeat template to %s (%s, code %s)",
                mask_number(recipient),
                type(exc).__name__,
                exc.code,
            )
