"""wa_agent: host AI agents as WhatsApp bots on the WhatsApp Business Cloud API.

Public names are imported lazily, on first use, so ``import wa_agent`` stays fast and never
imports an optional extra (ipywidgets, pyngrok, redis) or even httpx and uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AccountError": "exceptions",
    "Agent": "agents",
    "AgentError": "exceptions",
    "AgentReply": "agents",
    "AgentRequest": "agents",
    "Attachment": "agents",
    "AuthenticationError": "exceptions",
    "BackgroundServer": "server",
    "BeatResult": "heartbeat",
    "ConfigurationError": "exceptions",
    "ConversationLog": "widget",
    "ConversationsWidget": "widget",
    "ErrorEvent": "events",
    "Event": "events",
    "HeartbeatScheduler": "heartbeat",
    "InboxItem": "stores.base",
    "InterfaceManager": "manager",
    "InterfaceMode": "interface",
    "InvalidPayload": "exceptions",
    "InvalidRequestError": "exceptions",
    "InvalidSignature": "exceptions",
    "LLMAgent": "llm",
    "LLMAuthError": "llm",
    "LLMError": "llm",
    "Media": "agents",
    "MediaError": "exceptions",
    "MediaRef": "events",
    "MediaUploadError": "exceptions",
    "MemorySessionStore": "stores.memory",
    "Message": "events",
    "MessageParser": "parser",
    "OutsideServiceWindow": "exceptions",
    "PermissionDeniedError": "exceptions",
    "RateLimitError": "exceptions",
    "RateLimiter": "sender",
    "RecipientError": "exceptions",
    "RetryPolicy": "sender",
    "SQLiteSessionStore": "stores.sqlite",
    "Secret": "secret",
    "Sender": "sender",
    "ServerError": "exceptions",
    "SessionStore": "stores.base",
    "SignatureVerifier": "signature",
    "SkipBeat": "heartbeat",
    "StatusUpdate": "events",
    "StoreError": "exceptions",
    "StoreLease": "heartbeat",
    "TemplateError": "exceptions",
    "TransportError": "exceptions",
    "Tunnel": "tunnel",
    "TunnelError": "tunnel",
    "Turn": "agents",
    "UnknownEvent": "events",
    "WAAgentError": "exceptions",
    "WebhookApp": "asgi",
    "WhatsAppAPIError": "exceptions",
    "WhatsAppInterface": "interface",
    "aopen_tunnel": "tunnel",
    "as_agent": "agents",
    "markdown_to_whatsapp": "text",
    "open_tunnel": "tunnel",
    "split_text": "text",
    "within_service_window": "heartbeat",
}

__all__ = [
    "AccountError",
    "Agent",
    "AgentError",
    "AgentReply",
    "AgentRequest",
    "Attachment",
    "AuthenticationError",
    "BackgroundServer",
    "BeatResult",
    "ConfigurationError",
    "ConversationLog",
    "ConversationsWidget",
    "ErrorEvent",
    "Event",
    "HeartbeatScheduler",
    "InboxItem",
    "InterfaceManager",
    "InterfaceMode",
    "InvalidPayload",
    "InvalidRequestError",
    "InvalidSignature",
    "LLMAgent",
    "LLMAuthError",
    "LLMError",
    "Media",
    "MediaError",
    "MediaRef",
    "MediaUploadError",
    "MemorySessionStore",
    "Message",
    "MessageParser",
    "OutsideServiceWindow",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiter",
    "RecipientError",
    "RetryPolicy",
    "SQLiteSessionStore",
    "Secret",
    "Sender",
    "ServerError",
    "SessionStore",
    "SignatureVerifier",
    "SkipBeat",
    "StatusUpdate",
    "StoreError",
    "StoreLease",
    "TemplateError",
    "TransportError",
    "Tunnel",
    "TunnelError",
    "Turn",
    "UnknownEvent",
    "WAAgentError",
    "WebhookApp",
    "WhatsAppAPIError",
    "WhatsAppInterface",
    "aopen_tunnel",
    "as_agent",
    "markdown_to_whatsapp",
    "open_tunnel",
    "split_text",
    "within_service_window",
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
    from .asgi import WebhookApp
    from .events import ErrorEvent, Event, MediaRef, Message, StatusUpdate, UnknownEvent
    from .exceptions import (
        AccountError,
        AgentError,
        AuthenticationError,
        ConfigurationError,
        InvalidPayload,
        InvalidRequestError,
        InvalidSignature,
        MediaError,
        MediaUploadError,
        OutsideServiceWindow,
        PermissionDeniedError,
        RateLimitError,
        RecipientError,
        ServerError,
        StoreError,
        TemplateError,
        TransportError,
        WAAgentError,
        WhatsAppAPIError,
    )
    from .heartbeat import (
        BeatResult,
        HeartbeatScheduler,
        SkipBeat,
        StoreLease,
        within_service_window,
    )
    from .interface import InterfaceMode, WhatsAppInterface
    from .llm import LLMAgent, LLMAuthError, LLMError
    from .manager import InterfaceManager
    from .parser import MessageParser
    from .secret import Secret
    from .sender import RateLimiter, RetryPolicy, Sender
    from .server import BackgroundServer
    from .signature import SignatureVerifier
    from .stores.base import InboxItem, SessionStore
    from .stores.memory import MemorySessionStore
    from .stores.sqlite import SQLiteSessionStore
    from .text import markdown_to_whatsapp, split_text
    from .tunnel import Tunnel, TunnelError, aopen_tunnel, open_tunnel
    from .widget import ConversationLog, ConversationsWidget
