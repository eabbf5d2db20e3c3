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

The parts, for a maintainer: :class:`Sender` (here) is the public API, the message envelope
and the URLs; the content object of each message type is built in ``_message_bodies``; every
HTTP call (client, token rule, in-flight bound, rate limit, retries, counters) goes through
the ``GraphClient`` of ``_graph``; uploads and downloads are in ``_sender_media``;
:class:`RetryPolicy` and :class:`RateLimiter` live in ``_policy`` (all re-exported here).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, final

import httpx

from . import _message_bodies as bodies
from ._graph import DEFAULT_TIMEOUT, GraphClient, SenderStats
from ._policy import RateLimiter, RetryPolicy
from ._sender_media import NotFound, download, size_cap, upload
from ._sender_media import is_voice_note as is_voice_note  # noqa: PLC0414 (public here)
from .exceptions import ConfigurationError, MediaError, WhatsAppAPIError
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

#: bytes, a file path, a media id, or an http(s) link.
MediaSource = bytes | bytearray | memoryview | os.PathLike[str] | str


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
        self._token = token
        self.phone_number_id = str(phone_number_id).strip()
        self.api_version = api_version.strip("/")
        self.base_url = base_url.rstrip("/")
        base = httpx.URL(self.base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
        retry = retry if retry is not None else RetryPolicy()
        limiter: RateLimiter | None
        if isinstance(rate_limit, RateLimiter):
            limiter = rate_limit
        elif rate_limit:
            limiter = RateLimiter(rate_limit, sleep=retry.sleep)
        else:
            limiter = None
        self.max_in_flight = max_in_flight
        self.read_receipts_count = read_receipts_count
        if user_agent is None:
            from . import __version__

            user_agent = f"wa_agent/{__version__} (httpx)"
        # The HTTP core: client, token rule, in-flight bound, rate limit, retries, counters.
        self._graph = GraphClient(
            token,
            self.base_url,
            retry=retry,
            rate_limiter=limiter,
            max_in_flight=max_in_flight,
            timeout=httpx.Timeout(timeout) if isinstance(timeout, int | float) else timeout,
            user_agent=user_agent,
            client=client,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"Sender(access_token={self._token!r}, phone_number_id={self.phone_number_id!r}, "
            f"api_version={self.api_version!r}, base_url={self.base_url!r})"
        )

    @property
    def retry(self) -> RetryPolicy:
        """The :class:`RetryPolicy` every call follows."""
        return self._graph.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._graph.retry = policy

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The number's :class:`RateLimiter` (``None``: no limit)."""
        return self._graph.rate_limiter

    @rate_limiter.setter
    def rate_limiter(self, limiter: RateLimiter | None) -> None:
        self._graph.rate_limiter = limiter

    @property
    def stats(self) -> SenderStats:
        """Counters of requests, messages sent, retries and failures."""
        return self._graph.stats

    @stats.setter
    def stats(self, stats: SenderStats) -> None:
        self._graph.stats = stats

    @property
    def in_flight(self) -> int:
        """HTTP requests running right now."""
        return self._graph.in_flight

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._graph.closed

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
        if self._graph.closed:
            raise RuntimeError("Cannot reopen a Sender once it has been closed.")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if the Sender created it. Safe to call twice."""
        await self._graph.aclose()

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
        return await self._send_media(
            to, "audio", media, caption, filename, mime_type, reply_to, voice=voice
        )

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
        return await self._send_media(to, "document", media, caption, filename, mime_type, reply_to)

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
        return await self._send(to, "reaction", bodies.reaction(message_id, emoji))

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
        content = bodies.location(latitude, longitude, name, address)
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
        cards = bodies.contact_cards(contacts)
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
        interactive = bodies.reply_buttons(body, buttons, header, footer)
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
        interactive = bodies.list_message(body, button, sections, header, footer)
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
        interactive = bodies.cta_url(body, label, url, header, footer)
        return await self._send(to, "interactive", interactive, reply_to=reply_to)

    async def send_template(
        self,
        to: str,
        name: str,
        language: str = "en_US",
        components: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Send an approved template (the only kind allowed outside the 24-hour window)."""
        return await self._send(to, "template", bodies.template(name, language, components))

    async def mark_read(self, message_id: str, *, typing: bool = False) -> None:
        """Mark an inbound message read; with ``typing`` also show the typing indicator
        (it disappears when you reply, or after 25 s)."""
        await self._graph.request(
            "POST",
            self._url("messages"),
            json=bodies.read_receipt(message_id, typing),
            rate_limited=True,
            counted=self.read_receipts_count,
        )

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
        media_id, _mime_type, _raw = await upload(
            self._graph, self._url("media"), data, mime_type, filename, None
        )
        return media_id

    async def get_media_url(self, media_id: str) -> MediaInfo:
        """Look up a media id: its short-lived download URL, MIME type, checksum and size."""
        body = await self._graph.request(
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
        cap = size_cap(max_bytes, kind, info.mime_type)
        if info.file_size is not None and info.file_size > cap:
            raise MediaError(
                f"media {media_id} is {info.file_size} bytes, over the {cap}-byte limit"
            )
        try:
            data, content_type = await download(self._graph, info.url, cap)
        except NotFound:
            info = await self.get_media_url(media_id)
            try:
                data, content_type = await download(self._graph, info.url, cap)
            except NotFound:
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
            return await download(self._graph, url, size_cap(max_bytes, kind, None))
        except NotFound:
            self.stats.failures += 1
            raise MediaError("the media URL answered 404 (it is valid 5 minutes)") from None

    async def delete_media(self, media_id: str) -> None:
        """Delete uploaded media."""
        await self._graph.request(
            "DELETE",
            self._url(media_id, node=False),
            params={"phone_number_id": self.phone_number_id},
        )

    # ----------------------------------------------------------------- internals
    # Content objects come from wa_agent._message_bodies, HTTP calls (retries, rate limit,
    # token rule) go through self._graph (wa_agent._graph), media I/O through
    # wa_agent._sender_media. What stays here: URLs, the message envelope, the answer.

    def _url(self, path: str, *, node: bool = True) -> str:
        if node:
            return f"{self.base_url}/{self.api_version}/{self.phone_number_id}/{path}"
        return f"{self.base_url}/{self.api_version}/{path}"

    def token_allowed(self, url: str | httpx.URL) -> bool:
        """Whether the access token may be sent to ``url``: Meta's hosts over HTTPS, or
        the configured ``base_url``'s origin. The host is the one httpx connects to (so
        ``https://graph.facebook.com@evil.test/`` is ``evil.test``); a URL httpx cannot
        parse is never allowed."""
        return self._graph.token_allowed(url)

    async def _send(self, to: str, kind: str, content: Any, *, reply_to: str | None = None) -> str:
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
        body = await self._graph.request(
            "POST",
            self._url("messages"),
            json=payload,
            message=True,
            recipient=recipient,
            rate_limited=True,
        )
        try:
            wamid = body["messages"][0]["id"]
        except (KeyError, IndexError, TypeError):
            wamid = None
        if not isinstance(wamid, str):
            self._graph.stats.failures += 1
            raise WhatsAppAPIError(
                "the Cloud API accepted the message but answered without a message id",
                http_status=200,
            )
        self._graph.stats.sent += 1
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
            content = bodies.media_reference(media)
        elif isinstance(media, bytes | bytearray | memoryview | os.PathLike):
            if kind == "document" and filename is None and isinstance(media, os.PathLike):
                filename = Path(media).name
            media_id, mime_type, raw = await upload(
                self._graph, self._url("media"), media, mime_type, filename, kind
            )
            content = {"id": media_id}
            if voice is None and kind == "audio":
                voice = is_voice_note(raw, mime_type)
        else:
            raise TypeError(
                f"media must be bytes, a path, a media id or a link, not {type(media).__name__}"
            )
        bodies.media_object(content, kind, caption=caption, filename=filename, voice=voice)
        return await self._send(to, kind, content, reply_to=reply_to)


# --------------------------------------------------------------------------- helpers


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
