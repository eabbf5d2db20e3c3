"""Priority to webhook acks over reply work on one event loop.

asyncio runs ready callbacks first-in first-out, so a webhook that arrives while hundreds of
replies are being sent waits behind all of their steps (Meta allows ~250 ms for the ack and
redelivers on time-outs). :class:`AckGate` lets reply workers defer their expensive steps
(Graph calls) while webhooks are arriving: a worker that finds the gate busy queues up, and
queued workers are let through one per event-loop iteration, so between two reply steps the
loop always polls the sockets and handles the webhooks that came in. Workers never starve:
one is released every iteration whatever the webhook traffic. Without webhook traffic, reply
steps still start in one iteration only until ``budget`` seconds have gone by in it (a burst
of agents finishing together would otherwise hold the loop for all of their steps at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["AckGate"]


class AckGate:
    """Defers reply steps while webhooks keep arriving (see the module docstring).

    :meth:`webhook` is called for every webhook request; :meth:`turn` is awaited before a
    reply step. ``quiet`` (seconds) is how long after the last webhook the gate stays
    busy; ``per_turn`` how many queued steps run per event-loop iteration while busy;
    ``budget`` (seconds) how long steps may keep starting within one iteration otherwise.
    """

    __slots__ = ("_epoch", "_last", "_loop", "_pumping", "_waiters", "budget", "per_turn",
                 "quiet", "released")

    def __init__(self, quiet: float = 0.005, per_turn: int = 1, budget: float = 0.002) -> None:
        if quiet < 0 or per_turn < 1 or budget < 0:
            raise ValueError("quiet and budget must be >= 0 and per_turn >= 1")
        self.quiet = quiet
        self.per_turn = per_turn
        self.budget = budget
        self._epoch: float | None = None  # when the first step started in this iteration
        self._last = float("-inf")
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pumping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.released = 0  # steps that had to queue (diagnostics)

    def webhook(self) -> None:
        """A webhook request is being handled now."""
        self._last = time.monotonic()

    @property
    def waiting(self) -> int:
        """Reply steps queued behind webhook traffic."""
        return len(self._waiters)

    def busy(self) -> bool:
        """Whether a reply step would queue now."""
        return bool(self._waiters) or time.monotonic() - self._last < self.quiet

    async def turn(self) -> None:
        """Return at once when no webhook arrived within ``quiet`` and nobody is queued;
        otherwise wait for this step's turn (at most one loop iteration per queued step
        ahead of it, divided by ``per_turn``)."""
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (tests): forget the old one's waiters
            self._loop = loop
            self._waiters.clear()
            self._pumping = False
            self._epoch = None
        if not self._waiters and now - self._last >= self.quiet:
            if self._epoch is None:
                self._epoch = now
                loop.call_soon(self._new_epoch)
                return
            if now - self._epoch < self.budget:
                return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if not self._pumping:
            self._pumping = True
            loop.call_soon(self._pump)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled() and waiter.done():
                # Released and cancelled in the same iteration: pass the turn on.
                self._release_next()
            raise

    def _new_epoch(self) -> None:
        self._epoch = None

    def _release_next(self) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.released += 1
                return True
        return False

    def _pump(self) -> None:
        for _ in range(self.per_turn):
            if not self._release_next():
                break
        if self._waiters and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon(self._pump)  # next iteration, after the sockets are polled
        else:
            self._pumping = False
