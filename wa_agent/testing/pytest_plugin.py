"""pytest plugin (registered automatically when wa_agent is installed): fixtures for
testing your own bot on the simulator.

::

    import pytest

    @pytest.mark.anyio
    async def test_greets(wa_simulator):
        sim = await wa_simulator(my_agent, mode="chat")
        reply = await sim.user("15551230001", "Alice").ask("hello")
        assert "Alice" in reply.text

``wa_simulator(bot, **options)`` starts a :class:`~wa_agent.testing.Simulator` (any number
per test) and stops each at the end of the test. Async tests run through anyio's pytest
plugin (``@pytest.mark.anyio``, or ``anyio_mode = "auto"`` in your pytest configuration).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .simulator import Simulator

__all__ = ["wa_simulator"]


@pytest.fixture
async def wa_simulator() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """Factory fixture: ``sim = await wa_simulator(bot, **options)``; stopped after the test."""
    from .simulator import Simulator

    started: list[Simulator] = []

    async def factory(bot: Any, **options: Any) -> Simulator:
        sim = Simulator(bot, **options)
        await sim.start()
        started.append(sim)
        return sim

    try:
        yield factory
    finally:
        for sim in reversed(started):
            await sim.stop()
