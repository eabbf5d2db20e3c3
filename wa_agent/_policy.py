"""The Sender's two policies: when a failed Graph call is tried again (:class:`RetryPolicy`)
and how fast one business number may send (:class:`RateLimiter`).

Both are plain values with no I/O of their own (waits go through an injectable ``sleep``),
so a test can drive them with a fake clock. They are public as ``wa_agent.sender.RetryPolicy``
and ``wa_agent.sender.RateLimiter`` (and from ``wa_agent``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import final

import anyio

from .exceptions import RetryKind, WhatsAppAPIError

__all__ = ["RateLimiter", "RetryPolicy", "Sleep"]

#: What a policy or limiter waits with (default :func:`anyio.sleep`).
Sleep = Callable[[float], Awaitable[None]]


@final
@dataclass(frozen=True)
class RetryPolicy:
    """Which failed calls are tried again, and how long to wait first.

    Keyed on the error's :class:`~wa_agent.exceptions.RetryKind`, which the one table of
    Graph error codes gives (:data:`wa_agent.exceptions.ERROR_CODES`):

    * ``THROTTLE`` (``130429``, HTTP 429 without a code): exponential backoff
      ``base_delay * 2**n`` with ``±jitter``, up to ``max_attempts`` attempts; a Sender
      waits by pausing the number's rate limiter, since every send from the number would
      hit the same limit;
    * ``PAIR_RATE`` (``131056``): ``4**n`` seconds (1, 4, 16, ...) for that recipient only,
      up to ``pair_rate_attempts`` attempts; sends to other recipients go on meanwhile;
    * ``TRANSIENT`` (``1``, ``2``, ``131000``, ``131016``, HTTP 5xx, connection failures):
      ``transient_delay * 2**n`` with jitter, up to ``transient_attempts`` attempts;
    * ``LATER`` (``4``, ``80007``, ``131057``: minutes, not seconds) and ``NEVER`` (131047,
      131026, 190, 100, ...) raise at once; a ``LATER`` error is ``retryable``, so the
      interface tries the message again from its inbox.

    Each kind has its own budget: throttling before a server error does not use up the
    server error's attempts (no kind gets more than ``max_attempts``). One call makes at
    most ``max_total_attempts`` attempts whatever the mix; with the defaults its waits add
    up to under a minute (throttle 1+2+4+8 s, pair rate 1+4+16 s, transient 0.5+1 s).

    A ``Retry-After`` header is honoured: the wait is at least that long, and a call told to
    wait longer than ``max_delay`` is not retried. Every wait is capped at ``max_delay``
    and then multiplied by ``scale`` (tests use a tiny scale); ``sleep`` replaces
    :func:`anyio.sleep` (tests inject one to observe or gate the waits).
    ``resend_on_read_timeout=True`` allows resending a message after a read timeout, which
    can deliver it twice.
    """

    max_attempts: int = 5
    transient_attempts: int = 3
    pair_rate_attempts: int = 4
    max_total_attempts: int = 10
    base_delay: float = 1.0
    transient_delay: float = 0.5
    max_delay: float = 60.0
    jitter: float = 0.25
    scale: float = 1.0
    resend_on_read_timeout: bool = False
    sleep: Sleep | None = field(default=None, compare=False, repr=False)
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "max_attempts",
            "transient_attempts",
            "pair_rate_attempts",
            "max_total_attempts",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"RetryPolicy.{name} must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter must be in [0, 1)")
        if self.scale < 0 or self.max_delay < 0 or self.base_delay < 0:
            raise ValueError("RetryPolicy delays and scale must not be negative")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1, transient_attempts=1, pair_rate_attempts=1, max_total_attempts=1)

    def delay(
        self,
        error: WhatsAppAPIError,
        attempt: int,
        *,
        retry_after: float | None = None,
        total: int | None = None,
    ) -> float | None:
        """Seconds to wait before trying again after ``error``, or ``None`` when the call
        must not be retried. ``attempt`` counts the call's attempts that failed the same
        way (the same :class:`~wa_agent.exceptions.RetryKind`), 1-based; ``total`` all of
        its attempts so far (default ``attempt``)."""
        if (attempt if total is None else total) >= self.max_total_attempts:
            return None
        kind = error.retry_kind
        if kind is RetryKind.PAIR_RATE:
            return self._wait(
                attempt, self.pair_rate_attempts, 4.0 ** (attempt - 1), 0.0, retry_after
            )
        if kind is RetryKind.THROTTLE:
            return self._wait(
                attempt,
                self.max_attempts,
                self.base_delay * 2.0 ** (attempt - 1),
                self.jitter,
                retry_after,
            )
        if kind is RetryKind.TRANSIENT:
            return self.transport_delay(attempt, retry_after=retry_after, total=total)
        return None  # LATER (the caller retries in minutes) or NEVER

    def transport_delay(
        self, attempt: int, *, retry_after: float | None = None, total: int | None = None
    ) -> float | None:
        """Wait after a connection failure or transient error; ``attempt`` counts the
        call's transient failures, ``total`` all its attempts (see :meth:`delay`)."""
        if (attempt if total is None else total) >= self.max_total_attempts:
            return None
        return self._wait(
            attempt,
            self.transient_attempts,
            self.transient_delay * 2.0 ** (attempt - 1),
            self.jitter,
            retry_after,
        )

    def _wait(
        self, attempt: int, limit: int, base: float, jitter: float, retry_after: float | None
    ) -> float | None:
        if attempt >= min(limit, self.max_attempts):
            return None
        wait = min(base, self.max_delay)
        if jitter:
            wait = min(wait * (self.rng or random).uniform(1 - jitter, 1 + jitter), self.max_delay)
        if retry_after is not None:
            if retry_after > self.max_delay:
                return None
            wait = max(wait, retry_after)
        return wait * self.scale

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` with the injected ``sleep`` (default :func:`anyio.sleep`)."""
        await (self.sleep or anyio.sleep)(seconds)


@final
class RateLimiter:
    """A token bucket (as a GCRA): ``rate`` calls per second, bursts of up to ``burst``.

    :meth:`acquire` reserves the next free slot and sleeps until it; waiters are served in
    order. ``clock`` and ``sleep`` can be injected for tests. Share one instance between
    Senders of the same phone number.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst if burst is not None else rate))
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1.0) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf  # theoretical arrival time of the next call
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, burst={self.burst:g})"

    def reserve(self) -> float:
        """Take the next slot; return how many seconds from now it starts (0 = now)."""
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        wait = tat - self._tolerance - now
        return wait if wait > 1e-9 else 0.0  # ignore float dust from summing intervals

    async def acquire(self) -> None:
        """Wait for the next slot."""
        wait = self.reserve()
        if wait > 0:
            await (self._sleep or anyio.sleep)(wait)

    def pause(self, seconds: float) -> None:
        """Let no call start for ``seconds`` (after the number was throttled)."""
        now = self._clock()
        self._tat = max(self._tat, now + seconds + self._tolerance)
        self._paused_until = max(self._paused_until, now + seconds)

    def paused_for(self) -> float:
        """Seconds left of the current :meth:`pause` (0 when not paused)."""
        left = self._paused_until - self._clock()
        return left if left > 1e-9 else 0.0

    async def wait_out_pause(self) -> None:
        """Wait until the current :meth:`pause` is over, without taking a slot (for calls
        that do not count against the rate but must not be made while throttled)."""
        while (left := self.paused_for()) > 0:
            await (self._sleep or anyio.sleep)(left)
