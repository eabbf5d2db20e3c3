"""How a contact's waiting messages become turns, and how replies keep their order.

A *turn* is one agent run and one reply for one or more inbox items of one contact.

* **CHAT mode** coalesces: everything the contact sent while their previous turn ran (or
  within ``debounce`` seconds) is answered in one turn; the reset command is always a turn
  of its own. :func:`next_chat_turn` picks the items of the next turn.
* **TASK mode** answers each message on its own: a turn is one item. Several of a
  contact's turns run at once; :class:`ReplyOrder` makes each reply wait for the one
  before it, so replies still arrive in the order the messages did.

A turn's progress (its reply parts, how many were sent, the history turns, the ids it
covers) is saved on its last item, its *anchor*: after a crash the same turn is resumed
from its parts, or, when the crash came before the reply was prepared, the whole turn is
done again (with whatever arrived meanwhile, in CHAT mode).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import Message
    from ..stores.base import InboxItem

__all__ = ["ReplyOrder", "Turn", "next_chat_turn", "progress_of"]


def progress_of(item: InboxItem) -> dict[str, Any]:
    """The progress JSON saved on ``item`` (empty when none)."""
    return json.loads(item.progress) if item.progress else {}


@dataclass(slots=True)
class Turn:
    """The items one agent run answers, their messages, and the saved progress."""

    items: list[InboxItem]
    messages: list[Message]
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def anchor(self) -> InboxItem:
        """The item the turn's progress is saved on (its last)."""
        return self.items[-1]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    @property
    def contact(self) -> str:
        return self.items[-1].sender

    @property
    def last(self) -> Message:
        """The newest message of the turn (read receipt, quote, ``AgentRequest.message``)."""
        return self.messages[-1]


def next_chat_turn(
    items: list[InboxItem],
    load: Callable[[InboxItem], Message],
    is_command: Callable[[Message], bool],
    limit: int,
) -> Turn:
    """The next CHAT turn from the contact's pending ``items`` (oldest first, not empty).

    A turn whose reply was already prepared (progress with parts, saved on its anchor)
    comes back as it was. Otherwise the turn is the longest run of items from the oldest
    that holds no command (the reset or the handoff command, answered by the interface
    itself) and no part of a prepared turn, at most ``limit`` items; a command at the head is
    a turn of its own.
    """
    prepared: dict[str, dict[str, Any]] = {}  # member id -> the prepared turn's progress
    for item in items:
        progress = progress_of(item)
        if "parts" in progress:
            for member in progress.get("covers", [item.id]):
                prepared[member] = progress
    head = items[0]
    if head.id in prepared:
        progress = prepared[head.id]
        covered = set(progress.get("covers", [head.id]))
        members = [item for item in items if item.id in covered]
        return Turn(members, [load(item) for item in members], progress)
    first = load(head)
    if is_command(first):
        return Turn([head], [first])
    members, messages = [head], [first]
    for item in items[1:limit]:
        if item.id in prepared:
            break
        message = load(item)
        if is_command(message):
            break
        members.append(item)
        messages.append(message)
    return Turn(members, messages)


class ReplyOrder:
    """One reply's place in its contact's order (TASK mode, several turns at once).

    :meth:`wait` returns when every earlier reply has been sent (or dropped), or the delay
    after which to retry when an earlier one is blocked by a transient send failure: then
    this reply must wait too, or it would overtake. :meth:`done` releases the next one.
    """

    __slots__ = ("_before", "_result")

    def __init__(self, before: ReplyOrder | None) -> None:
        self._before = before
        self._result: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> float | None:
        before = self._before
        if before is None:
            return None
        return await asyncio.shield(before._result)

    def done(self, blocked: float | None = None) -> None:
        """This reply is out (``blocked``: it will be retried after that many seconds)."""
        if not self._result.done():
            self._result.set_result(blocked)
        self._before = None  # no chain of finished replies kept alive
