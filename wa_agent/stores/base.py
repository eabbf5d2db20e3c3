"""The :class:`SessionStore` protocol shared by every backend.

A store keeps, per ``(interface, sender)``: the conversation history, the last inbound
time (for the 24-hour window) and the handoff record while a person has taken the
conversation over; and per interface: the durable inbox of acknowledged but unfinished
messages, dedupe marks (7-day TTL), delivery states, the heartbeat recipient and named
leases (per-sender locks, heartbeat election).

Every method is async and safe to call concurrently from many tasks; for the SQLite and
Redis backends also from several processes sharing the same file or server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..agents import Turn

__all__ = ["DEFAULT_DEDUPE_TTL", "InboxItem", "SessionStore"]

#: Meta retries a webhook for up to 7 days; dedupe marks must outlive that.
DEFAULT_DEDUPE_TTL = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One acknowledged message waiting for its reply.

    ``payload`` is text the hosting layer reads the message back from (the webhook body it
    came in, or a compact JSON record of it; stores keep it as it is); ``progress``
    is opaque JSON the hosting layer saves while answering (e.g. the reply computed and how
    many of its parts were accepted), so a restart resumes instead of starting over.
    ``seq`` orders items of one sender by arrival (assigned by the store on insert).
    """

    id: str
    sender: str
    payload: str
    received_at: float
    seq: int = 0
    attempts: int = 0
    progress: str | None = None


# The dataclass __init__ of a frozen class sets each field through object.__setattr__; the
# slots' own descriptors do the same job in half the time. For the ack path's hot spots.
_new = object.__new__
_SET_FIELDS = tuple(
    InboxItem.__dict__[name].__set__
    for name in ("id", "sender", "payload", "received_at", "seq", "attempts", "progress")
)


def make_item(
    id: str,
    sender: str,
    payload: str,
    received_at: float,
    seq: int = 0,
    attempts: int = 0,
    progress: str | None = None,
) -> InboxItem:
    """``InboxItem(id, sender, payload, received_at, seq, attempts, progress)``, faster."""
    item: InboxItem = _new(InboxItem)
    set_id, set_sender, set_payload, set_received, set_seq, set_attempts, set_progress = _SET_FIELDS
    set_id(item, id)
    set_sender(item, sender)
    set_payload(item, payload)
    set_received(item, received_at)
    set_seq(item, seq)
    set_attempts(item, attempts)
    set_progress(item, progress)
    return item


@runtime_checkable
class SessionStore(Protocol):
    """Storage behind an interface. See the module docstring."""

    async def open(self) -> None:
        """Connect / create tables. Idempotent. Called by the interface's lifespan."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...

    # -- inbox and dedupe -------------------------------------------------------------
    async def add_inbound(self, interface: str, items: Sequence[InboxItem]) -> list[bool]:
        """Record messages durably, skipping duplicates.

        For each item, atomically: if its id was seen for this interface within the dedupe
        TTL, answer ``False``; otherwise set the dedupe mark, append it to the inbox (its
        sender's queue, in order) and answer ``True``. When this returns, every ``True`` item
        survives a crash. Raises :class:`~wa_agent.StoreError` if it could not write.
        A store may let the inbox entry stand for the mark and write the mark itself in
        :meth:`complete` (the memory and SQLite stores do: one write less per acknowledged
        message); either way an id is a duplicate from ``add_inbound`` until the TTL after
        completion.
        """
        ...

    async def pending(self, interface: str, sender: str | None = None) -> list[InboxItem]:
        """Inbox items of one sender (or all), oldest first."""
        ...

    async def pending_senders(self, interface: str) -> list[str]:
        """Senders with at least one item in the inbox."""
        ...

    async def save_progress(self, interface: str, item_id: str, progress: str) -> None:
        """Store the item's progress JSON and count one more attempt."""
        ...

    async def complete(
        self,
        interface: str,
        item_id: str | Sequence[str],
        sender: str,
        turns: Sequence[Turn] = (),
    ) -> None:
        """Remove the item (or every item of a sequence of ids: the messages answered by
        one turn) from the inbox and append ``turns`` to the sender's history, in one
        atomic step. Ids no longer in the inbox are skipped."""
        ...

    async def seen(self, interface: str, key: str) -> bool:
        """Dedupe for non-message keys (e.g. ``status:<id>:<status>``): ``True`` if ``key``
        was already marked within the TTL, else mark it and answer ``False``."""
        ...

    # -- statuses -----------------------------------------------------------------------
    async def advance_status(self, interface: str, message_id: str, status: str) -> bool:
        """Move an outbound message's delivery state forward (sent < delivered < read <
        played; failed is final). Answer ``False`` if the state would not advance."""
        ...

    async def get_status(self, interface: str, message_id: str) -> str | None:
        """The outbound message's delivery state, or ``None`` if unknown or expired."""
        ...

    # -- history and window -------------------------------------------------------------
    async def get_history(
        self, interface: str, sender: str, limit: int | None = None
    ) -> list[Turn]:
        """The sender's turns, oldest first (the last ``limit`` if given)."""
        ...

    async def append_history(self, interface: str, sender: str, turns: Sequence[Turn]) -> None:
        """Append ``turns`` to the sender's history (outside any inbox item)."""
        ...

    async def clear_history(self, interface: str, sender: str) -> None:
        """Forget this sender's history only."""
        ...

    async def touch_inbound(self, interface: str, sender: str, at: datetime) -> None:
        """Record an inbound message time (kept if later than the stored one)."""
        ...

    async def last_inbound(self, interface: str, sender: str) -> datetime | None:
        """When the sender last wrote (aware UTC), or ``None``: the 24-hour window."""
        ...

    # -- heartbeat and leases -----------------------------------------------------------
    async def get_heartbeat_recipient(self, interface: str) -> str | None:
        """The stored heartbeat recipient, or ``None``."""
        ...

    async def set_heartbeat_recipient(
        self, interface: str, sender: str, *, overwrite: bool = False
    ) -> str:
        """Set the recipient unless one is set (or ``overwrite``); answer the one in force."""
        ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the named lease for ``owner`` for ``ttl`` seconds. ``False`` if
        another owner holds an unexpired lease."""
        ...

    async def renew_leases(self, names: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """:meth:`acquire_lease` for each of ``names`` in one call (the lease keeper renews
        every lease a process holds at once); one answer per name."""
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        ...

    # -- handoff ------------------------------------------------------------------------
    async def set_handoff(self, interface: str, contact: str, record: str | None) -> None:
        """Store the handoff record of ``contact``, replacing any; ``None`` deletes it
        (deleting a record that is not there is no error).

        A handoff record says a person (an operator) has taken the conversation with
        ``contact`` over from the agent. ``record`` is opaque JSON text whose format the
        hosting layer owns; the store keeps it as it is. Like the history, it is durable:
        the SQLite and Redis stores keep it across restarts and share it between the
        processes on the same file or server (each sees a change at its next read).
        """
        ...

    async def get_handoff(self, interface: str, contact: str) -> str | None:
        """The handoff record of ``contact`` (see :meth:`set_handoff`), or ``None``."""
        ...

    async def handoffs(self, interface: str) -> dict[str, str]:
        """Every contact of the interface with a handoff record -> its record."""
        ...
