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
    "ButtonReply": "events",
    "CallbackConsumer": "asgi",
    "ConfigurationError": "exceptions",
    "Context": "events",
    "ConversationLog": "widget",
    "ConversationsWidget": "widget",
    "ErrorDetail": "events",
    "ErrorEvent": "events",
    "Event": "events",
    "HeartbeatScheduler": "heartbeat",
    "InboxItem": "stores.base",
    "InteractiveReply": "events",
    "InterfaceManager": "manager",
    "InterfaceMode": "interface",
    "InvalidPayload": "exceptions",
    "InvalidRequestError": "exceptions",
    "InvalidSignature": "exceptions",
    "LLMAgent": "llm",
    "LLMAuthError": "llm",
    "LLMError": "llm",
    "Location": "events",
    "Media": "agents",
    "MediaError": "exceptions",
    "MediaInfo": "sender",
    "MediaRef": "events",
    "MediaUploadError": "exceptions",
    "MemorySessionStore": "stores.memory",
    "Message": "events",
    "MessageParser": "parser",
    "Order": "events",
    "OrderItem": "events",
    "OutsideServiceWindow": "exceptions",
    "Overloaded": "asgi",
    "PermissionDeniedError": "exceptions",
    "PhoneWidget": "phone",
    "Pricing": "events",
    "RateLimitError": "exceptions",
    "RateLimiter": "sender",
    "Reaction": "events",
    "RecipientError": "exceptions",
    "RedactVerifyToken": "asgi",
    "Referral": "events",
    "RetryKind": "exceptions",
    "RetryPolicy": "sender",
    "SQLiteSessionStore": "stores.sqlite",
    "Secret": "secret",
    "Sender": "sender",
    "SenderStats": "sender",
    "ServerError": "exceptions",
    "ServerLimits": "server",
    "ServerStartError": "server",
    "SessionStore": "stores.base",
    "SharedContact": "events",
    "SignatureVerifier": "signature",
    "SkipBeat": "heartbeat",
    "StatusUpdate": "events",
    "StoreError": "exceptions",
    "StoreLease": "heartbeat",
    "SystemInfo": "events",
    "TemplateError": "exceptions",
    "TransportError": "exceptions",
    "Tunnel": "tunnel",
    "TunnelError": "tunnel",
    "Turn": "agents",
    "UnknownEvent": "events",
    "WAAgentError": "exceptions",
    "WebhookApp": "asgi",
    "WebhookConsumer": "asgi",
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
    "ButtonReply",
    "CallbackConsumer",
    "ConfigurationError",
    "Context",
    "ConversationLog",
    "ConversationsWidget",
    "ErrorDetail",
    "ErrorEvent",
    "Event",
    "HeartbeatScheduler",
    "InboxItem",
    "InteractiveReply",
    "InterfaceManager",
    "InterfaceMode",
    "InvalidPayload",
    "InvalidRequestError",
    "InvalidSignature",
    "LLMAgent",
    "LLMAuthError",
    "LLMError",
    "Location",
    "Media",
    "MediaError",
    "MediaInfo",
    "MediaRef",
    "MediaUploadError",
    "MemorySessionStore",
    "Message",
    "MessageParser",
    "Order",
    "OrderItem",
    "OutsideServiceWindow",
    "Overloaded",
    "PermissionDeniedError",
    "PhoneWidget",
    "Pricing",
    "RateLimitError",
    "RateLimiter",
    "Reaction",
    "RecipientError",
    "RedactVerifyToken",
    "Referral",
    "RetryKind",
    "RetryPolicy",
    "SQLiteSessionStore",
    "Secret",
    "Sender",
    "SenderStats",
    "ServerError",
    "ServerLimits",
    "ServerStartError",
    "SessionStore",
    "SharedContact",
    "SignatureVerifier",
    "SkipBeat",
    "StatusUpdate",
    "StoreError",
    "StoreLease",
    "SystemInfo",
    "TemplateError",
    "TransportError",
    "Tunnel",
    "TunnelError",
    "Turn",
    "UnknownEvent",
    "WAAgentError",
    "WebhookApp",
    "WebhookConsumer",
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
    from .asgi import CallbackConsumer, Overloaded, RedactVerifyToken, WebhookApp, WebhookConsumer
    from .events import (
        ButtonReply,
        Context,
        ErrorDetail,
        ErrorEvent,
        Event,
        InteractiveReply,
        Location,
        MediaRef,
        Message,
        Order,
        OrderItem,
        Pricing,
        Reaction,
        Referral,
        SharedContact,
        StatusUpdate,
        SystemInfo,
        UnknownEvent,
    )
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
        RetryKind,
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
    from .phone import PhoneWidget
    from .secret import Secret
    from .sender import MediaInfo, RateLimiter, RetryPolicy, Sender, SenderStats
    from .server import BackgroundServer, ServerLimits, ServerStartError
    from .signature import SignatureVerifier
    from .stores.base import InboxItem, SessionStore
    from .stores.memory import MemorySessionStore
    from .stores.sqlite import SQLiteSessionStore
    from .text import markdown_to_whatsapp, split_text
    from .tunnel import Tunnel, TunnelError, aopen_tunnel, open_tunnel
    from .widget import ConversationLog, ConversationsWidget
