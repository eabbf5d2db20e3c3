"""Outbound calls to the WhatsApp Cloud API: messages, read receipts and media.

:class:`Sender` wraps one business phone number. It sends every message type over one
shared :class:`httpx.AsyncClient`, retries what is safe to retry according to a
:class:`RetryPolicy` (keyed on Meta's ``error.code``, reference/cloud_api.md §10), keeps
under the number's throughput with a token bucket (:class:`RateLimiter`), bounds the
requests in flight, and raises the :class:`~wa_agent.exceptions.WhatsAppAPIError` subclass
that matches the answer when it gives up.

Two safety rules hold for every call:

* a message ``POST`` whose request may have reached Meta (a read timeout, a dropped
  connection after the request was written) is never resent by default: the Cloud API has no
  idempotency key, so a resend can deliver the message twice. It raises
  :class:`~wa_agent.exceptions.TransportError` with ``maybe_delivered=True`` instead;
* the access token is only sent to Meta's hosts (``*.facebook.com``, ``*.fbsbx.com``,
  ``*.fbcdn.net``, over HTTPS) and to the configured ``base_url``. A media URL or redirect
  to any other host raises :class:`~wa_agent.exceptions.MediaError`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Self, final

import anyio
import httpx

from ._media import MEDIA_MIME_TYPES, MEDIA_SIZE_LIMITS, base_mime, kind_for_mime, sniff_mime
from ._transport import choose_transport, unlink_response
from .exceptions import (
    ConfigurationError,
    MediaError,
    RetryKind,
    TransportError,
    WhatsAppAPIError,
    api_error_from_body,
)
from .numbers import normalize_number
from .secret import Secret
from .text import MAX_TEXT_LENGTH, split_text

__all__ = [
    "DEFAULT_TIMEOUT",
    "GroupId",
    "MediaInfo",
    "MediaSource",
    "RateLimiter",
    "RetryPolicy",
    "Sender",
    "SenderStats",
]

logger = logging.getLogger(__name__)

#: Timeouts of the client a Sender creates for itself.
DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)
#: Redirects followed by a media download (each hop is host-checked).
MAX_REDIRECTS: Final = 5

#: bytes, a file path, a media id, or an http(s) link.
MediaSource = bytes | bytearray | memoryview | os.PathLike[str] | str

_META_SUFFIXES = (".facebook.com", ".fbsbx.com", ".fbcdn.net")
_META_DOMAINS = frozenset({"facebook.com", "fbsbx.com", "fbcdn.net"})
# Failures before the request could have been written: safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

Sleep = Callable[[float], Awaitable[None]]


# --------------------------------------------------------------------------- policy


@final
@dataclass(frozen=True)
class RetryPolicy:
    """Which failed calls are tried again, and how long to wait first.

    Keyed on the error's :class:`~wa_agent.exceptions.RetryKind`, which the one table of
    Graph error codes gives (:data:`wa_agent.exceptions.ERROR_CODES`):

    * ``THROTTLE`` (``130429``, HTTP 429 without a code): exponential backoff
      ``base_delay * 2**n`` with ``±jitter``, up to ``max_attempts`` attempts; a Sender
      waits by pausing the number's rate limiter, since every send from the number would
      hit the same limit;
    * ``PAIR_RATE`` (``131056``): ``4**n`` seconds (1, 4, 16, ...) for that recipient only,
      up to ``pair_rate_attempts`` attempts; sends to other recipients go on meanwhile;
    * ``TRANSIENT`` (``1``, ``2``, ``131000``, ``131016``, HTTP 5xx, connection failures):
      ``transient_delay * 2**n`` with jitter, up to ``transient_attempts`` attempts;
    * ``LATER`` (``4``, ``80007``, ``131057``: minutes, not seconds) and ``NEVER`` (131047,
      131026, 190, 100, ...) raise at once; a ``LATER`` error is ``retryable``, so the
      interface tries the message again from its inbox.

    Each kind has its own budget: throttling before a server error does not use up the
    server error's attempts (no kind gets more than ``max_attempts``). One call makes at
    most ``max_total_attempts`` attempts whatever the mix; with the defaults its waits add
    up to under a minute (throttle 1+2+4+8 s, pair rate 1+4+16 s, transient 0.5+1 s).

    A ``Retry-After`` header is honoured: the wait is at least that long, and a call told to
    wait longer than ``max_delay`` is not retried. Every wait is capped at ``max_delay``
    and then multiplied by ``scale`` (tests use a tiny scale); ``sleep`` replaces
    :func:`anyio.sleep` (tests inject one to observe or gate the waits).
    ``resend_on_read_timeout=True`` allows resending a message after a read timeout, which
    can deliver it twice.
    """

    max_attempts: int = 5
    transient_attempts: int = 3
    pair_rate_attempts: int = 4
    max_total_attempts: int = 10
    base_delay: float = 1.0
    transient_delay: float = 0.5
    max_delay: float = 60.0
    jitter: float = 0.25
    scale: float = 1.0
    resend_on_read_timeout: bool = False
    sleep: Sleep | None = field(default=None, compare=False, repr=False)
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_attempts", "transient_attempts", "pair_rate_attempts",
                     "max_total_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"RetryPolicy.{name} must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter must be in [0, 1)")
        if self.scale < 0 or self.max_delay < 0 or self.base_delay < 0:
            raise ValueError("RetryPolicy delays and scale must not be negative")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1, transient_attempts=1, pair_rate_attempts=1,
                   max_total_attempts=1)

    def delay(
        self,
        error: WhatsAppAPIError,
        attempt: int,
        *,
        retry_after: float | None = None,
        total: int | None = None,
    ) -> float | None:
        """Seconds to wait before trying again after ``error``, or ``None`` when the call
        must not be retried. ``attempt`` counts the call's attempts that failed the same
        way (the same :class:`~wa_agent.exceptions.RetryKind`), 1-based; ``total`` all of
        its attempts so far (default ``attempt``)."""
        if (attempt if total is None else total) >= self.max_total_attempts:
            return None
        kind = error.retry_kind
        if kind is RetryKind.PAIR_RATE:
            return self._wait(attempt, self.pair_rate_attempts, 4.0 ** (attempt - 1), 0.0,
                              retry_after)
        if kind is RetryKind.THROTTLE:
            return self._wait(attempt, self.max_attempts, self.base_delay * 2.0 ** (attempt - 1),
                              self.jitter, retry_after)
        if kind is RetryKind.TRANSIENT:
            return self.transport_delay(attempt, retry_after=retry_after, total=total)
        return None  # LATER (the caller retries in minutes) or NEVER

    def transport_delay(
        self, attempt: int, *, retry_after: float | None = None, total: int | None = None
    ) -> float | None:
        """Wait after a connection failure or transient error; ``attempt`` counts the
        call's transient failures, ``total`` all its attempts (see :meth:`delay`)."""
        if (attempt if total is None else total) >= self.max_total_attempts:
            return None
        return self._wait(attempt, self.transient_attempts,
                          self.transient_delay * 2.0 ** (attempt - 1), self.jitter, retry_after)

    def _wait(
        self, attempt: int, limit: int, base: float, jitter: float, retry_after: float | None
    ) -> float | None:
        if attempt >= min(limit, self.max_attempts):
            return None
        wait = min(base, self.max_delay)
        if jitter:
            wait = min(wait * (self.rng or random).uniform(1 - jitter, 1 + jitter), self.max_delay)
        if retry_after is not None:
            if retry_after > self.max_delay:
                return None
            wait = max(wait, retry_after)
        return wait * self.scale

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` with the injected ``sleep`` (default :func:`anyio.sleep`)."""
        await (self.sleep or anyio.sleep)(seconds)


@final
class RateLimiter:
    """A token bucket (as a GCRA): ``rate`` calls per second, bursts of up to ``burst``.

    :meth:`acquire` reserves the next free slot and sleeps until it; waiters are served in
    order. ``clock`` and ``sleep`` can be injected for tests. Share one instance between
    Senders of the same phone number.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst if burst is not None else rate))
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1.0) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf  # theoretical arrival time of the next call
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, burst={self.burst:g})"

    def reserve(self) -> float:
        """Take the next slot; return how many seconds from now it starts (0 = now)."""
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        wait = tat - self._tolerance - now
        return wait if wait > 1e-9 else 0.0  # ignore float dust from summing intervals

    async def acquire(self) -> None:
        """Wait for the next slot."""
        wait = self.reserve()
        if wait > 0:
            await (self._sleep or anyio.sleep)(wait)

    def pause(self, seconds: float) -> None:
        """Let no call start for ``seconds`` (after the number was throttled)."""
        now = self._clock()
        self._tat = max(self._tat, now + seconds + self._tolerance)
        self._paused_until = max(self._paused_until, now + seconds)

    def paused_for(self) -> float:
        """Seconds left of the current :meth:`pause` (0 when not paused)."""
        left = self._paused_until - self._clock()
        return left if left > 1e-9 else 0.0

    async def wait_out_pause(self) -> None:
        """Wait until the current :meth:`pause` is over, without taking a slot (for calls
        that do not count against the rate but must not be made while throttled)."""
        while (left := self.paused_for()) > 0:
            await (self._sleep or anyio.sleep)(left)


# --------------------------------------------------------------------------- values


class GroupId(str):
    """A WhatsApp group id (from the Groups API or a message's ``group_id``) used as a
    recipient: every send to a ``GroupId`` goes out with ``"recipient_type": "group"``.

    Meta's group messaging takes text, media and templates (not interactive messages,
    reactions, locations or contacts)::

        await sender.send_text(GroupId(message.group_id), "Hello, group")
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"GroupId({str.__repr__(self)})"



@final
@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What ``GET /{media-id}`` tells about a media object (the URL is valid 5 minutes)."""

    id: str
    url: str = field(repr=False)
    mime_type: str
    sha256: str | None
    file_size: int | None


@final
@dataclass(slots=True)
class SenderStats:
    """Counters of one Sender: HTTP requests made, messages accepted by the API, retries
    (waits before another attempt) and calls that raised."""

    requests: int = 0
    sent: int = 0
    retries: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


class _NotFound(Exception):
    """A media download URL answered 404 (expired): fetch a fresh URL."""


# --------------------------------------------------------------------------- sender


@final
class Sender:
    """Send WhatsApp messages from one business phone number (see the module docstring).

    ``client`` is an :class:`httpx.AsyncClient` to share (not closed by :meth:`aclose`);
    without one the Sender creates its own on first use and closes it in :meth:`aclose`
    (or at the end of ``async with``). ``rate_limit`` is the number's throughput in
    messages per second (``None`` turns the limit off; a :class:`RateLimiter` can be
    shared), ``max_in_flight`` bounds concurrent HTTP requests (and the connection pool:
    8 keep-alive connections carry hundreds of sends a second, while a large pool makes
    httpcore's bookkeeping grow with the square of its size), ``timeout`` applies to each
    request (default: the shared client's own, or :data:`DEFAULT_TIMEOUT`).

    ``read_receipts_count`` says whether :meth:`mark_read` (read receipts and the typing
    indicator) takes a slot of the rate limiter. Meta counts *messages* against a number's
    throughput ("inclusive of inbound and outbound messages and all message types", the
    Throughput page of the Cloud API docs); a read receipt is not a message (no wamid, no
    status webhooks, not billed) and no Meta page counts it, so by default it does not take
    a slot (otherwise a bot that marks each message read answers at half the configured
    rate). It still waits out a throttle pause, and a 130429 answered to it pauses the
    number like any other. ``read_receipts_count=True`` makes receipts take slots too.
    :meth:`rate_limit_state` reports the effective limit (for ``/health``).

    ``transport`` picks what the Sender's own client sends with: ``"auto"`` (default) is
    the lean HTTP/1.1 :class:`~wa_agent._transport.FastTransport` on asyncio, or httpx's
    own transport when an ``HTTP(S)_PROXY``/``ALL_PROXY`` is set in the environment (or the
    loop is not asyncio); ``"httpx"`` always uses httpx's transport; an
    :class:`httpx.AsyncBaseTransport` instance is used as given. Ignored with ``client``.
    """

    def __init__(
        self,
        access_token: str | Secret,
        phone_number_id: str | int,
        *,
        api_version: str = "v25.0",
        base_url: str = "https://graph.facebook.com",
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | RateLimiter | None = 80.0,
        max_in_flight: int = 8,
        timeout: float | httpx.Timeout | None = None,
        user_agent: str | None = None,
        transport: str | httpx.AsyncBaseTransport = "auto",
        read_receipts_count: bool = False,
    ) -> None:
        token = Secret(access_token)
        if not token:
            raise ConfigurationError(
                "Sender needs an access token (set WHATSAPP_ACCESS_TOKEN or pass access_token=)"
            )
        if not str(phone_number_id).strip():
            raise ConfigurationError(
                "Sender needs a phone number id (set WHATSAPP_PHONE_NUMBER_ID or pass "
                "phone_number_id=)"
            )
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if isinstance(transport, str) and transport not in ("auto", "httpx"):
            raise ValueError(f"transport must be 'auto', 'httpx' or a transport, got {transport!r}")
        self._transport_choice = transport
        self._token = token
        self.phone_number_id = str(phone_number_id).strip()
        self.api_version = api_version.strip("/")
        self.base_url = base_url.rstrip("/")
        base = httpx.URL(self.base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._base_origin = (base.scheme, base.host.lower(), base.port)
        self.retry = retry if retry is not None else RetryPolicy()
        if isinstance(rate_limit, RateLimiter):
            self.rate_limiter: RateLimiter | None = rate_limit
        elif rate_limit:
            self.rate_limiter = RateLimiter(rate_limit, sleep=self.retry.sleep)
        else:
            self.rate_limiter = None
        self.max_in_flight = max_in_flight
        self.read_receipts_count = read_receipts_count
        self.stats = SenderStats()
        if user_agent is None:
            from . import __version__

            user_agent = f"wa_agent/{__version__} (httpx)"
        self._user_agent = user_agent
        self._client = client
        self._owns_client = client is None
        self._timeout: httpx.Timeout | None = (
            httpx.Timeout(timeout) if isinstance(timeout, int | float) else timeout
        )
        self._semaphore = anyio.Semaphore(max_in_flight)
        self._in_flight = 0
        self._pair_gate: dict[str, float] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Sender(access_token={self._token!r}, phone_number_id={self.phone_number_id!r}, "
            f"api_version={self.api_version!r}, base_url={self.base_url!r})"
        )

    @property
    def in_flight(self) -> int:
        """HTTP requests running right now."""
        return self._in_flight

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def rate_limit_state(self) -> dict[str, float | bool | None]:
        """The effective rate limit, JSON-ready (for a ``/health`` answer):

        * ``messages_per_second``: the configured rate (``None``: no limit), ``burst``;
        * ``read_receipts_count``: whether read receipts and typing indicators take slots;
        * ``throttled_for``: seconds left of the pause after a 130429 (0: not throttled).
        """
        limiter = self.rate_limiter
        return {
            "messages_per_second": None if limiter is None else limiter.rate,
            "burst": None if limiter is None else limiter.burst,
            "read_receipts_count": self.read_receipts_count,
            "throttled_for": 0.0 if limiter is None else round(limiter.paused_for(), 3),
        }

    async def __aenter__(self) -> Self:
        if self._closed:
            raise RuntimeError("Cannot reopen a Sender once it has been closed.")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if the Sender created it. Safe to call twice."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()

    # ----------------------------------------------------------------- messages

    async def send_text(
        self,
        to: str,
        text: str,
        *,
        reply_to: str | None = None,
        preview_url: bool = False,
    ) -> list[str]:
        """Send ``text``, split into chunks of at most 4096 characters (see
        :func:`~wa_agent.text.split_text`), in order. Only the first chunk quotes
        ``reply_to``. Returns the wamid of each chunk."""
        chunks = split_text(text, MAX_TEXT_LENGTH)
        if not chunks:
            raise ValueError("cannot send an empty text message")
        wamids: list[str] = []
        for n, chunk in enumerate(chunks):
            content: dict[str, Any] = {"body": chunk}
            if preview_url:
                content["preview_url"] = True
            wamids.append(
                await self._send(to, "text", content, reply_to=reply_to if n == 0 else None)
            )
        return wamids

    async def send_image(
        self,
        to: str,
        media: MediaSource,
        *,
        caption: str | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send an image (JPEG/PNG): bytes or a path (uploaded first), a media id, or a link."""
        return await self._send_media(to, "image", media, caption, filename, mime_type, reply_to)

    async def send_video(
        self,
        to: str,
        media: MediaSource,
        *,
        caption: str | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send a video (MP4/3GPP): bytes or a path (uploaded first), a media id, or a link."""
        return await self._send_media(to, "video", media, caption, filename, mime_type, reply_to)

    async def send_audio(
        self,
        to: str,
        media: MediaSource,
        *,
        caption: str | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
        reply_to: str | None = None,
        voice: bool | None = None,
    ) -> str:
        """Send audio (no caption: WhatsApp shows none; a ``caption`` raises ValueError).

        ``voice=True`` sends a voice note (``"voice": true``: profile picture, microphone
        icon, automatic download, a ``played`` status); Meta requires OGG/Opus for it.
        ``None`` (the default) decides from the media: OGG/Opus bytes or a ``.ogg`` file go
        out as a voice note; a media id or link only when ``voice=True``.
        """
        return await self._send_media(to, "audio", media, caption, filename, mime_type, reply_to,
                                      voice=voice)

    async def send_document(
        self,
        to: str,
        media: MediaSource,
        *,
        caption: str | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send a document; ``filename`` (default: the path's name) is shown to the user."""
        return await self._send_media(
            to, "document", media, caption, filename, mime_type, reply_to
        )

    async def send_sticker(
        self,
        to: str,
        media: MediaSource,
        *,
        caption: str | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send a WebP sticker (no caption)."""
        return await self._send_media(to, "sticker", media, caption, filename, mime_type, reply_to)

    async def send_reaction(self, to: str, message_id: str, emoji: str) -> str:
        """React to ``message_id`` with ``emoji`` (``""`` removes the reaction).

        The API accepts a reaction to a message that is too old (over 30 days), deleted or
        itself a reaction; Meta then reports error 131009 in a webhook instead.
        """
        if not message_id:
            raise ValueError("send_reaction needs the message_id of the message to react to")
        return await self._send(to, "reaction", {"message_id": message_id, "emoji": emoji})

    async def send_location(
        self,
        to: str,
        latitude: float,
        longitude: float,
        *,
        name: str | None = None,
        address: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send a location pin (``name``/``address`` label a place)."""
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError(f"({latitude}, {longitude}) is not a latitude/longitude pair")
        content: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        if name is not None:
            content["name"] = name
        if address is not None:
            content["address"] = address
        return await self._send(to, "location", content, reply_to=reply_to)

    async def send_contacts(
        self,
        to: str,
        contacts: Sequence[Any],
        *,
        reply_to: str | None = None,
    ) -> str:
        """Send contact cards: each a :class:`~wa_agent.Contact`, a received
        :class:`~wa_agent.SharedContact`, a name, or a card dict in Meta's shape
        (``{"name": {"formatted_name": ..., "first_name": ...}, "phones": [...], ...}``)."""
        from .agents import Contact, _contact

        cards: list[dict[str, Any]] = []
        for contact in contacts:
            if isinstance(contact, Mapping) and isinstance(contact.get("name"), Mapping):
                cards.append(dict(contact))
            else:
                card = contact if isinstance(contact, Contact) else _contact(contact)
                cards.append(card.to_card())
        if not cards:
            raise ValueError("send_contacts needs at least one contact")
        return await self._send(to, "contacts", cards, reply_to=reply_to)

    async def send_buttons(
        self,
        to: str,
        body: str,
        buttons: Sequence[tuple[str, str] | Mapping[str, Any] | str],
        *,
        header: str | Mapping[str, Any] | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send up to three reply buttons under ``body``.

        Each button is ``(id, title)``, ``{"id": ..., "title": ...}`` or a bare title (used as
        its id too). A ``header`` string becomes a text header; pass a dict for a media header.
        """
        interactive: dict[str, Any] = {
            "type": "button",
            "body": {"text": body},
            "action": {"buttons": [_button(b) for b in buttons]},
        }
        _decorate(interactive, header, footer)
        return await self._send(to, "interactive", interactive, reply_to=reply_to)

    async def send_list(
        self,
        to: str,
        body: str,
        button: str,
        sections: Sequence[Mapping[str, Any] | tuple[str, ...]],
        *,
        header: str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send a list message: ``button`` opens it; ``sections`` are
        ``{"title": ..., "rows": [...]}``, or a flat list of rows for a single section.
        A row is ``(id, title)``, ``(id, title, description)`` or a dict."""
        interactive: dict[str, Any] = {
            "type": "list",
            "body": {"text": body},
            "action": {"button": button, "sections": _sections(sections)},
        }
        _decorate(interactive, header, footer)
        return await self._send(to, "interactive", interactive, reply_to=reply_to)

    async def send_cta_url(
        self,
        to: str,
        body: str,
        label: str,
        url: str,
        *,
        header: str | Mapping[str, Any] | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send a call-to-action button (interactive ``cta_url``): the user sees ``body``
        and a button labelled ``label`` (at most 20 characters) that opens ``url``."""
        interactive: dict[str, Any] = {
            "type": "cta_url",
            "body": {"text": body},
            "action": {"name": "cta_url", "parameters": {"display_text": label, "url": url}},
        }
        _decorate(interactive, header, footer)
        return await self._send(to, "interactive", interactive, reply_to=reply_to)

    async def send_template(
        self,
        to: str,
        name: str,
        language: str = "en_US",
        components: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Send an approved template (the only kind allowed outside the 24-hour window)."""
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components is not None:
            template["components"] = [dict(c) for c in components]
        return await self._send(to, "template", template)

    async def mark_read(self, message_id: str, *, typing: bool = False) -> None:
        """Mark an inbound message read; with ``typing`` also show the typing indicator
        (it disappears when you reply, or after 25 s)."""
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if typing:
            payload["typing_indicator"] = {"type": "text"}
        await self._request("POST", self._url("messages"), json=payload, rate_limited=True,
                            counted=self.read_receipts_count)

    # ----------------------------------------------------------------- media

    async def upload_media(
        self,
        data: bytes | os.PathLike[str],
        mime_type: str | None = None,
        *,
        filename: str | None = None,
    ) -> str:
        """Upload media (bytes or a file path) and return its media id (valid 30 days).

        ``mime_type`` defaults to what the file name or the first bytes tell. The MIME type
        and size are checked against the Cloud API limits before anything is sent.
        """
        return await self._upload(data, mime_type, filename, None)

    async def get_media_url(self, media_id: str) -> MediaInfo:
        """Look up a media id: its short-lived download URL, MIME type, checksum and size."""
        body = await self._request(
            "GET", self._url(media_id, node=False), params={"phone_number_id": self.phone_number_id}
        )
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str):
            raise WhatsAppAPIError("the media lookup answered without a URL", http_status=200)
        size = body.get("file_size")
        sha = body.get("sha256")
        mime = body.get("mime_type")
        return MediaInfo(
            id=str(body.get("id", media_id)),
            url=url,
            mime_type=mime if isinstance(mime, str) else "application/octet-stream",
            sha256=sha if isinstance(sha, str) else None,
            file_size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        )

    async def download_media(
        self,
        media_id: str,
        *,
        max_bytes: int | None = None,
        kind: str | None = None,
    ) -> tuple[bytes, str]:
        """Download media by id; returns ``(data, mime_type)``.

        The size cap is ``max_bytes``, else the Cloud API limit for ``kind`` (or for the
        kind its MIME type belongs to; 100 MB when unknown). A larger file raises
        :class:`~wa_agent.exceptions.MediaError` without being read past the cap. An expired
        URL (404) is looked up once more; a checksum mismatch raises MediaError.
        """
        info = await self.get_media_url(media_id)
        cap = _cap(max_bytes, kind, info.mime_type)
        if info.file_size is not None and info.file_size > cap:
            raise MediaError(
                f"media {media_id} is {info.file_size} bytes, over the {cap}-byte limit"
            )
        try:
            data, content_type = await self._download(info.url, cap)
        except _NotFound:
            info = await self.get_media_url(media_id)
            try:
                data, content_type = await self._download(info.url, cap)
            except _NotFound:
                self.stats.failures += 1
                raise MediaError(
                    f"media {media_id} could not be downloaded (404 twice); the id may have "
                    "expired (inbound media ids last 7 days)"
                ) from None
        if info.sha256 and hashlib.sha256(data).hexdigest() != info.sha256.lower():
            raise MediaError(f"media {media_id} does not match its sha256 checksum")
        return data, info.mime_type if info.mime_type != "application/octet-stream" else (
            content_type or info.mime_type
        )

    async def download_url(
        self,
        url: str,
        *,
        max_bytes: int | None = None,
        kind: str | None = None,
    ) -> tuple[bytes, str]:
        """Download a Meta media URL (for example a webhook's ``media.url``) with the same
        host check and size cap as :meth:`download_media`; returns ``(data, content_type)``."""
        try:
            return await self._download(url, _cap(max_bytes, kind, None))
        except _NotFound:
            self.stats.failures += 1
            raise MediaError("the media URL answered 404 (it is valid 5 minutes)") from None

    async def delete_media(self, media_id: str) -> None:
        """Delete uploaded media."""
        await self._request(
            "DELETE",
            self._url(media_id, node=False),
            params={"phone_number_id": self.phone_number_id},
        )

    # ----------------------------------------------------------------- internals

    def _url(self, path: str, *, node: bool = True) -> str:
        if node:
            return f"{self.base_url}/{self.api_version}/{self.phone_number_id}/{path}"
        return f"{self.base_url}/{self.api_version}/{path}"

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("this Sender is closed; create a new one")
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout or DEFAULT_TIMEOUT,
                limits=httpx.Limits(
                    max_connections=self.max_in_flight,
                    max_keepalive_connections=self.max_in_flight,
                ),
                headers={"User-Agent": self._user_agent},
                transport=self._make_transport(),
            )
        return self._client

    def _make_transport(self) -> httpx.AsyncBaseTransport | None:
        """The transport for the Sender's own client; None means httpx's default."""
        return choose_transport(self._transport_choice, max_connections=self.max_in_flight)

    def token_allowed(self, url: str | httpx.URL) -> bool:
        """Whether the access token may be sent to ``url``: Meta's hosts over HTTPS, or
        the configured ``base_url``'s origin. The host is the one httpx connects to (so
        ``https://graph.facebook.com@evil.test/`` is ``evil.test``); a URL httpx cannot
        parse is never allowed."""
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return False
        host = target.host.lower().rstrip(".")
        if (target.scheme, host, target.port) == self._base_origin:
            return True
        if target.scheme != "https" or target.port not in (None, 443):
            return False
        return host in _META_DOMAINS or host.endswith(_META_SUFFIXES)

    def _headers(self, url: str | httpx.URL) -> dict[str, str]:
        if not self.token_allowed(url):
            try:
                target = httpx.URL(url)
                where = f"{target.scheme}://{target.host}"
            except (httpx.InvalidURL, TypeError, ValueError):
                where = "an invalid URL"
            raise MediaError(
                f"refusing to send the access token to {where}: media "
                "is only fetched from Meta hosts (*.facebook.com, *.fbsbx.com, *.fbcdn.net "
                f"over https) or {self.base_url}"
            )
        return {
            "Authorization": f"Bearer {self._token.reveal()}",
            "User-Agent": self._user_agent,
        }

    def _timeout_arg(self) -> httpx.Timeout | Any:
        return self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT

    async def _send(
        self, to: str, kind: str, content: Any, *, reply_to: str | None = None
    ) -> str:
        recipient = _recipient(to)
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "group" if isinstance(to, GroupId) else "individual",
            "to": recipient,
            "type": kind,
            kind: content,
        }
        if reply_to:
            payload["context"] = {"message_id": reply_to}
        body = await self._request(
            "POST", self._url("messages"), json=payload, message=True, recipient=recipient,
            rate_limited=True,
        )
        try:
            wamid = body["messages"][0]["id"]
        except (KeyError, IndexError, TypeError):
            wamid = None
        if not isinstance(wamid, str):
            self.stats.failures += 1
            raise WhatsAppAPIError(
                "the Cloud API accepted the message but answered without a message id",
                http_status=200,
            )
        self.stats.sent += 1
        return wamid

    async def _send_media(
        self,
        to: str,
        kind: str,
        media: MediaSource,
        caption: str | None,
        filename: str | None,
        mime_type: str | None,
        reply_to: str | None,
        *,
        voice: bool | None = None,
    ) -> str:
        if caption is not None and kind in ("audio", "sticker"):
            raise ValueError(f"WhatsApp shows no caption on {kind} messages")
        content: dict[str, Any]
        if isinstance(media, str):
            if re.match(r"https?://", media, re.IGNORECASE):
                content = {"link": media}
            elif not media or any(c.isspace() for c in media) or "/" in media or "\\" in media:
                raise ValueError(
                    f"{media!r} is neither a media id nor an http(s) link; pass a "
                    "pathlib.Path for a file"
                )
            else:
                content = {"id": media}
        elif isinstance(media, bytes | bytearray | memoryview | os.PathLike):
            if kind == "document" and filename is None and isinstance(media, os.PathLike):
                filename = Path(media).name
            media_id, mime_type, raw = await self._upload_detailed(
                media, mime_type, filename, kind
            )
            content = {"id": media_id}
            if voice is None and kind == "audio":
                voice = is_voice_note(raw, mime_type)
        else:
            raise TypeError(
                f"media must be bytes, a path, a media id or a link, not {type(media).__name__}"
            )
        if voice:
            content["voice"] = True
        if caption is not None:
            content["caption"] = caption
        if filename is not None and kind == "document":
            content["filename"] = filename
        return await self._send(to, kind, content, reply_to=reply_to)

    async def _upload(
        self,
        data: bytes | bytearray | memoryview | os.PathLike[str],
        mime_type: str | None,
        filename: str | None,
        kind: str | None,
    ) -> str:
        return (await self._upload_detailed(data, mime_type, filename, kind))[0]

    async def _upload_detailed(
        self,
        data: bytes | bytearray | memoryview | os.PathLike[str],
        mime_type: str | None,
        filename: str | None,
        kind: str | None,
    ) -> tuple[str, str, bytes]:
        """Upload; returns the media id, the MIME type sent and the bytes."""
        if isinstance(data, os.PathLike):
            path = Path(data)
            if mime_type is None:
                import mimetypes

                mime_type = mimetypes.guess_type(path.name)[0]
            filename = filename or path.name
            raw = await anyio.Path(path).read_bytes()
        else:
            raw = bytes(data)
        mime_type = mime_type or sniff_mime(raw)
        if mime_type is None:
            raise MediaError("cannot tell the media's MIME type; pass mime_type=")
        actual = kind_for_mime(mime_type)
        if actual is None:
            supported = ", ".join(sorted(t for types in MEDIA_MIME_TYPES.values() for t in types))
            raise MediaError(
                f"the Cloud API does not take {base_mime(mime_type)!r} media (supported: "
                f"{supported})"
            )
        if kind is not None and actual != kind:
            raise MediaError(
                f"{base_mime(mime_type)} cannot be sent as {kind}; {kind} takes "
                f"{', '.join(sorted(MEDIA_MIME_TYPES[kind]))}"
            )
        limit = MEDIA_SIZE_LIMITS[actual]
        if len(raw) > limit:
            raise MediaError(f"{actual} of {len(raw)} bytes is over the {limit}-byte limit")
        if not raw:
            raise MediaError("cannot upload empty media")
        body = await self._request(
            "POST",
            self._url("media"),
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename or f"file.{actual}", raw, mime_type)},
        )
        media_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(media_id, str | int):
            self.stats.failures += 1
            raise WhatsAppAPIError("the media upload answered without an id", http_status=200)
        return str(media_id), mime_type, raw

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        message: bool = False,
        recipient: str | None = None,
        rate_limited: bool = False,
        counted: bool = True,
    ) -> Any:
        """One Graph call with retries; returns the parsed JSON of the 2xx answer.

        ``message`` marks a message send (never resent after a possible delivery);
        ``recipient`` keys the 131056 pair-rate wait; ``rate_limited`` makes each attempt
        wait for the number's bucket: take a slot, or with ``counted=False`` (read
        receipts) only wait out a throttle pause.
        """
        client = self._http()
        headers = self._headers(url)
        path = httpx.URL(url).path
        attempt = 0
        failed: dict[RetryKind, int] = {}  # attempts that failed, per kind: one budget each
        just_waited_for_pair = False
        while True:
            attempt += 1
            if recipient is not None and not just_waited_for_pair:
                await self._wait_for_pair_gate(recipient)
            just_waited_for_pair = False
            if rate_limited and self.rate_limiter is not None:
                if counted:
                    await self.rate_limiter.acquire()
                else:
                    await self.rate_limiter.wait_out_pause()
            started = time.perf_counter()
            try:
                async with self._semaphore:
                    self._in_flight += 1
                    try:
                        response = await client.request(
                            method,
                            url,
                            json=json,
                            data=data,
                            files=files,
                            params=params,
                            headers=headers,
                            timeout=self._timeout_arg(),
                            follow_redirects=False,
                        )
                    finally:
                        self._in_flight -= 1
                unlink_response(response)
            except httpx.TransportError as exc:
                self.stats.requests += 1
                elapsed = (time.perf_counter() - started) * 1000
                logger.info("%s %s -> %s in %.0f ms (attempt %d)",
                            method, path, type(exc).__name__, elapsed, attempt)
                maybe_delivered = not isinstance(exc, _NOT_SENT)
                failed[RetryKind.TRANSIENT] = tries = failed.get(RetryKind.TRANSIENT, 0) + 1
                delay = self.retry.transport_delay(tries, total=attempt)
                if isinstance(exc, httpx.UnsupportedProtocol) or (
                    maybe_delivered and message and not self.retry.resend_on_read_timeout
                ):
                    delay = None
                if delay is None:
                    self.stats.failures += 1
                    note = (
                        "; the request may have reached Meta, so it was not resent (a resend "
                        "could deliver the message twice)"
                        if maybe_delivered and message
                        else ""
                    )
                    raise TransportError(
                        f"{method} {path} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}{note}",
                        maybe_delivered=maybe_delivered,
                    ) from exc
                self.stats.retries += 1
                await self.retry.wait(delay)
                continue
            self.stats.requests += 1
            elapsed = (time.perf_counter() - started) * 1000
            logger.info("%s %s -> %d in %.0f ms (attempt %d)",
                        method, path, response.status_code, elapsed, attempt)
            if response.is_success:
                try:
                    return response.json()
                except ValueError:
                    self.stats.failures += 1
                    raise WhatsAppAPIError(
                        f"{method} {path} answered {response.status_code} with a body that is "
                        "not JSON",
                        http_status=response.status_code,
                    ) from None
            error = api_error_from_body(_body(response), response.status_code)
            retry_after = _retry_after(response.headers.get("retry-after"))
            kind = error.retry_kind
            failed[kind] = tries = failed.get(kind, 0) + 1
            delay = self.retry.delay(error, tries, retry_after=retry_after, total=attempt)
            if delay is None:
                self.stats.failures += 1
                if attempt > 1:
                    error.add_note(f"gave up after {attempt} attempts")
                raise error
            self.stats.retries += 1
            if kind is RetryKind.PAIR_RATE and recipient is not None:
                # Other sends to this recipient wait too; sends to others do not.
                until = time.monotonic() + delay
                self._pair_gate[recipient] = max(self._pair_gate.get(recipient, 0.0), until)
                await self.retry.wait(delay)
                if self._pair_gate.get(recipient) == until:
                    del self._pair_gate[recipient]  # waited out
                just_waited_for_pair = True
            elif kind is RetryKind.THROTTLE and rate_limited and self.rate_limiter is not None:
                # The whole number is throttled: hold every send back; our own next
                # attempt waits for its slot in the bucket.
                self.rate_limiter.pause(delay)
            else:
                await self.retry.wait(delay)

    async def _wait_for_pair_gate(self, recipient: str) -> None:
        until = self._pair_gate.get(recipient)
        if until is None:
            return
        wait = until - time.monotonic()
        if wait <= 0:
            del self._pair_gate[recipient]
            return
        await self.retry.wait(wait)

    async def _download(self, url: str, cap: int) -> tuple[bytes, str]:
        client = self._http()
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise MediaError("the media URL is not a valid URL") from None
        attempt = 0
        failed: dict[RetryKind, int] = {}
        hops = 0
        while True:
            attempt += 1
            headers = self._headers(target)  # raises MediaError for a foreign host
            started = time.perf_counter()
            where = f"{target.host}{target.path}"
            try:
                async with self._semaphore:
                    self._in_flight += 1
                    try:
                        async with client.stream(
                            "GET", target, headers=headers, timeout=self._timeout_arg(),
                            follow_redirects=False,
                        ) as response:
                            self.stats.requests += 1
                            elapsed = (time.perf_counter() - started) * 1000
                            logger.info("GET %s -> %d in %.0f ms (attempt %d)",
                                        where, response.status_code, elapsed, attempt)
                            if response.is_redirect and "location" in response.headers:
                                hops += 1
                                if hops > MAX_REDIRECTS:
                                    raise MediaError(f"more than {MAX_REDIRECTS} redirects")
                                try:
                                    target = target.join(response.headers["location"])
                                except httpx.InvalidURL:
                                    raise MediaError("redirected to an invalid URL") from None
                                attempt = 0
                                failed.clear()
                                continue
                            if response.status_code == 404:
                                raise _NotFound()
                            if response.is_success:
                                return await _read_capped(response, cap), response.headers.get(
                                    "content-type", ""
                                )
                            await response.aread()
                            error = api_error_from_body(_body(response), response.status_code)
                    finally:
                        self._in_flight -= 1
            except httpx.TransportError as exc:
                self.stats.requests += 1
                logger.info("GET %s -> %s (attempt %d)", where, type(exc).__name__, attempt)
                failed[RetryKind.TRANSIENT] = tries = failed.get(RetryKind.TRANSIENT, 0) + 1
                delay = self.retry.transport_delay(tries, total=attempt)
                if delay is None:
                    self.stats.failures += 1
                    raise TransportError(
                        f"GET {where} failed after {attempt} attempt(s): {type(exc).__name__}",
                        maybe_delivered=False,
                    ) from exc
                self.stats.retries += 1
                await self.retry.wait(delay)
                continue
            except MediaError:
                self.stats.failures += 1
                raise
            failed[error.retry_kind] = tries = failed.get(error.retry_kind, 0) + 1
            delay = self.retry.delay(error, tries, total=attempt)
            if delay is None:
                self.stats.failures += 1
                raise error
            self.stats.retries += 1
            await self.retry.wait(delay)


# --------------------------------------------------------------------------- helpers


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise MediaError(f"media of {declared} bytes is over the {cap}-byte limit")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > cap:
            raise MediaError(f"media is over the {cap}-byte limit; download stopped")
        chunks.append(chunk)
    return b"".join(chunks)


def _cap(max_bytes: int | None, kind: str | None, mime_type: str | None) -> int:
    if max_bytes is not None:
        return max_bytes
    if kind is not None:
        if kind not in MEDIA_SIZE_LIMITS:
            raise ValueError(f"unknown media kind {kind!r}; use one of {sorted(MEDIA_SIZE_LIMITS)}")
        return MEDIA_SIZE_LIMITS[kind]
    found = kind_for_mime(mime_type) if mime_type else None
    return MEDIA_SIZE_LIMITS[found] if found else max(MEDIA_SIZE_LIMITS.values())


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:1000]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _recipient(to: str) -> str:
    if isinstance(to, GroupId):
        group = str.strip(to)
        if not group:
            raise ValueError("the recipient ('to') is empty")
        return group
    to = normalize_number(to)
    if not to:
        raise ValueError("the recipient ('to') is empty")
    return to


def is_voice_note(data: bytes, mime_type: str | None = None) -> bool:
    """Whether audio can go out as a voice note: OGG with the Opus codec (Meta's rule).

    Bytes are checked by their header (an Ogg page whose first packet is ``OpusHead``); a
    declared ``audio/ogg`` MIME type counts when the bytes do not tell.
    """
    if data[:4] == b"OggS":
        return b"OpusHead" in data[:128]
    if data:
        return False
    return mime_type is not None and base_mime(mime_type) == "audio/ogg"


def _button(button: tuple[str, str] | Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(button, str):
        return {"type": "reply", "reply": {"id": button, "title": button}}
    if isinstance(button, Mapping):
        if "reply" in button:
            return {"type": "reply", "reply": dict(button["reply"])}
        return {"type": "reply", "reply": {"id": button["id"], "title": button["title"]}}
    button_id, title = button
    return {"type": "reply", "reply": {"id": button_id, "title": title}}


def _row(row: tuple[str, ...] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    if len(row) == 2:
        return {"id": row[0], "title": row[1]}
    if len(row) == 3:
        return {"id": row[0], "title": row[1], "description": row[2]}
    raise ValueError(f"a list row is (id, title) or (id, title, description), got {row!r}")


def _sections(sections: Sequence[Mapping[str, Any] | tuple[str, ...]]) -> list[dict[str, Any]]:
    items: list[Any] = list(sections)
    if items and all(isinstance(s, tuple) or "id" in s for s in items):
        return [{"rows": [_row(r) for r in items]}]  # a flat list of rows
    result: list[dict[str, Any]] = []
    for section in items:
        if not isinstance(section, Mapping):
            raise TypeError("send_list(sections=...) mixes sections and rows")
        entry: dict[str, Any] = {k: v for k, v in section.items() if k != "rows"}
        entry["rows"] = [_row(r) for r in section.get("rows", [])]
        result.append(entry)
    return result


def _decorate(
    interactive: dict[str, Any], header: str | Mapping[str, Any] | None, footer: str | None
) -> None:
    if header is not None:
        interactive["header"] = (
            {"type": "text", "text": header} if isinstance(header, str) else dict(header)
        )
    if footer is not None:
        interactive["footer"] = {"text": footer}
