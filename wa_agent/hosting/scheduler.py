"""Who is answered when: per-contact drains, leases, the sweeper.

Each contact with unanswered inbox items gets one *drain*: a task that takes the contact's
items in arrival order and has them answered, while holding the contact's lease in the
store (one drainer per contact across every process sharing the store, so one user's
replies stay in order even with several workers). Different contacts are drained
concurrently, at most ``max_concurrency`` agents at once.

* :meth:`Scheduler.schedule` is called for every newly recorded message; it is cheap (the
  webhook waits for it): a contact already being drained is only marked *woken*; a new one
  is queued, and a single dispatcher starts queued drains one per
  :class:`~wa_agent._ackgate.AckGate` turn, so a burst of webhooks never waits for them.
* A contact whose send failed transiently backs off (:class:`~.processor.RetryLater`);
  more than ``max_queued_senders`` contacts at once overflow: their items wait in the
  inbox (still acknowledged) until the queue has room.
* The sweeper looks at the inbox every ``sweep_interval`` (and at once when a full queue
  empties): leftovers of a crash or of another process, retries that are due.
* The lease keeper renews the held leases so a slow agent never loses its contact.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from ..numbers import mask_number
from .processor import Interrupted, RetryLater
from .settings import InterfaceMode
from .turns import ReplyOrder, next_chat_turn

if TYPE_CHECKING:
    from .._ackgate import AckGate
    from ..stores.base import InboxItem, SessionStore
    from .intake import Backlog
    from .observers import Stats
    from .processor import Processor
    from .settings import InterfaceSettings
    from .tasks import TaskSet

__all__ = ["Scheduler"]

logger = logging.getLogger("wa_agent.interface")


class Held:
    """A contact lease this process holds (renewed by the lease keeper)."""

    __slots__ = ("lost", "since")

    def __init__(self) -> None:
        self.lost = False
        self.since = time.monotonic()


class Scheduler:
    """Schedules the answering of one interface's contacts (see the module docstring)."""

    def __init__(
        self,
        settings: InterfaceSettings,
        *,
        store: SessionStore,
        backlog: Backlog,
        tasks: TaskSet,
        gate: AckGate,
        stats: Stats,
        owner: str,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self.backlog = backlog
        self.tasks = tasks
        self.gate = gate
        self.stats = stats
        self.owner = owner
        self.processor: Processor | None = None  # set by the interface: answers turns
        self.active = False  # started and not closing
        self.drains: dict[str, asyncio.Task[None]] = {}
        # Contacts whose drain starts next, in order (an ordered set): started one per gate
        # turn by a single dispatcher task, so a burst of webhooks never waits for them.
        self.starting: dict[str, None] = {}
        self.woken: set[str] = set()
        self.backoff: dict[str, float] = {}
        self.held: dict[str, Held] = {}  # contact leases held by this process's drains
        self.overflow = False  # contacts were left in the inbox because the queue was full
        self._dispatcher: asyncio.Task[None] | None = None
        # TASK-mode drains waiting for a turn to end or a new message: woken by schedule()
        self._wakeups: dict[str, asyncio.Future[None]] = {}
        self._newest: dict[str, str] = {}  # contact -> id of the newest item its drain read
        # TASK-mode drains: items recorded for the contact by this process while its drain
        # runs, handed over without a store read (None: something else woke it: read)
        self._arrived: dict[str, list[InboxItem] | None] = {}
        self._sem: asyncio.Semaphore | None = None
        self._sweep_now: asyncio.Event | None = None

    # -- state ----------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Contacts with a drain running or about to start in this process."""
        return len(self.drains) + len(self.starting)

    @property
    def busy(self) -> bool:
        """Whether a contact is being answered, about to be, or was woken for more."""
        return bool(self.drains or self.starting or self.woken)

    @property
    def idle(self) -> bool:
        """Nothing processing, queued, deferred (queue full) or waiting for a retry."""
        return not (self.busy or self.overflow or self.backoff)

    def is_latest(self, contact: str, item_id: str) -> bool:
        """Whether ``item_id`` is the newest message of ``contact`` this process knows of
        (a reply to an older one quotes its message)."""
        return self._newest.get(contact) == item_id and contact not in self.woken

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the sweeper and the lease keeper, and schedule the inbox's leftovers."""
        self._sem = asyncio.Semaphore(self.settings.max_concurrency)
        self._sweep_now = asyncio.Event()
        self.backoff.clear()
        self.overflow = False
        self.active = True
        self.tasks.spawn(self._sweeper(), "sweeper")
        self.tasks.spawn(self._keep_leases(), "leases")
        await self._resume()

    async def stop(self, timeout: float) -> None:
        """Stop taking new work; let running drains finish within ``timeout`` (the rest
        stays in the inbox)."""
        self.active = False
        drains = list(self.drains.values())
        if drains:
            _done, pending = await asyncio.wait(drains, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "shutdown: %d sender(s) still busy after %.1f s; their "
                    "messages stay in the inbox",
                    len(pending),
                    timeout,
                )
                await asyncio.gather(*pending, return_exceptions=True)

    def clear(self) -> None:
        """Forget everything (after the interface's tasks were cancelled)."""
        self.drains.clear()
        self.starting.clear()
        self._wakeups.clear()
        self._dispatcher = None

    # -- scheduling -----------------------------------------------------------------------
    def schedule(self, contact: str, item: InboxItem | None = None) -> None:
        """Start (or wake) the contact's drain, unless it is backing off after a failed send
        or the in-memory queue is full: then its items wait in the inbox for the sweeper.
        ``item``: the message just recorded (a running TASK drain takes it without reading
        the inbox again)."""
        if not self.active:
            return
        if contact in self.drains or contact in self.starting:
            self.woken.add(contact)
            if contact in self._arrived:
                arrived = self._arrived[contact]
                if item is None:
                    self._arrived[contact] = None
                elif arrived is not None:
                    arrived.append(item)
            waiter = self._wakeups.get(contact)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if self.settings.interrupt and self.processor is not None:
                self.processor.interrupt(contact)
            return
        backoff = self.backoff
        if backoff and backoff.get(contact, 0.0) > time.monotonic():
            return
        if self.queued >= self.settings.max_queued_senders:
            if not self.overflow:
                logger.warning(
                    "more than %d senders waiting: new ones stay in the inbox until "
                    "the queue empties",
                    self.settings.max_queued_senders,
                )
            self.overflow = True
            self.stats.deferred += 1
            return
        if backoff:
            backoff.pop(contact, None)
        self.woken.add(contact)
        self.starting[contact] = None
        if self._dispatcher is None:
            self._dispatcher = self.tasks.spawn(self._dispatch(), "dispatch")

    async def _dispatch(self) -> None:
        """Start the drains of :attr:`starting`, one per :class:`AckGate` turn (webhook acks
        first: during a burst the contacts wait here, their messages safe in the inbox)."""
        try:
            while self.starting and self.active:
                await self.gate.turn()
                if not self.starting or not self.active:
                    break
                contact = next(iter(self.starting))
                del self.starting[contact]
                self.drains[contact] = self.tasks.spawn(self._drain(contact), "drain")
        finally:
            if self._dispatcher is asyncio.current_task():
                self._dispatcher = None

    async def _resume(self) -> None:
        try:
            contacts = await self.store.pending_senders(self.name)
        except Exception:
            logger.warning("could not list inbox leftovers; the sweeper will retry", exc_info=True)
            return
        if contacts:
            logger.info("resuming %d sender(s) with unanswered messages", len(contacts))
        for contact in contacts:
            self.schedule(contact)

    async def _sweeper(self) -> None:
        """Every ``sweep_interval`` (or as soon as a full queue has room again), schedule the
        contacts with inbox items that nobody in this process is working on."""
        assert self._sweep_now is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), self.settings.sweep_interval)
            self._sweep_now.clear()
            try:
                contacts = await self.store.pending_senders(self.name)
            except Exception:
                logger.warning("sweep: could not list the inbox", exc_info=True)
                continue
            waiting = set(contacts)
            for contact in [c for c in self.backoff if c not in waiting]:
                del self.backoff[contact]  # answered meanwhile (by another process)
            for contact in [c for c in self.backlog.counts if c not in waiting]:
                self.backlog.sync(contact, 0)  # answered elsewhere while it had no drain here
            self.overflow = False
            for contact in contacts:
                if not self.active:
                    return
                self.schedule(contact)
                if self.overflow:
                    break

    # -- draining -------------------------------------------------------------------------
    async def _drain(self, contact: str) -> None:
        """Answer the contact's inbox items in arrival order while holding its lease."""
        lease = f"sender:{self.name}:{contact}"
        try:
            while self.active:
                self.woken.discard(contact)
                if not await self.store.acquire_lease(lease, self.owner, self.settings.lease_ttl):
                    if not await self._wait_for_other_drainer(contact):
                        return
                    continue
                held = self.held[lease] = Held()
                try:
                    items = await self._rounds(contact, held)
                finally:
                    if self.held.get(lease) is held:
                        del self.held[lease]
                    with contextlib.suppress(Exception):
                        await self.store.release_lease(lease, self.owner)
                if not items and contact not in self.woken:
                    return
        except RetryLater as retry:
            self.backoff[contact] = time.monotonic() + retry.delay
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("processing messages of %s failed; will retry", mask_number(contact))
            self.backoff[contact] = time.monotonic() + self.settings.sweep_interval
        finally:
            if self.drains.get(contact) is asyncio.current_task():
                del self.drains[contact]
                self._newest.pop(contact, None)
                if (
                    self.overflow
                    and self._sweep_now is not None
                    and self.queued <= self.settings.max_queued_senders // 2
                ):
                    self._sweep_now.set()

    async def _wait_for_other_drainer(self, contact: str) -> bool:
        """Another process holds the lease (it will see our items too): wait a little,
        then whether there is still something to do here."""
        await asyncio.sleep(min(1.0, self.settings.lease_ttl / 4))
        left = await self.store.pending(self.name, contact)
        # Items this process recorded may be answered by the other one: count what is
        # really left, or the backlog bound would refuse this contact.
        self.backlog.sync(contact, len(left))
        return bool(contact in self.woken or left)

    async def _rounds(self, contact: str, held: Held) -> list[InboxItem]:
        """Until the inbox has nothing more for the contact: one lease for all rounds (a
        round per follow-up that came in meanwhile). Returns the last round's items."""
        if self.settings.mode is InterfaceMode.CHAT:
            return await self._chat_rounds(contact, held)
        return await self._task_rounds(contact, held)

    async def _chat_rounds(self, contact: str, held: Held) -> list[InboxItem]:
        """CHAT: one turn at a time, each answering everything pending (see
        :func:`~.turns.next_chat_turn`); what arrives while it runs forms the next one."""
        assert self._sem is not None and self.processor is not None
        processor = self.processor
        debounce = self.settings.debounce
        while True:
            self.woken.discard(contact)
            items = await self.store.pending(self.name, contact)
            self.backlog.sync(contact, len(items))
            if not items or not self.active or held.lost:
                return items
            if debounce > 0:
                wait = items[-1].received_at + debounce - time.time()
                if wait > 0:  # the user may still be typing: wait, then look again
                    await asyncio.sleep(wait)
                    continue
            self._newest[contact] = items[-1].id
            turn = next_chat_turn(items, processor.load, processor.is_command, _MAX_TURN_ITEMS)
            latest = functools.partial(self.is_latest, contact, turn.anchor.id)
            async with self._sem:
                if not self.active:  # waited for a slot while shutting down
                    return items
                try:
                    await processor.process(turn, latest=latest)
                except Interrupted:
                    continue  # a newer message: one turn with everything pending

    async def _task_rounds(self, contact: str, held: Held) -> list[InboxItem]:
        """TASK: each message is its own turn; up to ``max_concurrency_per_sender`` of the
        contact's turns run at once, their replies delivered in arrival order."""
        started: set[str] = set()
        running: set[asyncio.Task[float | None]] = set()
        order: ReplyOrder | None = None
        blocked: float | None = None
        bound = self.settings.max_concurrency_per_sender
        items: list[InboxItem] = []
        read = True  # read the inbox (else: take what was recorded here meanwhile)
        self._arrived[contact] = []
        try:
            while True:
                self.woken.discard(contact)
                arrived = self._arrived.get(contact)
                self._arrived[contact] = []
                if read or arrived is None:
                    items = await self.store.pending(self.name, contact)
                    self.backlog.sync(contact, len(items))
                else:
                    items = arrived
                fresh = [item for item in items if item.id not in started]
                if items:
                    self._newest[contact] = items[-1].id
                for item in fresh:
                    if not self.active or held.lost or blocked is not None:
                        break
                    while len(running) >= bound:
                        blocked = _first_block(blocked, await _finished(running))
                    order = ReplyOrder(order)
                    started.add(item.id)
                    running.add(self.tasks.spawn(self._task_turn(item, order), "turn"))
                while running:  # the inbox is read again once woken, or all turns are done
                    blocked = _first_block(blocked, await self._finished_or_woken(contact, running))
                    if contact in self.woken:
                        break
                if running or contact in self.woken:
                    # Follow-ups of a busy contact wait for the webhook acks, as new
                    # contacts do in the dispatcher, and come without a store read:
                    # recording one stays as cheap as for an idle contact.
                    await self.gate.turn()
                    read = False
                    continue
                if blocked is not None:
                    raise RetryLater(blocked)
                if not read:  # all done: one read for what other processes recorded
                    read = True
                    continue
                if not fresh or not self.active or held.lost:
                    return [item for item in items if item.id not in started]
        finally:
            self._arrived.pop(contact, None)
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _task_turn(self, item: InboxItem, order: ReplyOrder) -> float | None:
        """One TASK turn; answers ``None``, or the retry delay when its reply (or an
        earlier one) must be retried later."""
        assert self._sem is not None and self.processor is not None
        blocked: float | None = None
        try:
            async with self._sem:
                if self.active:
                    await self.processor.process(
                        self.processor.turn_of(item),
                        order=order,
                        latest=functools.partial(self.is_latest, item.sender, item.id),
                    )
        except RetryLater as retry:
            blocked = retry.delay
        except Exception:
            logger.exception(
                "processing a message of %s failed; will retry", mask_number(item.sender)
            )
            blocked = self.settings.sweep_interval
        finally:
            order.done(blocked)
        return blocked

    async def _finished_or_woken(
        self, contact: str, running: set[asyncio.Task[float | None]]
    ) -> list[float | None]:
        """Wait until one of ``running`` ends or a new message of ``contact`` arrives."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if contact in self.woken:
            waiter.set_result(None)
        self._wakeups[contact] = waiter
        watched: set[asyncio.Future[Any]] = {*running, waiter}
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if self._wakeups.get(contact) is waiter:
                del self._wakeups[contact]
        finished = [task for task in running if task in done]
        running.difference_update(finished)
        return [task.result() for task in finished]

    async def _keep_leases(self) -> None:
        """Renew every held lease once it is a third of its TTL old (so at the latest at
        two thirds), so a slow agent never loses it: one task and one store call for all
        contacts. Short leases kept alive this way let another process (or this one,
        restarted) take over a dead process's contacts within ``lease_ttl``."""
        ttl = self.settings.lease_ttl
        period = ttl / 3
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            due = [(name, held) for name, held in self.held.items() if now - held.since >= period]
            if not due:
                continue
            try:
                renewed = await self.store.renew_leases([name for name, _ in due], self.owner, ttl)
            except Exception:
                logger.warning("could not renew %d lease(s)", len(due), exc_info=True)
                continue
            for (name, held), ok in zip(due, renewed, strict=True):
                await self._renewed(name, held, ok)

    async def _renewed(self, name: str, held: Held, ok: bool) -> None:
        if self.held.get(name) is not held:
            # Released while renewing: give back what was just taken again, unless a new
            # drain of this contact holds it now.
            if ok and name not in self.held:
                with contextlib.suppress(Exception):
                    await self.store.release_lease(name, self.owner)
            return
        if ok:
            held.since = time.monotonic()
            return
        held.lost = True
        logger.warning(
            "lost the lease %s (this process stalled longer than lease_ttl=%.1f s): "
            "another process may be answering the same sender",
            name,
            self.settings.lease_ttl,
        )


_MAX_TURN_ITEMS = 50  # messages one CHAT turn answers at most (the rest: the next turn)


async def _finished(running: set[asyncio.Task[float | None]]) -> list[float | None]:
    """Wait until one of ``running`` ends; remove the ended ones and answer their results."""
    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    running.difference_update(done)
    return [task.result() for task in done]


def _first_block(blocked: float | None, results: list[float | None]) -> float | None:
    """The retry delay of the first blocked turn, if any."""
    for result in results:
        if blocked is None and result is not None:
            blocked = result
    return blocked
