"""What an agent receives and answers, and adapters that turn any agent-shaped thing into one.

An agent is anything that answers an :class:`AgentRequest`:

* an ``async def`` or plain function (plain ones run in a worker thread) taking the request
  and returning a ``str`` or an :class:`AgentReply`;
* an object of another agent framework, adapted by duck typing: ``do_async(task)``,
  ``arun(...)``, ``ainvoke(...)`` or ``run(...)`` (no framework is imported);
* an object with an ``async def answer(request)`` method (what :class:`~wa_agent.LLMAgent` has).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import anyio.to_thread

if TYPE_CHECKING:
    from .events import Message

__all__ = [
    "Agent",
    "AgentFunction",
    "AgentReply",
    "AgentRequest",
    "Attachment",
    "Media",
    "Turn",
    "as_agent",
]


@dataclass(frozen=True, slots=True)
class Attachment:
    """Media the user sent, already downloaded: ``data`` holds the bytes."""

    kind: str  # image, video, audio, document, sticker
    data: bytes
    mime_type: str
    filename: str | None = None
    caption: str | None = None
    voice: bool = False

    def __repr__(self) -> str:
        return (
            f"Attachment(kind={self.kind!r}, mime_type={self.mime_type!r}, "
            f"size={len(self.data)}, filename={self.filename!r})"
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation's history."""

    role: Literal["user", "assistant"]
    text: str
    at: datetime | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """Media for the agent to send: ``data`` is bytes, a local path, a link or a media id.

    ``kind`` is guessed from ``mime_type`` (or the file name) when not given.
    """

    data: bytes | Path | str
    mime_type: str | None = None
    filename: str | None = None
    caption: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """Everything an agent is given about one inbound message (or a heartbeat/greeting).

    ``history`` holds the sender's previous turns in CHAT mode (empty in TASK mode), oldest
    first, never another sender's. ``purpose`` is ``"message"`` for a user message,
    ``"heartbeat"`` for a scheduled proactive message and ``"greeting"`` after a reset.

    In CHAT mode one request may answer several messages the user sent in a row (a
    coalesced turn): ``messages`` holds each of them in order, ``text`` joins their texts
    with newlines, ``attachments`` holds the media of all of them and ``message`` is the
    newest. For a single message, ``messages == (message,)``.
    """

    text: str
    sender: str
    attachments: tuple[Attachment, ...] = ()
    history: tuple[Turn, ...] = ()
    message: Message | None = None
    profile_name: str | None = None
    interface: str = "WhatsApp"
    purpose: Literal["message", "heartbeat", "greeting"] = "message"
    messages: tuple[Message, ...] = ()


@dataclass(frozen=True)
class AgentReply:
    """An agent's answer: text (Markdown is converted), plus images and files to send."""

    text: str | None = None
    images: Sequence[Media | bytes | Path | str] = field(default_factory=tuple)
    files: Sequence[Media | bytes | Path | str] = field(default_factory=tuple)


AgentFunction = Callable[[AgentRequest], "Awaitable[str | AgentReply] | str | AgentReply"]


@runtime_checkable
class Agent(Protocol):
    """The normalised agent interface the hosting layer calls."""

    async def answer(self, request: AgentRequest) -> AgentReply:
        """Answer one request (a user message, a heartbeat or a greeting)."""
        ...


def _to_reply(value: Any) -> AgentReply:
    if isinstance(value, AgentReply):
        return value
    if value is None:
        return AgentReply()
    if isinstance(value, str):
        return AgentReply(text=value)
    # Framework results: RunResponse.content, AIMessage.content, {"output": ...}
    for attr in ("content", "output", "text"):
        inner = getattr(value, attr, None)
        if isinstance(inner, str):
            return AgentReply(text=inner)
    if isinstance(value, dict):
        for key in ("output", "content", "text", "answer"):
            if isinstance(value.get(key), str):
                return AgentReply(text=value[key])
    return AgentReply(text=str(value))


def _prompt(request: AgentRequest) -> str:
    """The request as one string, for frameworks that take a plain task/prompt."""
    parts: list[str] = []
    for turn in request.history:
        parts.append(f"{turn.role}: {turn.text}")
    if parts:
        parts.append(f"user: {request.text}")
        return "\n".join(parts)
    return request.text


class _FunctionAgent:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )
        self.wrapped = fn

    async def answer(self, request: AgentRequest) -> AgentReply:
        if self._is_async:
            result = await self._fn(request)
        else:
            result = await anyio.to_thread.run_sync(self._fn, request)
            if inspect.isawaitable(result):
                result = await result
        return _to_reply(result)


class _DuckAgent:
    """Adapts an object of another agent framework by the method it has."""

    def __init__(self, obj: Any, method: str) -> None:
        self.wrapped = obj
        self._method = method

    async def answer(self, request: AgentRequest) -> AgentReply:
        fn = getattr(self.wrapped, self._method)
        prompt = _prompt(request)
        if self._method == "ainvoke":
            result = await fn({"input": prompt, "messages": [("user", prompt)]})
        elif self._method in ("do_async", "arun"):
            result = await fn(prompt)
        else:  # run: may be sync or async
            if inspect.iscoroutinefunction(fn):
                result = await fn(prompt)
            else:
                result = await anyio.to_thread.run_sync(functools.partial(fn, prompt))
                if inspect.isawaitable(result):
                    result = await result
        return _to_reply(result)


def as_agent(obj: Any) -> Agent:
    """Normalise ``obj`` into an :class:`Agent` (see the module docstring for what fits).

    Raises ``TypeError`` naming the accepted shapes when ``obj`` fits none of them.
    """
    if isinstance(obj, (_FunctionAgent, _DuckAgent)):
        return obj
    answer = getattr(obj, "answer", None)
    if answer is not None and inspect.iscoroutinefunction(answer):
        return obj  # type: ignore[no-any-return]
    for method in ("do_async", "arun", "ainvoke"):
        if inspect.iscoroutinefunction(getattr(obj, method, None)):
            return _DuckAgent(obj, method)
    if callable(getattr(obj, "run", None)) and not inspect.isfunction(obj):
        return _DuckAgent(obj, "run")
    if callable(obj):
        return _FunctionAgent(obj)
    raise TypeError(
        f"{type(obj).__name__} is not an agent: pass an async or plain function taking an "
        "AgentRequest, or an object with answer(), do_async(), arun(), ainvoke() or run()"
    )


def agent_attribute(agent: Agent, name: str, default: Any = None) -> Any:
    """Read a configuration attribute (``heartbeat``, ``greeting``...) from the agent or
    the object it wraps."""
    if hasattr(agent, name):
        return getattr(agent, name)
    wrapped = getattr(agent, "wrapped", None)
    if wrapped is not None and hasattr(wrapped, name):
        return getattr(wrapped, name)
    return default
