"""Starting work on the event loop a widget belongs to, from whatever thread a click or a
trait change arrives on (the kernel's loop thread, or a comm thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["on_loop"]


def on_loop(
    loop: asyncio.AbstractEventLoop | None, start: Callable[[asyncio.AbstractEventLoop], None]
) -> bool:
    """Call ``start`` with the running event loop: at once on a thread that runs one, else
    on ``loop`` (the widget's) through ``call_soon_threadsafe``. ``False``, with nothing
    called, when neither is available."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        start(running)
        return True
    if loop is None or loop.is_closed() or not loop.is_running():
        return False
    loop.call_soon_threadsafe(start, loop)
    return True
