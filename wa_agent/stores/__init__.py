"""Session stores: where history, the durable inbox and dedupe marks live.

``MemorySessionStore`` (one process, lost on exit), ``SQLiteSessionStore(path)`` (durable,
one host) and ``wa_agent.stores.redis.RedisSessionStore(url)`` (several processes or hosts;
import it from its module: it needs the ``redis`` extra, which this package never imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import DEFAULT_DEDUPE_TTL, InboxItem, SessionStore
from .memory import MemorySessionStore

if TYPE_CHECKING:
    from .sqlite import SQLiteSessionStore

__all__ = [
    "DEFAULT_DEDUPE_TTL",
    "InboxItem",
    "MemorySessionStore",
    "SQLiteSessionStore",
    "SessionStore",
]


def __getattr__(name: str) -> Any:  # PEP 562: sqlite3 and threading load on first use
    if name == "SQLiteSessionStore":
        return importlib.import_module(".sqlite", __name__).SQLiteSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
