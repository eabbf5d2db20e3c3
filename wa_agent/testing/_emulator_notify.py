"""Who hears about the emulator's accepted messages: subscribers and waiters.

:class:`Notifier` runs subscriber callbacks (sync or async) in acceptance order on one
background task, after the send was answered, so a callback may call back into the bot; and
it wakes whoever waits for a change (``wait_for_messages``). It also owns the "closing"
event that releases hung calls when the emulator shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

__all__ = ["Notifier"]

logger = logging.getLogger("wa_agent.testing.emulator")

T = TypeVar("T")


@final
class Notifier(Generic[T]):
    """Subscribers of accepted messages (``T``), change waiters and the closing event."""

    def __init__(self) -> None:
        self.subscribers: list[Callable[[T], Any]] = []
        self._queue: asyncio.Queue[T | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it."""
        self.subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self.subscribers.remove(callback)

        return unsubscribe

    def change_event(self) -> asyncio.Event:
        """An event set at the next change (a message accepted, a read recorded)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def closing_event(self) -> asyncio.Event:
        """An event set when the emulator closes (hung calls end then)."""
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    def changed(self) -> None:
        """Wake whoever waits for a change."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def publish(self, message: T) -> None:
        """Wake waiters and queue ``message`` for the subscribers."""
        self.changed()
        if not self.subscribers:
            return
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(
                self._run(self._queue), name="wa_agent-emulator-subscribers"
            )
        self._queue.put_nowait(message)

    async def drain(self) -> None:
        """Wait until every callback queued so far has run."""
        if self._queue is not None and self._worker is not None and not self._worker.done():
            await self._queue.join()

    async def aclose(self) -> None:
        """Set the closing event and stop the callback task after what is queued (5 s at
        most, then it is cancelled)."""
        if self._closing is not None:
            self._closing.set()
        worker, queue = self._worker, self._queue
        self._worker = self._queue = None
        if worker is not None and queue is not None and not worker.done():
            queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(worker), 5.0)
            except TimeoutError:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        self._closing = None

    async def _run(self, queue: asyncio.Queue[T | None]) -> None:
        while True:
            message = await queue.get()
            try:
                if message is None:
                    return
                for callback in list(self.subscribers):
                    try:
                        result = callback(message)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.warning("emulator subscriber %r failed", callback, exc_info=True)
            finally:
                queue.task_done()
