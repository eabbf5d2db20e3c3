"""Shared fixtures. Async tests run on asyncio through the anyio pytest plugin."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (uvicorn and the notebook recipes are asyncio-only)."""
    return "asyncio"
