"""Shared fixtures. Async tests run on asyncio through the anyio pytest plugin."""

from __future__ import annotations

import pytest

# A real redis-server per test worker (started on first use, killed at the end).
from tests.redis_server import redis_url  # noqa: F401


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (uvicorn and the notebook recipes are asyncio-only)."""
    return "asyncio"
