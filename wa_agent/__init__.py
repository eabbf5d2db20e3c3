"""wa_agent: host AI agents as WhatsApp bots on the WhatsApp Business Cloud API.

Names are imported lazily so ``import wa_agent`` stays fast and never imports an extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    # agents
    "Agent": "agents",
    "AgentReply": "agents",
    "AgentRequest": "agents",
    "Attachment": "agents",
    "Media": "agents",
    "Turn": "agents",
    "as_agent": "agents",
    # events
    "ErrorEvent": "events",
    "Event": "events",
    "MediaRef": "events",
    "Message": "events",
    "StatusUpdate": "events",
    "UnknownEvent": "events",
    # exceptions
    "AuthenticationError": "exceptions",
    "ConfigurationError": "exceptions",
    "InvalidPayload": "exceptions",
    "InvalidSignature": "exceptions",
    "MediaError": "exceptions",
    "OutsideServiceWindow": "exceptions",
    "RateLimitError": "exceptions",
    "StoreError": "exceptions",
    "WAAgentError": "exceptions",
    "WhatsAppAPIError": "exceptions",
    # pieces
    "Secret": "secret",
    "SignatureVerifier": "signature",
    "MessageParser": "parser",
    "InboxItem": "stores.base",
    "SessionStore": "stores.base",
    "MemorySessionStore": "stores.memory",
    "SQLiteSessionStore": "stores.sqlite",
}

__all__ = [
    "Agent",
    "AgentReply",
    "AgentRequest",
    "Attachment",
    "AuthenticationError",
    "ConfigurationError",
    "ErrorEvent",
    "Event",
    "InboxItem",
    "InvalidPayload",
    "InvalidSignature",
    "Media",
    "MediaError",
    "MediaRef",
    "MemorySessionStore",
    "Message",
    "MessageParser",
    "OutsideServiceWindow",
    "RateLimitError",
    "SQLiteSessionStore",
    "Secret",
    "SessionStore",
    "SignatureVerifier",
    "StatusUpdate",
    "StoreError",
    "Turn",
    "UnknownEvent",
    "WAAgentError",
    "WhatsAppAPIError",
    "as_agent",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wa_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .agents import Agent, AgentReply, AgentRequest, Attachment, Media, Turn, as_agent
    from .events import ErrorEvent, Event, MediaRef, Message, StatusUpdate, UnknownEvent
    from .exceptions import (
        AuthenticationError,
        ConfigurationError,
        InvalidPayload,
        InvalidSignature,
        MediaError,
        OutsideServiceWindow,
        RateLimitError,
        StoreError,
        WAAgentError,
        WhatsAppAPIError,
    )
    from .parser import MessageParser
    from .secret import Secret
    from .signature import SignatureVerifier
    from .stores.base import InboxItem, SessionStore
    from .stores.memory import MemorySessionStore
    from .stores.sqlite import SQLiteSessionStore
