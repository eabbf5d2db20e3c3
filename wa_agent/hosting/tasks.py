"""The interface's background tasks, owned in one place.

The hosting layer runs on asyncio (uvicorn and Jupyter kernels both do), so it uses asyncio
directly rather than a portability layer it could not honour. Every background task of an
interface (sender drains, the sweeper, the lease and typing keepers, status updates, the
heartbeat) is started by its :class:`TaskSet`: a failure is logged with the task's name
instead of vanishing, and :meth:`TaskSet.close` cancels and awaits all of them when the
interface stops. Nothing in ``wa_agent.hosting`` calls ``asyncio.ensure_future`` or
``create_task`` itself.

A task group (``asyncio.TaskGroup``) is not used because its contract is the opposite of a
server's: one failing child cancels every other one, and the group lives inside one ``async
with`` block, while an interface is started by one callback (ASGI lifespan startup, or the
first request) and stopped by another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["TaskSet"]

logger = logging.getLogger("wa_agent.interface")

T = TypeVar("T")


class TaskSet:
    """Starts, tracks and stops one interface's background tasks."""

    __slots__ = ("_prefix", "_tasks")

    def __init__(self, name: str) -> None:
        self._prefix = f"wa_agent:{name}:"
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task named ``wa_agent:<interface>:<name>``."""
        task = asyncio.get_running_loop().create_task(coro, name=self._prefix + name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every task and wait until all have finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
