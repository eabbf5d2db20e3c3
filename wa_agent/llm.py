"""A small agent over a language model's HTTP API: no agent framework needed.

:class:`LLMAgent` answers an :class:`~wa_agent.agents.AgentRequest` by calling one of

* ``anthropic/<model>``: the Anthropic Messages API (``POST /v1/messages``);
* ``openai/<model>``: the OpenAI Chat Completions API (``POST /chat/completions``);
* ``openai-compatible/<model>``: the same protocol against any server that speaks it
  (Ollama, vLLM, LM Studio, llama.cpp), at the ``base_url`` you give.

It sends the system prompt, the sender's history (CHAT mode) and the new message with its
images (and PDFs where the API takes them); media a model cannot take (voice notes, video,
other documents) is described in text instead, e.g. ``[voice note, audio/ogg, 12 KB]``.

Errors::

    AgentError                  (wa_agent.exceptions) the hosting layer apologises to the user
     └─ LLMError                the model API failed  (.provider .http_status .error_type
         │                       .request_id .retryable)
         └─ LLMAuthError        401/403: the API key is wrong or lacks permission

Throttling (429), overload (529, ``overloaded_error``), 5xx, timeouts and connection errors
are retried with exponential backoff that honours ``Retry-After``, at most ``max_retries``
times; then :class:`LLMError` is raised. Every attempt is bounded by ``timeout`` seconds.

Importing this module is cheap: ``httpx`` is imported when the first request is made.

What the model is asked (the system prompt, the conversation, media as parts or described
in text, each API's wire form) is built in ``wa_agent._llm_prompt``; the WhatsApp tools it
may call are in ``wa_agent._llm_tools``. This module holds the agent, its settings and the
HTTP calls with their retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Self, final

import anyio

from ._llm_prompt import (
    Msg,
    anthropic_content,
    conversation,
    describe_attachment,
    openai_content,
    system_prompt,
)
from .agents import AgentReply, AgentRequest
from .exceptions import AgentError, ConfigurationError
from .secret import Secret

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_HEARTBEAT_MESSAGE",
    "LLMAgent",
    "LLMAuthError",
    "LLMError",
    "describe_attachment",
]

logger = logging.getLogger(__name__)

Provider = Literal["anthropic", "openai", "openai-compatible"]

ANTHROPIC_VERSION: Final = "2023-06-01"
ANTHROPIC_BASE_URL: Final = "https://api.anthropic.com"
OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
_ENV_KEYS: Final[dict[str, str]] = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}

DEFAULT_HEARTBEAT_MESSAGE: Final = (
    "It is time for your scheduled check-in. Send the user one short, useful proactive "
    "message: follow up on the conversation so far, or a friendly check-in if there is "
    "nothing to follow up on."
)
_RETRY_STATUSES: Final = frozenset({408, 409, 429, 529})
_INITIAL_BACKOFF: Final = 0.5
_MAX_BACKOFF: Final = 8.0
_THINK_RE: Final = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


class LLMError(AgentError):
    """The language model's API failed to give an answer.

    ``provider`` is ``anthropic``, ``openai`` or ``openai-compatible``; ``http_status`` the
    last HTTP status (``None`` for a timeout or connection error); ``error_type`` the API's
    error type (``overloaded_error``, ``rate_limit_error``, ``insufficient_quota``...);
    ``request_id`` the provider's request id to quote to its support; ``retryable`` whether
    the same request can succeed later. The hosting layer turns it into a short apology.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        http_status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.http_status = http_status
        self.error_type = error_type
        self.request_id = request_id
        self.retryable = retryable


class LLMAuthError(LLMError):
    """401/403: the model API refused the API key. Check the key (the message names the
    environment variable) and that it may use the model."""


def _parse_model(model: str) -> tuple[Provider, str]:
    provider, sep, name = model.partition("/")
    if not sep or not name:
        raise ConfigurationError(
            f"model {model!r} must be '<provider>/<model>', e.g. 'anthropic/claude-sonnet-4-6', "
            "'openai/gpt-4o-mini' or 'openai-compatible/llama3.2' (with base_url=...)"
        )
    if provider == "anthropic":
        return "anthropic", name
    if provider == "openai":
        return "openai", name
    if provider == "openai-compatible":
        return "openai-compatible", name
    raise ConfigurationError(
        f"unknown model provider {provider!r} in {model!r}: use 'anthropic/...', 'openai/...' "
        "or 'openai-compatible/...' (with base_url= for Ollama, vLLM, LM Studio, llama.cpp)"
    )


def _read_first(folder: Path, names: Sequence[str]) -> str | None:
    for name in names:
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8").strip()
            if text:
                return text
    return None


def _check_limits(
    *,
    max_tokens: int,
    timeout: float,
    max_retries: int,
    max_concurrent_requests: int | None,
    max_throttle_wait: float,
    heartbeat: bool,
    heartbeat_period: float,
) -> None:
    """Refuse numbers an LLMAgent cannot work with (ValueError naming the argument)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
    if max_concurrent_requests is not None and max_concurrent_requests < 1:
        raise ValueError(
            "max_concurrent_requests must be at least 1 (or None: no bound), "
            f"not {max_concurrent_requests}"
        )
    if max_throttle_wait < 0:
        raise ValueError(f"max_throttle_wait must be 0 or more, not {max_throttle_wait}")
    if heartbeat and not heartbeat_period > 0:
        raise ValueError(
            f"heartbeat_period must be a positive number of minutes, not {heartbeat_period}"
        )


def _api_key(
    provider: Provider, model: str, api_key: str | Secret | None, base_url: str | None
) -> Secret | None:
    """The key to send: ``api_key``, else the provider's environment variable; an
    ``openai-compatible`` server gets only a key passed in, and needs ``base_url``."""
    if provider == "openai-compatible":
        if not base_url:
            raise ConfigurationError(
                f"model {model!r} needs base_url=..., the server's OpenAI-compatible "
                "endpoint, e.g. 'http://localhost:11434/v1' (Ollama), "
                "'http://localhost:8000/v1' (vLLM), 'http://localhost:1234/v1' (LM Studio)"
            )
        key: str | Secret | None = api_key
    else:
        env = _ENV_KEYS[provider]
        key = api_key if api_key is not None else os.environ.get(env)
        if not key:
            raise ConfigurationError(
                f"no API key for {model!r}: set the {env} environment variable or pass api_key=..."
            )
    return Secret(key) if key else None


def _from_workspace(
    workspace: Path, system: str | None, greeting: str | None
) -> tuple[str | None, str | None]:
    """``system`` and ``greeting``, each read from the workspace folder when not given
    (``SYSTEM.md`` + ``PERSONA.md``; ``GREETING.md`` or ``greeting.txt``)."""
    if not workspace.is_dir():
        raise ConfigurationError(f"workspace {str(workspace)!r} is not a folder")
    if system is None:
        parts = [
            t
            for t in (
                _read_first(workspace, ("SYSTEM.md", "system.md")),
                _read_first(workspace, ("PERSONA.md", "persona.md")),
            )
            if t
        ]
        system = "\n\n".join(parts) or None
    if greeting is None:
        greeting = _read_first(
            workspace, ("GREETING.md", "greeting.md", "GREETING.txt", "greeting.txt")
        )
    return system, greeting


def _parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``retry-after`` seconds or
    HTTP date), or ``None``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return max(0.0, value) if math.isfinite(value) else None


def _strip_thinking(text: str) -> str:
    """Drop a leading ``<think>...</think>`` block (reasoning models served by Ollama/vLLM)."""
    return _THINK_RE.sub("", text, count=1)


@final
class LLMAgent:
    """An agent backed by a language model API, for :class:`~wa_agent.WhatsAppInterface`.

    ``model`` is ``"anthropic/<model>"``, ``"openai/<model>"`` or
    ``"openai-compatible/<model>"`` (the latter needs ``base_url``, e.g.
    ``"http://localhost:11434/v1"`` for Ollama). ``api_key`` defaults to
    ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY``; a missing key raises
    :class:`~wa_agent.exceptions.ConfigurationError` naming the variable. An
    ``openai-compatible`` server gets only the ``api_key`` you pass (never your OpenAI key).

    ``system`` is the system prompt; ``workspace`` is a folder whose ``SYSTEM.md`` /
    ``PERSONA.md`` supply it and whose ``GREETING.md`` / ``greeting.txt`` supply ``greeting``
    when those arguments are not given. ``greeting`` (the text a greeting after ``/reset`` is
    generated from) and ``heartbeat``, ``heartbeat_period`` (minutes), ``heartbeat_message``
    and ``name`` are read by the hosting layer.

    ``timeout`` bounds each attempt in seconds; ``max_retries`` bounds the retries of
    failed (5xx) and timed-out requests; a ``Retry-After`` longer than ``max_retry_delay``
    seconds fails at once. The provider is the scarce resource: at most
    ``max_concurrent_requests`` model requests are in flight at once (64; ``None``: no
    bound; the others wait their turn), and a throttled answer (429, or Anthropic's
    ``overloaded_error``) pauses *every* request of this agent for its ``Retry-After`` (or a
    growing backoff), retried for up to ``max_throttle_wait`` seconds of waiting in all, so
    a bot with a rate-limited key slows down instead of failing. ``client`` lets you share an
    ``httpx.AsyncClient`` (it is then yours to close); otherwise one is created on first use
    and closed by :meth:`aclose` or ``async with``. ``sleep`` replaces ``anyio.sleep`` between
    retries (tests, custom clocks).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | Secret | None = None,
        base_url: str | None = None,
        system: str | None = None,
        name: str | None = None,
        temperature: float | None = None,
        max_tokens: int = 1024,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_delay: float = 60.0,
        heartbeat: bool = False,
        heartbeat_period: float = 30,
        heartbeat_message: str = DEFAULT_HEARTBEAT_MESSAGE,
        greeting: str | None = None,
        workspace: str | os.PathLike[str] | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        tools: bool | Sequence[str] | None = None,
        max_tool_rounds: int = 3,
        max_concurrent_requests: int | None = 64,
        max_throttle_wait: float = 120.0,
    ) -> None:
        from ._llm_tools import tool_names

        provider, model_id = _parse_model(model)
        if max_tool_rounds < 0:
            raise ValueError(f"max_tool_rounds must be 0 or more, not {max_tool_rounds}")
        #: The WhatsApp tools offered to the model (see :mod:`wa_agent._llm_tools`).
        self.tools = tool_names(tools, default=provider != "openai-compatible")
        self.max_tool_rounds = max_tool_rounds
        _check_limits(
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            max_concurrent_requests=max_concurrent_requests,
            max_throttle_wait=max_throttle_wait,
            heartbeat=heartbeat,
            heartbeat_period=heartbeat_period,
        )
        self.max_concurrent_requests = max_concurrent_requests
        self.max_throttle_wait = float(max_throttle_wait)
        self._slots = (
            anyio.Semaphore(max_concurrent_requests)
            if max_concurrent_requests is not None
            else None
        )
        self._paused_until = 0.0  # a 429's Retry-After holds every request until then
        self.model = model
        self.provider: Provider = provider
        self.model_id = model_id
        self.name = name
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_retry_delay = float(max_retry_delay)
        self.heartbeat = heartbeat
        self.heartbeat_period = heartbeat_period
        self.heartbeat_message = heartbeat_message

        self._api_key = _api_key(provider, model, api_key, base_url)
        default_base = ANTHROPIC_BASE_URL if provider == "anthropic" else OPENAI_BASE_URL
        self.base_url = (base_url or default_base).rstrip("/")
        path = "/v1/messages" if provider == "anthropic" else "/chat/completions"
        self._url = self.base_url + path

        self.workspace = Path(workspace) if workspace is not None else None
        if self.workspace is not None:
            system, greeting = _from_workspace(self.workspace, system, greeting)
        self.system = system
        self.greeting = greeting

        self._client = client
        self._owns_client = client is None
        self._sleep: Callable[[float], Awaitable[None]] = sleep or anyio.sleep

    def __repr__(self) -> str:
        return (
            f"LLMAgent(model={self.model!r}, name={self.name!r}, base_url={self.base_url!r}, "
            f"api_key={self._api_key!r})"
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this agent created (a client passed in is left open).

        Idempotent; a later :meth:`answer` opens a new client.
        """
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await client.aclose()

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
            )
            self._owns_client = True
        return self._client

    # -- the agent -----------------------------------------------------------------------

    async def answer(self, request: AgentRequest) -> AgentReply:
        """Ask the model; return its reply. Raises :class:`LLMError` when the API fails.

        With tools (see ``tools=``) the model may first call them: each call is answered
        with a tool result and the model asked again, at most ``max_tool_rounds`` times
        (the last round forbids more calls); the calls' effects (choices, a reaction, a
        location) join the final text in the :class:`~wa_agent.AgentReply`.
        """
        from ._llm_tools import ToolEffects

        messages = conversation(
            request,
            provider=self.provider,
            greeting=self.greeting,
            heartbeat_message=self.heartbeat_message,
        )
        system = system_prompt(self.system, self.name, request)
        names = self._tools_for(request)
        effects = ToolEffects(names)
        if self.provider == "anthropic":
            body = self._anthropic_body(system, messages)
            text = await self._anthropic_rounds(body, effects)
        else:
            body = self._openai_body(system, messages)
            text = await self._openai_rounds(body, effects)
        return effects.reply(text)

    def _tools_for(self, request: AgentRequest) -> tuple[str, ...]:
        from ._llm_tools import TOOLS

        answering = request.purpose == "message" and request.message is not None
        return tuple(n for n in self.tools if answering or not TOOLS[n].needs_message)

    async def _anthropic_rounds(self, body: dict[str, Any], effects: Any) -> str | None:
        from ._llm_tools import anthropic_tools

        if effects.names:
            body["tools"] = anthropic_tools(effects.names)
        earlier_text = ""
        for round_ in range(self.max_tool_rounds + 1):
            if effects.names and round_ == self.max_tool_rounds:
                body["tool_choice"] = {"type": "none"}
            data = await self._post(body)
            content = data.get("content") if isinstance(data, dict) else None
            blocks = (
                [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
            )
            calls = [b for b in blocks if b.get("type") == "tool_use"]
            if not calls or round_ == self.max_tool_rounds:
                return self._anthropic_text(data, allow_empty=effects.any, fallback=earlier_text)
            earlier_text = "\n\n".join(
                t for t in (earlier_text, self._anthropic_text(data, allow_empty=True)) if t
            )
            results = []
            for call in calls:
                name = call.get("name")
                result, is_error = effects.call(
                    name if isinstance(name, str) else "", call.get("input")
                )
                logger.info(
                    "%s called tool %s (%s)", self.model, name, "error" if is_error else "ok"
                )
                entry: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": call.get("id"),
                    "content": result,
                }
                if is_error:
                    entry["is_error"] = True
                results.append(entry)
            body["messages"] = [
                *body["messages"],
                {"role": "assistant", "content": blocks},
                {"role": "user", "content": results},
            ]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _openai_rounds(self, body: dict[str, Any], effects: Any) -> str | None:
        from ._llm_tools import openai_tools

        if effects.names:
            body["tools"] = openai_tools(effects.names)
        earlier_text = ""
        for round_ in range(self.max_tool_rounds + 1):
            if effects.names and round_ == self.max_tool_rounds:
                body["tool_choice"] = "none"
            data = await self._post(body)
            choices = data.get("choices") if isinstance(data, dict) else None
            choice = choices[0] if isinstance(choices, list) and choices else None
            message = choice.get("message") if isinstance(choice, dict) else None
            raw_calls = message.get("tool_calls") if isinstance(message, dict) else None
            calls = (
                [c for c in raw_calls if isinstance(c, dict)] if isinstance(raw_calls, list) else []
            )
            if not calls or round_ == self.max_tool_rounds:
                return self._openai_text(data, allow_empty=effects.any, fallback=earlier_text)
            earlier_text = "\n\n".join(
                t for t in (earlier_text, self._openai_text(data, allow_empty=True)) if t
            )
            assert isinstance(message, dict)
            replies: list[dict[str, Any]] = []
            for call in calls:
                function = call.get("function")
                function = function if isinstance(function, dict) else {}
                name = function.get("name")
                result, is_error = effects.call(
                    name if isinstance(name, str) else "", function.get("arguments")
                )
                logger.info(
                    "%s called tool %s (%s)", self.model, name, "error" if is_error else "ok"
                )
                replies.append({"role": "tool", "tool_call_id": call.get("id"), "content": result})
            assistant = {
                "role": "assistant",
                "content": message.get("content"),
                "tool_calls": calls,
            }
            body["messages"] = [*body["messages"], assistant, *replies]
        raise AssertionError("unreachable")  # pragma: no cover

    # -- Anthropic Messages API ----------------------------------------------------------

    def _anthropic_body(self, system: str, messages: list[Msg]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": self.max_tokens,
        }
        if system:
            body["system"] = system
        body["messages"] = [
            {"role": m.role, "content": anthropic_content(m.parts)} for m in messages
        ]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def _anthropic_text(self, data: Any, *, allow_empty: bool = False, fallback: str = "") -> str:
        content = data.get("content") if isinstance(data, dict) else None
        stop = data.get("stop_reason") if isinstance(data, dict) else None
        texts = [
            block["text"]
            for block in (content if isinstance(content, list) else [])
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]
        text = "".join(texts).strip() or fallback.strip()
        if stop == "max_tokens":
            logger.warning("%s reply cut off at max_tokens=%d", self.model, self.max_tokens)
        if not text and not allow_empty:
            raise LLMError(
                f"{self.model} returned no text (stop_reason={stop!r})",
                provider=self.provider,
                http_status=200,
            )
        return text

    # -- OpenAI Chat Completions ---------------------------------------------------------

    def _openai_body(self, system: str, messages: list[Msg]) -> dict[str, Any]:
        wire: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for m in messages:
            wire.append({"role": m.role, "content": openai_content(m.parts, m.role)})
        body: dict[str, Any] = {"model": self.model_id, "messages": wire}
        # OpenAI's own API deprecates max_tokens (reasoning models reject it); compatible
        # servers know only max_tokens.
        key = "max_completion_tokens" if self.provider == "openai" else "max_tokens"
        body[key] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def _openai_text(self, data: Any, *, allow_empty: bool = False, fallback: str = "") -> str:
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        text = ""
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):  # some compatible servers answer with parts
                text = "".join(
                    p.get("text", "")
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            if not text.strip() and isinstance(message.get("refusal"), str):
                text = message["refusal"]
        text = _strip_thinking(text).strip() or fallback.strip()
        if finish == "length":
            logger.warning("%s reply cut off at max_tokens=%d", self.model, self.max_tokens)
        if not text and not allow_empty:
            raise LLMError(
                f"{self.model} returned no text (finish_reason={finish!r})",
                provider=self.provider,
                http_status=200,
            )
        return text

    # -- HTTP with retries ---------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.provider == "anthropic":
            if self._api_key is not None:
                headers["x-api-key"] = self._api_key.reveal()
            headers["anthropic-version"] = ANTHROPIC_VERSION
        elif self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.reveal()}"
        return headers

    async def _post(self, body: dict[str, Any]) -> Any:
        client = self._get_client()
        content = json.dumps(body, ensure_ascii=False).encode()
        attempts = self.max_retries + 1
        attempt = 0
        throttled = 0.0  # seconds waited for throttling so far
        throttles = 0
        waited_out = 0.0  # the end of the last pause this request has waited for itself
        while True:
            attempt += 1
            if self._paused_until > waited_out:
                waited_out = await self._wait_for_pause()
            answer, failure, delay = await self._post_once(client, content, attempt, attempts)
            if failure is None:
                return answer
            throttle = failure.retryable and (
                failure.http_status == 429 or failure.error_type == "overloaded_error"
            )
            if throttle:  # its own budget: seconds of waiting, not attempts
                attempt -= 1
                throttles += 1
            if not failure.retryable or attempt >= attempts:
                raise failure
            if delay is None:
                tries = throttles if throttle else attempt
                backoff = min(_INITIAL_BACKOFF * 2 ** (tries - 1), _MAX_BACKOFF)
                delay = backoff * (1 - 0.25 * random.random())
            elif delay > self.max_retry_delay:
                raise LLMError(
                    f"{failure} (the server asks to wait {delay:g} s, more than "
                    f"max_retry_delay={self.max_retry_delay:g} s)",
                    provider=failure.provider,
                    http_status=failure.http_status,
                    error_type=failure.error_type,
                    request_id=failure.request_id,
                    retryable=True,
                )
            if throttle:
                if throttled + delay > self.max_throttle_wait:
                    raise failure
                throttled += delay
                waited_out = self._paused_until = max(self._paused_until, time.monotonic() + delay)
                logger.warning(
                    "%s: %s; every request waits %.1f s (throttled for %.0f s of "
                    "max_throttle_wait=%.0f s so far)",
                    self.model,
                    failure,
                    delay,
                    throttled,
                    self.max_throttle_wait,
                )
                await self._sleep(delay)
                continue
            logger.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)",
                self.model,
                failure,
                delay,
                attempt,
                attempts,
            )
            await self._sleep(delay)

    async def _post_once(
        self, client: Any, content: bytes, attempt: int, attempts: int
    ) -> tuple[Any, LLMError | None, float | None]:
        """One POST of the request: ``(the JSON answer, None, None)``, or ``(None, the
        failure, the delay the server asked for)``."""
        import httpx

        from ._transport import unlink_response

        started = time.perf_counter()
        try:
            async with self._slot():
                with anyio.fail_after(self.timeout):
                    response = await client.post(
                        self._url,
                        content=content,
                        headers=self._headers(),
                        timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                    )
        except (httpx.TimeoutException, TimeoutError):
            message = (
                f"{self.model} did not answer within {self.timeout:g} s "
                f"(attempt {attempt} of {attempts})"
            )
            return None, LLMError(message, provider=self.provider, retryable=True), None
        except httpx.TransportError as exc:
            message = f"could not reach {self.base_url} for {self.model}: {type(exc).__name__}"
            return None, LLMError(message, provider=self.provider, retryable=True), None
        unlink_response(response)  # no reference cycle left for the collector
        ms = (time.perf_counter() - started) * 1000
        logger.info(
            "%s POST %s -> %d in %.0f ms (attempt %d)",
            self.provider,
            self.model_id,
            response.status_code,
            ms,
            attempt,
        )
        if response.is_success:
            try:
                return response.json(), None, None
            except ValueError:
                raise LLMError(
                    f"{self.model} answered HTTP {response.status_code} with a body "
                    "that is not JSON (is base_url pointing at the API?)",
                    provider=self.provider,
                    http_status=response.status_code,
                ) from None
        return None, self._error_from_response(response), _parse_retry_after(response.headers)

    def _slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A place among ``max_concurrent_requests`` in-flight requests."""
        return self._slots if self._slots is not None else contextlib.nullcontext()

    async def _wait_for_pause(self) -> float:
        """Wait out a throttle pause another request of this agent was told about; answer
        the pause's end."""
        until = self._paused_until
        left = until - time.monotonic()
        if left > 0:
            await self._sleep(left)
        return until

    def _error_from_response(self, response: httpx.Response) -> LLMError:
        status = response.status_code
        error_type: str | None = None
        message: str | None = None
        code: str | None = None
        try:
            data = response.json()
        except ValueError:
            data = None
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raw_type, raw_msg, raw_code = err.get("type"), err.get("message"), err.get("code")
            error_type = raw_type if isinstance(raw_type, str) else None
            message = raw_msg if isinstance(raw_msg, str) else None
            code = raw_code if isinstance(raw_code, str) else None
            details = err.get("details")
            if isinstance(details, dict) and isinstance(details.get("error_code"), str):
                code = details["error_code"]
        elif isinstance(err, str):  # some compatible servers: {"error": "model not found"}
            message = err
        request_id = response.headers.get("request-id") or response.headers.get("x-request-id")
        if request_id is None and isinstance(data, dict):
            rid = data.get("request_id")
            request_id = rid if isinstance(rid, str) else None
        if message is not None:
            message = self._redact(message)[:300]

        detail = f"HTTP {status}"
        if error_type or code:
            detail += " " + "/".join(x for x in (error_type, code) if x)
        if message:
            detail += f": {message}"
        elif data is None:
            ctype = response.headers.get("content-type", "no content type")
            detail += f" (non-JSON body, {ctype.split(';')[0]})"

        if status in (401, 403):
            env = _ENV_KEYS.get(self.provider)
            where = (
                f"the {env} environment variable or the api_key argument"
                if env
                else "the api_key argument and the server's API key setting"
            )
            what = (
                "rejected the API key" if status == 401 else "refused the API key (no permission)"
            )
            return LLMAuthError(
                f"{self.model}: {self.base_url} {what} ({detail}); check {where}",
                provider=self.provider,
                http_status=status,
                error_type=error_type or code,
                request_id=request_id,
                retryable=False,
            )
        quota = code in ("insufficient_quota", "enforced_spend_limit_reached") or (
            error_type == "insufficient_quota"
        )
        retryable = (
            status in _RETRY_STATUSES or status >= 500 or error_type == "overloaded_error"
        ) and not quota
        should_retry = response.headers.get("x-should-retry")
        if should_retry == "false":
            retryable = False
        elif should_retry == "true" and not quota:
            retryable = True
        text = f"{self.model} request failed ({detail})"
        if quota:
            text += "; the account's quota or spend limit is used up: check billing"
        elif status == 404:
            text += f"; check the model name {self.model_id!r} and base_url"
        return LLMError(
            text,
            provider=self.provider,
            http_status=status,
            error_type=error_type or code,
            request_id=request_id,
            retryable=retryable,
        )

    def _redact(self, text: str) -> str:
        if self._api_key is not None and self._api_key.reveal():
            text = text.replace(self._api_key.reveal(), "**********")
        return text
