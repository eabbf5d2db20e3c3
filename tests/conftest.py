"""Shared fixtures. Async tests run on asyncio through the anyio pytest plugin."""

from __future__ import annotations

import pytest

# A real redis-server per test worker (started on first use, killed at the end).
from tests.redis_server import redis_servers, redis_url  # noqa: F401


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (uvicorn and the notebook recipes are asyncio-only)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _unfrozen_gc() -> object:
    """A manager started through the ASGI lifespan tunes the garbage collector of the
    process (``InterfaceManager(tune_gc=None)``: freeze, rarer full collections); undo it
    after each test (a test may stop without closing) so the test process keeps collecting
    normally."""
    import gc

    thresholds = gc.get_threshold()
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
    gc.set_threshold(*thresholds)
