"""Priority to webhook acks over reply work on one event loop.

asyncio runs ready callbacks first-in first-out, so a webhook that arrives while hundreds of
replies are being sent waits behind all of their steps (Meta allows ~250 ms for the ack and
redelivers on time-outs). :class:`AckGate` lets reply workers defer their expensive steps
(Graph calls) while webhooks are arriving: a worker that finds the gate busy queues up, and
queued workers are let through one per event-loop iteration, so between two reply steps the
loop always polls the sockets and handles the webhooks that came in. Workers never starve:
one is released every iteration, or every ``burst_interval`` in a burst (below). Without
webhook traffic, reply steps still start in one iteration only until ``budget`` seconds have
gone by in it (a burst of agents finishing together would otherwise hold the loop for all of
their steps at once).
In a burst (webhooks arriving at ``burst_rate`` per second or more, measured over
``window`` seconds), one step is let through only every ``burst_interval`` seconds: an ack
costs a few dozen microseconds and a reply step hundreds, so even one step per iteration
would take a large share of a loop that is busy acknowledging, and the inbox holds the
messages meanwhile. The same holds while ``burst_acks`` or more webhooks wait for their
ack at once (a durable store's commit): the caller counts them in :attr:`acks_waiting`.
Below that rate nothing changes.
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

    __slots__ = (
        "_arrivals",
        "_epoch",
        "_hot",
        "_last",
        "_last_release",
        "_loop",
        "_pumping",
        "_waiters",
        "_window_start",
        "acks_waiting",
        "budget",
        "burst_acks",
        "burst_interval",
        "burst_rate",
        "per_turn",
        "quiet",
        "released",
        "window",
    )

    def __init__(
        self,
        quiet: float = 0.005,
        per_turn: int = 1,
        budget: float = 0.002,
        burst_rate: float = 3000.0,
        burst_interval: float = 0.01,
        window: float = 0.01,
        burst_acks: int = 8,
    ) -> None:
        if (
            quiet < 0
            or per_turn < 1
            or budget < 0
            or burst_rate <= 0
            or burst_interval < 0
            or window <= 0
            or burst_acks < 1
        ):
            raise ValueError(
                "quiet, budget and burst_interval must be >= 0, burst_rate and "
                "window > 0, per_turn and burst_acks >= 1"
            )
        self.quiet = quiet
        self.per_turn = per_turn
        self.budget = budget
        self.burst_rate = burst_rate
        self.burst_interval = burst_interval
        self.window = window
        self.burst_acks = burst_acks
        self.acks_waiting = 0  # webhooks waiting for the store to record them (caller-kept)
        self._arrivals = 0  # webhooks in the current rate window
        self._window_start = time.monotonic()
        self._hot = False  # the last window's webhook rate was a burst
        self._last_release = float("-inf")
        self._epoch: float | None = None  # when the first step started in this iteration
        self._last = float("-inf")
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pumping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.released = 0  # steps that had to queue (diagnostics)

    def webhook(self) -> None:
        """A webhook request is being handled now."""
        self._last = time.monotonic()
        self._arrivals += 1

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
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= self.window:
            self._hot = self._arrivals >= self.burst_rate * elapsed
            self._arrivals = 0
            self._window_start = now
        hot = (
            self._hot
            or self._arrivals >= self.burst_rate * self.window
            or self.acks_waiting >= self.burst_acks
        )
        wait = self.burst_interval - (now - self._last_release) if hot else 0.0
        if wait <= 0:
            self._last_release = now
            wait = self.burst_interval if hot else 0.0
            for _ in range(self.per_turn):
                if not self._release_next():
                    break
        if self._waiters and self._loop is not None and not self._loop.is_closed():
            if wait > 0:  # in a burst: sleep until the next release instead of spinning
                self._loop.call_later(wait, self._pump)
            else:
                self._loop.call_soon(self._pump)  # next iteration, after polling the sockets
        else:
            self._pumping = False
