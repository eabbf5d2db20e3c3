"""An in-process :class:`~wa_agent.stores.SessionStore`: fast, and lost when the process exits."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Self

from ..agents import Turn
from ._common import check_ttl, from_micros, status_advances, to_micros
from .base import DEFAULT_DEDUPE_TTL, InboxItem, make_item

__all__ = ["MemorySessionStore"]

# Each new dedupe mark sweeps at most this many expired ones (amortised lazy purge).
_PURGE_STEP = 8


class MemorySessionStore:
    """Keeps everything in dictionaries of this process.

    Good for notebooks, tests and single-process bots that can afford to lose the inbox on a
    crash. Every method is atomic with respect to the others (they never await in between).

    ``dedupe_ttl`` is how long a message id (or :meth:`seen` key) and a delivery state are
    remembered; ``clock`` gives the time in seconds (inject one in tests);
    ``history_limit`` keeps only that many latest turns per sender (``None``: all).
    """

    def __init__(
        self,
        *,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        clock: Callable[[], float] = time.time,
        history_limit: int | None = None,
    ) -> None:
        if history_limit is not None and history_limit < 1:
            raise ValueError(f"history_limit must be None or at least 1, got {history_limit!r}")
        self._ttl = check_ttl("dedupe_ttl", dedupe_ttl)
        self._clock = clock
        self._history_limit = history_limit
        # (interface, key) -> expiry; insertion order is (nearly) expiry order.
        self._marks: dict[tuple[str, str], float] = {}
        # interface -> sender -> item id -> item (insertion order == seq order)
        self._inbox: dict[str, dict[str, dict[str, InboxItem]]] = {}
        self._item_sender: dict[tuple[str, str], str] = {}
        self._seq = itertools.count(1)
        self._status: dict[tuple[str, str], tuple[str, float]] = {}
        self._history: dict[tuple[str, str], list[Turn]] = {}
        self._last_inbound: dict[tuple[str, str], int] = {}
        self._heartbeat: dict[str, str] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._handoffs: dict[str, dict[str, str]] = {}  # interface -> contact -> record

    def __repr__(self) -> str:
        return f"MemorySessionStore(dedupe_ttl={self._ttl!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Nothing to connect; kept for the protocol."""

    async def aclose(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    # -- dedupe -------------------------------------------------------------------------
    def _live_mark(self, k: tuple[str, str], now: float) -> bool:
        """Whether ``k`` has a mark that has not expired at ``now``."""
        expires = self._marks.get(k)
        return expires is not None and expires > now

    def _mark(self, k: tuple[str, str], now: float) -> bool:
        """Set the mark ``k`` unless a live one exists; ``True`` if it was set."""
        if self._live_mark(k, now):
            return False
        self._set_mark(k, now)
        return True

    def _set_mark(self, k: tuple[str, str], now: float) -> None:
        """Mark ``k`` until a TTL from ``now``; drop a few marks that have expired."""
        marks = self._marks
        marks.pop(k, None)  # re-inserted at the end: the dict stays in expiry order
        marks[k] = now + self._ttl
        if next(iter(marks.values())) <= now:  # the oldest mark expired: drop a few
            for old, exp in list(itertools.islice(marks.items(), _PURGE_STEP)):
                if exp > now:
                    break
                del marks[old]

    async def purge_expired(self) -> int:
        """Drop every expired dedupe mark and delivery state now; answer how many.

        Expired entries are also dropped lazily as new marks arrive, so calling this is
        optional.
        """
        now = self._clock()
        marks = [k for k, exp in self._marks.items() if exp <= now]
        for k in marks:
            del self._marks[k]
        states = [k for k, (_, exp) in self._status.items() if exp <= now]
        for k in states:
            del self._status[k]
        leases = [name for name, (_, exp) in self._leases.items() if exp <= now]
        for name in leases:
            del self._leases[name]
        return len(marks) + len(states)

    async def seen(self, interface: str, key: str) -> bool:
        """``True`` if ``key`` was marked within the TTL; otherwise mark it and answer ``False``."""
        return not self._mark((interface, key), self._clock())

    # -- inbox ----------------------------------------------------------------------------
    async def add_inbound(self, interface: str, items: Sequence[InboxItem]) -> list[bool]:
        """Dedupe and enqueue; see :meth:`SessionStore.add_inbound`."""
        now = self._clock()
        senders = self._inbox.setdefault(interface, {})
        where = self._item_sender
        out: list[bool] = []
        for item in items:
            key = (interface, item.id)
            # While the item waits in the inbox, its entry there is its dedupe mark;
            # complete() writes the mark (one dictionary insert less per message here).
            if key in where or self._live_mark(key, now):
                out.append(False)
                continue
            # (dataclasses.replace() costs ~3 µs: it inspects every field each call)
            stored = make_item(
                item.id,
                item.sender,
                item.payload,
                item.received_at,
                next(self._seq),
                item.attempts,
                item.progress,
            )
            queue = senders.get(item.sender)
            if queue is None:
                senders[item.sender] = {item.id: stored}
            else:
                queue[item.id] = stored
            where[key] = item.sender
            out.append(True)
        return out

    async def pending(self, interface: str, sender: str | None = None) -> list[InboxItem]:
        """Inbox items of one sender (or all), oldest first."""
        senders = self._inbox.get(interface, {})
        if sender is not None:
            return list(senders.get(sender, {}).values())
        queues = [list(q.values()) for q in senders.values()]
        return list(heapq.merge(*queues, key=lambda it: it.seq))

    async def pending_senders(self, interface: str) -> list[str]:
        """Senders with at least one item, the one waiting longest first."""
        senders = self._inbox.get(interface, {})
        heads = [(next(iter(q.values())).seq, s) for s, q in senders.items() if q]
        return [s for _, s in sorted(heads)]

    async def save_progress(self, interface: str, item_id: str, progress: str) -> None:
        """Store the progress JSON and count one attempt (no-op for an unknown item)."""
        sender = self._item_sender.get((interface, item_id))
        if sender is None:
            return
        queue = self._inbox[interface][sender]
        item = queue[item_id]
        queue[item_id] = dataclasses.replace(item, progress=progress, attempts=item.attempts + 1)

    async def complete(
        self,
        interface: str,
        item_id: str | Sequence[str],
        sender: str,
        turns: Sequence[Turn] = (),
    ) -> None:
        """Remove the item(s) (if present) and append ``turns`` to the history, atomically."""
        for one in (item_id,) if isinstance(item_id, str) else item_id:
            key = (interface, one)
            owner = self._item_sender.pop(key, None)
            if owner is not None:
                senders = self._inbox[interface]
                del senders[owner][one]
                if not senders[owner]:
                    del senders[owner]
                self._set_mark(key, self._clock())  # its dedupe mark, from now on
        if turns:
            self._append(interface, sender, turns)

    # -- statuses -----------------------------------------------------------------------
    async def advance_status(self, interface: str, message_id: str, status: str) -> bool:
        """Move the delivery state forward only; see :meth:`SessionStore.advance_status`."""
        now = self._clock()
        k = (interface, message_id)
        entry = self._status.get(k)
        current = entry[0] if entry is not None and entry[1] > now else None
        if not status_advances(current, status):
            return False
        self._status.pop(k, None)  # re-insert at the end: the dict stays ordered by expiry
        self._status[k] = (status, now + self._ttl)
        for old, (_, exp) in list(itertools.islice(self._status.items(), _PURGE_STEP)):
            if exp > now:
                break
            del self._status[old]
        return True

    async def get_status(self, interface: str, message_id: str) -> str | None:
        """The delivery state last recorded (within the TTL), or ``None``."""
        entry = self._status.get((interface, message_id))
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    # -- history and window -------------------------------------------------------------
    def _append(self, interface: str, sender: str, turns: Sequence[Turn]) -> None:
        history = self._history.setdefault((interface, sender), [])
        history.extend(turns)
        if self._history_limit is not None and len(history) > self._history_limit:
            del history[: len(history) - self._history_limit]

    async def get_history(
        self, interface: str, sender: str, limit: int | None = None
    ) -> list[Turn]:
        """The sender's turns, oldest first (the last ``limit`` if given)."""
        history = self._history.get((interface, sender), [])
        if limit is not None:
            return history[-limit:] if limit > 0 else []
        return list(history)

    async def append_history(self, interface: str, sender: str, turns: Sequence[Turn]) -> None:
        """Append turns to the sender's history."""
        if turns:
            self._append(interface, sender, turns)

    async def clear_history(self, interface: str, sender: str) -> None:
        """Forget this sender's history only."""
        self._history.pop((interface, sender), None)

    async def touch_inbound(self, interface: str, sender: str, at: datetime) -> None:
        """Record an inbound time, kept only if later than the stored one."""
        micros = to_micros(at)
        k = (interface, sender)
        if micros > self._last_inbound.get(k, micros - 1):
            self._last_inbound[k] = micros

    async def last_inbound(self, interface: str, sender: str) -> datetime | None:
        """The latest inbound time (aware UTC), or ``None``."""
        micros = self._last_inbound.get((interface, sender))
        return None if micros is None else from_micros(micros)

    # -- heartbeat and leases -----------------------------------------------------------
    async def get_heartbeat_recipient(self, interface: str) -> str | None:
        """The persisted heartbeat recipient, or ``None``."""
        return self._heartbeat.get(interface)

    async def set_heartbeat_recipient(
        self, interface: str, sender: str, *, overwrite: bool = False
    ) -> str:
        """Set the recipient unless one is set (or ``overwrite``); answer the one in force."""
        if overwrite:
            self._heartbeat[interface] = sender
            return sender
        return self._heartbeat.setdefault(interface, sender)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds unless another owner holds it."""
        ttl = check_ttl("ttl", ttl)
        now = self._clock()
        held = self._leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[name] = (owner, now + ttl)
        return True

    async def renew_leases(self, names: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """:meth:`acquire_lease` for each name."""
        return [await self.acquire_lease(name, owner, ttl) for name in names]

    async def release_lease(self, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        held = self._leases.get(name)
        if held is not None and held[0] == owner:
            del self._leases[name]

    # -- handoff ------------------------------------------------------------------------
    async def set_handoff(self, interface: str, contact: str, record: str | None) -> None:
        """Store (or with ``None`` delete) the contact's handoff record; see
        :meth:`SessionStore.set_handoff`."""
        if record is not None:
            self._handoffs.setdefault(interface, {})[contact] = record
            return
        records = self._handoffs.get(interface)
        if records is not None:
            records.pop(contact, None)
            if not records:
                del self._handoffs[interface]

    async def get_handoff(self, interface: str, contact: str) -> str | None:
        """The contact's handoff record, or ``None``."""
        return self._handoffs.get(interface, {}).get(contact)

    async def handoffs(self, interface: str) -> dict[str, str]:
        """Every contact with a handoff record -> its record."""
        return dict(self._handoffs.get(interface, {}))
