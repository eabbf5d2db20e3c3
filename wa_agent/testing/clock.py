"""A virtual clock for tests of time-driven code such as :class:`~wa_agent.HeartbeatScheduler`.

``FakeClock`` gives a component the two things it needs to tell time, with no real waiting:

* calling it (``clock()``) reads the virtual monotonic time in seconds;
* ``await clock.sleep(seconds)`` moves that time forward by ``seconds`` and then yields to the
  event loop once (a real checkpoint, so cancellation is delivered there and other tasks run).

Because sleeping *is* advancing, the clock suits code where one task at a time sleeps on it
(a scheduler loop and the beats it runs one after another). ``wall()`` maps the virtual time
onto a fixed, timezone-aware wall clock, for code that reports ``datetime`` values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import final

import anyio.lowlevel

__all__ = ["FAKE_EPOCH", "FakeClock"]

#: Wall time that virtual time 0.0 maps to in :meth:`FakeClock.wall`.
FAKE_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@final
class FakeClock:
    """Virtual monotonic time: ``clock()`` reads it, ``await clock.sleep(s)`` advances it.

    ``sleeps`` records every requested sleep (negative requests are recorded as asked but do
    not move time backwards).

    >>> clock = FakeClock()
    >>> clock()
    0.0
    >>> clock.advance(5)
    >>> clock()
    5.0
    """

    __slots__ = ("now", "sleeps")

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        """The current virtual time in seconds."""
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r})"

    async def sleep(self, seconds: float) -> None:
        """Advance virtual time by ``seconds`` (if positive), then yield to the loop once."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds`` without yielding (no-op if not positive)."""
        if seconds > 0:
            self.now += seconds

    def wall(self) -> datetime:
        """The virtual time as an aware UTC ``datetime`` (``FAKE_EPOCH`` + ``now`` seconds)."""
        return FAKE_EPOCH + timedelta(seconds=self.now)
