"""The ASGI callable's types, shared by the webhook app, the manager and the emulator
(kept here so the emulator need not import the parser and pydantic)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIMessage", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
