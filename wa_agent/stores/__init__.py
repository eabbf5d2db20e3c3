"""Session stores: where history, the durable inbox and dedupe marks live.

``MemorySessionStore`` (one process, lost on exit), ``SQLiteSessionStore(path)`` (durable,
one host) and ``wa_agent.stores.redis.RedisSessionStore(url)`` (several processes or hosts).
"""

from __future__ import annotations

from .base import DEFAULT_DEDUPE_TTL, InboxItem, SessionStore

__all__ = ["DEFAULT_DEDUPE_TTL", "InboxItem", "SessionStore"]
