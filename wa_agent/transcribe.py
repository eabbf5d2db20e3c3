"""Voice notes to text: a transcriber for ``WhatsAppInterface(transcriber=...)``.

A transcriber is any ``async (audio: bytes, mime_type: str) -> str``. :class:`OpenAITranscriber`
is the built-in one: it posts the audio to an OpenAI-compatible ``/audio/transcriptions``
endpoint (OpenAI itself, or a local Whisper server given ``base_url``) over one shared
``httpx.AsyncClient``.

Errors::

    WAAgentError            (wa_agent.exceptions)
     └─ TranscriptionError  the audio could not be transcribed (.http_status .error_type
                            .retryable); the hosting layer sends the user a short apology

Throttling (429), 5xx, timeouts and connection errors are retried ``max_retries`` times with
a short backoff; anything else raises at once. Importing this module does not import httpx.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Self, final

import anyio

from .exceptions import ConfigurationError, WAAgentError
from .secret import Secret

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAITranscriber", "Transcriber", "TranscriptionError"]

logger = logging.getLogger(__name__)

#: What ``WhatsAppInterface(transcriber=...)`` accepts.
Transcriber = Callable[[bytes, str], Awaitable[str]]

OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
#: Largest upload OpenAI's endpoint takes (WhatsApp audio is at most 16 MB anyway).
MAX_AUDIO_BYTES: Final = 25 * 1024 * 1024

# File names the endpoint recognises the format from (it goes by the extension).
_EXTENSIONS: Final[dict[str, str]] = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "application/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/amr": "amr",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/webm": "webm",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "video/mp4": "mp4",
    "video/webm": "webm",
}
_RETRY_STATUSES: Final = frozenset({408, 409, 429})


class TranscriptionError(WAAgentError):
    """A voice note could not be transcribed.

    ``http_status`` is the endpoint's last status (``None`` for a timeout or a connection
    failure), ``error_type`` its error type or code (``invalid_request_error``,
    ``rate_limit_exceeded``...), ``retryable`` whether the same audio may succeed later.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_type: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_type = error_type
        self.retryable = retryable


def audio_filename(mime_type: str) -> str:
    """``"audio/ogg; codecs=opus"`` → ``"voice.ogg"``: a name whose extension tells the
    endpoint the format (WhatsApp voice notes are OGG/Opus)."""
    base = mime_type.split(";", 1)[0].strip().lower()
    return f"voice.{_EXTENSIONS.get(base, 'ogg')}"


@final
class OpenAITranscriber:
    """Transcribe audio with OpenAI's ``/v1/audio/transcriptions`` (or a compatible server).

    ``model`` is ``"whisper-1"``, ``"gpt-4o-mini-transcribe"``, ``"gpt-4o-transcribe"`` or what
    a local server serves. ``api_key`` defaults to ``OPENAI_API_KEY``; with ``base_url`` (a
    local Whisper server such as ``http://127.0.0.1:8000/v1``) only the key you pass is sent.
    ``language`` (ISO 639-1, e.g. ``"de"``) and ``prompt`` (names, jargon) guide the model.
    ``timeout`` bounds each attempt in seconds; ``max_retries`` retries throttling, 5xx,
    timeouts and connection failures. ``client`` shares an ``httpx.AsyncClient`` (yours to
    close); otherwise one is made on first use and closed by :meth:`aclose` or ``async with``.

    Calling it returns the transcript (``""`` when the model heard nothing) or raises
    :class:`TranscriptionError`.
    """

    def __init__(
        self,
        model: str = "whisper-1",
        *,
        api_key: str | Secret | None = None,
        base_url: str | None = None,
        language: str | None = None,
        prompt: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if not model or not model.strip():
            raise ConfigurationError("OpenAITranscriber needs a model, e.g. 'whisper-1'")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        key = api_key if api_key is not None or base_url else os.environ.get("OPENAI_API_KEY")
        if not key and not base_url:
            raise ConfigurationError(
                "no API key for OpenAITranscriber: set the OPENAI_API_KEY environment "
                "variable, pass api_key=..., or give base_url= of a local server"
            )
        self.model = model.strip()
        self._api_key: Secret | None = Secret(key) if key else None
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.url = f"{self.base_url}/audio/transcriptions"
        self.language = language
        self.prompt = prompt
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self._client = client
        self._owns_client = client is None
        self._sleep: Callable[[float], Awaitable[None]] = (
            sleep if sleep is not None else anyio.sleep
        )

    def __repr__(self) -> str:
        return (
            f"OpenAITranscriber(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key={self._api_key!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this transcriber created (a shared one is left open).
        Idempotent; a later call opens a new client."""
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
            )
            self._owns_client = True
        return self._client

    async def __call__(self, audio: bytes, mime_type: str) -> str:
        """The transcript of ``audio`` (``mime_type`` as WhatsApp gives it, e.g.
        ``"audio/ogg; codecs=opus"``)."""
        import httpx

        from ._transport import unlink_response

        if not audio:
            raise TranscriptionError("the voice note is empty")
        if len(audio) > MAX_AUDIO_BYTES:
            raise TranscriptionError(
                f"the audio is {len(audio)} bytes, over the {MAX_AUDIO_BYTES}-byte limit"
            )
        base_mime = mime_type.split(";", 1)[0].strip() or "audio/ogg"
        data: dict[str, str] = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        if self.prompt:
            data["prompt"] = self.prompt
        files = {"file": (audio_filename(mime_type), audio, base_mime)}
        headers = {"accept": "application/json"}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.reveal()}"
        client = self._http()
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with anyio.fail_after(self.timeout):
                    response = await client.post(
                        self.url,
                        data=data,
                        files=files,
                        headers=headers,
                        timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                    )
            except (httpx.TimeoutException, TimeoutError):
                failure = TranscriptionError(
                    f"{self.base_url} did not transcribe within {self.timeout:g} s "
                    f"(attempt {attempt} of {attempts})",
                    retryable=True,
                )
            except httpx.TransportError as exc:
                failure = TranscriptionError(
                    f"could not reach {self.base_url} to transcribe: {type(exc).__name__}",
                    retryable=True,
                )
            else:
                unlink_response(response)
                logger.info(
                    "POST %s -> %d (attempt %d, %d bytes of %s)",
                    self.url,
                    response.status_code,
                    attempt,
                    len(audio),
                    base_mime,
                )
                if response.is_success:
                    return self._text(response)
                failure = self._error(response)
            if not failure.retryable or attempt == attempts:
                raise failure
            delay = min(0.5 * 2 ** (attempt - 1), 8.0) * (1 - 0.25 * random.random())
            logger.warning("transcription: %s; retrying in %.1f s", failure, delay)
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _text(self, response: httpx.Response) -> str:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise TranscriptionError(
                f"{self.url} answered {response.status_code} without a 'text' field (is "
                "base_url an OpenAI-compatible /v1 endpoint?)",
                http_status=response.status_code,
            )
        return text.strip()

    def _error(self, response: httpx.Response) -> TranscriptionError:
        status = response.status_code
        message: str | None = None
        error_type: str | None = None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            raw_message, raw_type, raw_code = err.get("message"), err.get("type"), err.get("code")
            message = raw_message if isinstance(raw_message, str) else None
            error_type = next((v for v in (raw_code, raw_type) if isinstance(v, str)), None)
        elif isinstance(err, str):
            message = err
        elif isinstance(body, dict) and isinstance(body.get("detail"), str):
            message = body["detail"]  # FastAPI-style local servers
        if message and self._api_key is not None and self._api_key.reveal():
            message = message.replace(self._api_key.reveal(), "**********")
        detail = f"HTTP {status}" + (f" {error_type}" if error_type else "")
        if message:
            detail += f": {message[:300]}"
        if status in (401, 403):
            where = (
                "OPENAI_API_KEY or the api_key argument"
                if self.base_url == OPENAI_BASE_URL
                else "the api_key argument"
            )
            return TranscriptionError(
                f"{self.base_url} refused the API key ({detail}); check {where}",
                http_status=status,
                error_type=error_type,
            )
        retryable = status in _RETRY_STATUSES or status >= 500
        if error_type == "insufficient_quota":
            retryable = False
        return TranscriptionError(
            f"transcription failed ({detail})",
            http_status=status,
            error_type=error_type,
            retryable=retryable,
        )
