"""An interface's configuration: resolved once, validated at construction, then frozen.

:meth:`InterfaceSettings.resolve` applies the ``WHATSAPP_*`` environment fallbacks,
normalises numbers and ids, and refuses impossible combinations with one clear error when
the interface is built, not at its first message. Every other part of the hosting layer
reads its options from the resulting :class:`InterfaceSettings`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError
from ..numbers import normalize_id, normalize_number
from ..secret import Secret

if TYPE_CHECKING:
    from ..agents import Agent
    from ..heartbeat import HeartbeatConfig

__all__ = [
    "DEFAULT_ANSWER_TYPES",
    "DEFAULT_APOLOGY",
    "DEFAULT_RESET_MESSAGE",
    "InterfaceMode",
    "InterfaceSettings",
    "env_secret",
]

DEFAULT_APOLOGY = "Sorry, something went wrong while answering. Please try again in a moment."
DEFAULT_RESET_MESSAGE = "Conversation reset. Let's start over!"
DEFAULT_VOICE_APOLOGY = (
    "Sorry, I could not understand your voice message. Could you type it instead?"
)
DEFAULT_HANDOFF_MESSAGE = "I have asked a person to take over. They will answer you here."
DEFAULT_RESUME_MESSAGE = "You are chatting with the assistant again."
#: ``async (audio: bytes, mime_type: str) -> str``: a voice note's transcript.
Transcriber = Callable[[bytes, str], Awaitable[str]]
#: Message types answered by default; others (reaction, edit, revoke, system, unsupported,
#: unknown future types) reach the agent only when listed in ``answer_types``.
DEFAULT_ANSWER_TYPES = frozenset(
    {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "order",
    }
)


class InterfaceMode(StrEnum):
    """TASK: each message stands alone. CHAT: per-sender conversation history."""

    TASK = "task"
    CHAT = "chat"


def env_secret(value: str | Secret | None, var: str) -> Secret | None:
    """``value`` as a :class:`Secret`, else the environment variable ``var``, else ``None``."""
    if isinstance(value, Secret):
        value = value.reveal()
    text = value or os.environ.get(var)
    return Secret(text) if text else None


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceSettings:
    """Every option of a :class:`~wa_agent.WhatsAppInterface` (see its docstring), resolved.

    Secrets that the simulator or a test may still fill in after construction
    (``verify_token``, ``app_secret``) and the Graph ``base_url`` live on the interface
    itself; everything here is fixed for the interface's life.
    """

    name: str
    mode: InterfaceMode
    prefix: str
    reset_command: str | None
    access_token: Secret | None
    phone_number_id: str | None
    allowed_numbers: frozenset[str] | None
    heartbeat_recipient: str | None
    api_version: str
    max_concurrency: int
    max_concurrency_per_sender: int
    debounce: float
    interrupt: bool
    agent_timeout: float | None
    shutdown_timeout: float
    history_limit: int | None
    answer_types: frozenset[str]
    apology: str
    reset_message: str
    heartbeat_template: dict[str, Any] | None
    heartbeat_config: HeartbeatConfig | None
    heartbeat_lease_ttl: float | None
    require_signature: bool
    max_body: int
    sweep_interval: float
    lease_ttl: float
    max_queued_senders: int
    media_max_bytes: int | None
    max_pending_per_sender: int
    max_pending: int
    receive_only: bool
    transcriber: Transcriber | None = None
    voice_apology: str = DEFAULT_VOICE_APOLOGY
    handoff_command: str | None = "/human"
    handoff_message: str = DEFAULT_HANDOFF_MESSAGE
    handoff_timeout: float | None = None
    resume_message: str | None = DEFAULT_RESUME_MESSAGE

    @classmethod
    def resolve(
        cls,
        agent: Agent,
        *,
        heartbeat: object,
        heartbeat_period: float | timedelta | None,
        heartbeat_message: str | None,
        mode: InterfaceMode | str,
        prefix: str,
        access_token: str | Secret | None,
        phone_number_id: str | int | None,
        allowed_numbers: Iterable[str | int] | None,
        heartbeat_recipient: str | None,
        answer_types: Iterable[str] | None,
        heartbeat_template: dict[str, Any] | None,
        **options: Any,
    ) -> InterfaceSettings:
        """Validate and normalise the interface's keyword arguments (``options`` are the
        ones taken as they are)."""
        allowed = (
            None
            if allowed_numbers is None
            else frozenset(normalize_number(n) for n in allowed_numbers)
        )
        recipient = normalize_number(heartbeat_recipient) if heartbeat_recipient else None
        if recipient and allowed is not None and recipient not in allowed:
            raise ConfigurationError(
                "heartbeat_recipient is not in allowed_numbers: it would never be allowed "
                "to receive the heartbeat"
            )
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        settings = cls(
            mode=_mode(mode),
            prefix=prefix.rstrip("/"),
            access_token=env_secret(access_token, "WHATSAPP_ACCESS_TOKEN"),
            phone_number_id=_phone_number_id(phone_number_id),
            allowed_numbers=allowed,
            heartbeat_recipient=recipient,
            answer_types=(
                frozenset(answer_types) if answer_types is not None else DEFAULT_ANSWER_TYPES
            ),
            heartbeat_template=_check_template(heartbeat_template),
            heartbeat_config=_heartbeat_config(
                agent, heartbeat, heartbeat_period, heartbeat_message
            ),
            **options,
        )
        settings._check()
        return settings

    def _check(self) -> None:
        config = self.heartbeat_config
        if (
            config is not None
            and self.heartbeat_lease_ttl is not None
            and self.heartbeat_lease_ttl <= config.period_s
        ):
            raise ConfigurationError(
                "heartbeat_lease_ttl must be longer than the heartbeat period, or the holder "
                "loses it between beats and workers beat in turn"
            )
        if (
            self.max_queued_senders < 1
            or self.max_concurrency < 1
            or self.max_concurrency_per_sender < 1
        ):
            raise ValueError(
                "max_concurrency, max_concurrency_per_sender and "
                "max_queued_senders must be at least 1"
            )
        if not 0 <= self.debounce < 3600:
            raise ValueError(f"debounce must be seconds in [0, 3600), not {self.debounce!r}")
        if self.transcriber is not None and not callable(self.transcriber):
            raise TypeError(
                "transcriber must be an async callable (audio: bytes, "
                f"mime_type: str) -> str, not {type(self.transcriber).__name__}"
            )
        if self.interrupt and self.mode is not InterfaceMode.CHAT:
            raise ConfigurationError(
                "interrupt=True cancels a CHAT turn for the messages that follow it; in TASK "
                "mode every message is answered on its own (use mode='chat')"
            )
        if self.handoff_timeout is not None and not self.handoff_timeout > 0:
            raise ValueError(
                f"handoff_timeout must be positive seconds (or None), not {self.handoff_timeout!r}"
            )
        if self.handoff_command is not None and self.handoff_command == self.reset_command:
            raise ConfigurationError("handoff_command and reset_command cannot be the same")
        if self.max_pending_per_sender < 1 or self.max_pending < 1:
            raise ValueError("max_pending_per_sender and max_pending must be at least 1")

    def is_allowed(self, contact: str) -> bool:
        """Whether ``contact`` may use the bot (always, when no whitelist is set)."""
        allowed = self.allowed_numbers
        return allowed is None or normalize_number(contact) in allowed

    def replace(self, **changes: Any) -> InterfaceSettings:
        """A copy with ``changes`` applied (validated again)."""
        settings = dataclasses.replace(self, **changes)
        settings._check()
        return settings


def _mode(mode: InterfaceMode | str) -> InterfaceMode:
    try:
        return InterfaceMode(mode.lower() if isinstance(mode, str) else mode)
    except ValueError:
        raise ValueError(f"mode must be 'task' or 'chat', not {mode!r}") from None


def _phone_number_id(value: str | int | None) -> str | None:
    if value is None or value == "":
        value = os.environ.get("WHATSAPP_PHONE_NUMBER_ID") or None
        field = "WHATSAPP_PHONE_NUMBER_ID"
    else:
        field = "phone_number_id"
    try:
        return normalize_id(value, field)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _check_template(template: dict[str, Any] | None) -> dict[str, Any] | None:
    if template is None:
        return None
    if (
        not isinstance(template, dict)
        or not isinstance(template.get("name"), str)
        or not template["name"]
    ):
        raise ConfigurationError(
            'heartbeat_template must be a dict like {"name": "check_in", "language": "en_US", '
            '"components": [...]} naming an approved template'
        )
    return dict(template)


def _heartbeat_config(
    agent: Agent, option: object, period: float | timedelta | None, message: str | None
) -> HeartbeatConfig | None:
    """The heartbeat the interface builds itself (``None``: none, or a passed-in one)."""
    from ..heartbeat import HeartbeatScheduler, _to_seconds, heartbeat_from_agent

    overrides = period is not None or message is not None
    if isinstance(option, HeartbeatScheduler) or option is False:
        if overrides:
            raise ConfigurationError(
                "heartbeat_period=/heartbeat_message= configure the heartbeat the interface "
                "builds; they cannot be combined with heartbeat=False or a HeartbeatScheduler"
            )
        return None
    if option is not None and option is not True:
        raise TypeError(
            "heartbeat must be None, True, False or a HeartbeatScheduler, not "
            f"{type(option).__name__}"
        )
    config = heartbeat_from_agent(agent, force=option is True or overrides)
    if config is None:
        return None
    if period is not None:
        seconds = (
            _to_seconds(period, "heartbeat_period")
            if isinstance(period, timedelta)
            else 60 * _to_seconds(period, "heartbeat_period (minutes)")
        )
        config = dataclasses.replace(config, period=timedelta(seconds=seconds))
    if message is not None:
        if not isinstance(message, str) or not message.strip():
            raise ValueError("heartbeat_message must be a non-empty string")
        config = dataclasses.replace(config, message=message)
    return config
