"""The emulator's fault injection: failures, hangs and the throughput limit, on demand.

:class:`FaultPlan` holds what a test asked for (through
:meth:`~wa_agent.testing.CloudAPIEmulator.fail_next`, ``fail_rate``, ``hang_next`` and
``throughput``) and decides, call by call, whether it happens:

* :meth:`FaultPlan.inject` raises :class:`InjectedFault` (carrying the answer) for the next
  matching failure or a random one;
* :meth:`FaultPlan.take_hang` hands out the next matching hang, which :func:`hang` then
  waits out (until the client disconnects, the emulator closes, or the time is up);
* :meth:`FaultPlan.check_throughput` refuses with 130429 the call over a number's messages
  per second.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass
from typing import final

from .._asgi_types import Receive
from ._emulator_http import Response
from ._emulator_validation import digits
from ._graph_errors import Reject, graph_error

__all__ = ["Fault", "FaultPlan", "Hang", "InjectedFault", "hang"]


@dataclass(slots=True)
class Fault:
    """Fail ``remaining`` more matching calls (``-1``: a rate, never used up)."""

    remaining: int
    code: int | None
    http_status: int
    details: str | None
    message: str | None
    retry_after: float | None
    endpoint: str | None
    to: str | None


@dataclass(slots=True)
class Hang:
    """Leave ``remaining`` more matching calls unanswered (``accept``: process them first)."""

    remaining: int
    endpoint: str | None
    accept: bool
    seconds: float


class InjectedFault(Exception):
    """Internal control flow: an injected fault answers the call with :attr:`response`."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.code)
        headers: list[tuple[bytes, bytes]] = []
        if fault.retry_after is not None:
            headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
        if fault.code is None:
            self.response = Response(
                fault.http_status,
                None,
                headers,
                raw=f"<html><body>{fault.http_status} Bad Gateway</body></html>".encode(),
                content_type=b"text/html",
            )
        else:
            self.response = Response(
                fault.http_status,
                graph_error(fault.code, fault.details, message=fault.message),
                headers,
            )


@final
class FaultPlan:
    """The failures and hangs still to come, and each number's sends in the last second."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._rate: tuple[float, Fault, random.Random] | None = None
        self._hangs: list[Hang] = []
        self._sent_times: dict[str, collections.deque[float]] = {}

    def clear(self) -> None:
        """Drop every pending failure, failure rate and hang."""
        self._faults.clear()
        self._hangs.clear()
        self._rate = None

    def forget_sends(self) -> None:
        """Start every number's throughput window afresh."""
        self._sent_times.clear()

    def add(self, fault: Fault) -> None:
        """Fail the next ``fault.remaining`` matching calls."""
        self._faults.append(fault)

    def set_rate(self, p: float, fault: Fault, seed: int | None) -> None:
        """Fail a fraction ``p`` of matching calls (``p <= 0`` turns it off)."""
        self._rate = (p, fault, random.Random(seed)) if p > 0 else None

    def add_hang(self, hang: Hang) -> None:
        """Leave the next ``hang.remaining`` matching calls unanswered."""
        self._hangs.append(hang)

    def take_hang(self, endpoint: str) -> Hang | None:
        """The hang for this call to ``endpoint``, if one is pending."""
        for pending in self._hangs:
            if pending.endpoint is None or pending.endpoint == endpoint:
                pending.remaining -= 1
                if pending.remaining <= 0:
                    self._hangs.remove(pending)
                return pending
        return None

    def inject(self, endpoint: str, to: object) -> None:
        """Raise :class:`InjectedFault` when a pending failure (or the failure rate) hits
        this call to ``endpoint`` (a send to ``to``)."""
        for fault in self._faults:
            if fault.endpoint not in (None, endpoint):
                continue
            if fault.to is not None and (not isinstance(to, str) or digits(to) != digits(fault.to)):
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            raise InjectedFault(fault)
        if self._rate is not None:
            p, fault, rng = self._rate
            if fault.endpoint in (None, endpoint) and rng.random() < p:
                raise InjectedFault(fault)

    def check_throughput(self, phone_number_id: str, per_second: float) -> None:
        """Count a send from ``phone_number_id``; refuse it with 130429 when the number
        already made ``per_second`` sends in the last second."""
        window = self._sent_times.setdefault(phone_number_id, collections.deque())
        now = time.monotonic()
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= per_second:
            raise Reject(130429)
        window.append(now)


async def hang(pending: Hang, receive: Receive, closing: asyncio.Event) -> None:
    """Wait until the client disconnects, ``closing`` is set, or ``pending.seconds`` pass."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    waiters = [asyncio.ensure_future(disconnected()), asyncio.ensure_future(closing.wait())]
    try:
        await asyncio.wait(waiters, timeout=pending.seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
