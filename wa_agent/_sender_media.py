"""The Sender's media: uploads checked against the Cloud API limits, and downloads that are
host-checked, size-capped and retried.

* :func:`upload` reads bytes or a file, settles the MIME type (given, from the file name,
  or sniffed), checks it and the size against :data:`~wa_agent._media.MEDIA_SIZE_LIMITS`
  before anything is sent, and posts the multipart form;
* :func:`download` streams a media URL: each redirect hop is host-checked (the token only
  goes to Meta's hosts, see :meth:`~wa_agent._graph.GraphClient.token_allowed`), the body is
  never read past the cap, and a 404 (an expired URL) raises :class:`NotFound` so the caller
  can look the media id up again;
* :func:`is_voice_note` decides whether audio can go out as a voice note.

Every call goes through the Sender's :class:`~wa_agent._graph.GraphClient` (its client,
bounds, retry policy and counters).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Final

import anyio
import httpx

from ._graph import GraphClient, response_body
from ._media import MEDIA_MIME_TYPES, MEDIA_SIZE_LIMITS, base_mime, kind_for_mime, sniff_mime
from .exceptions import MediaError, RetryKind, TransportError, WhatsAppAPIError, api_error_from_body

__all__ = [
    "MAX_REDIRECTS",
    "NotFound",
    "download",
    "is_voice_note",
    "size_cap",
    "upload",
]

logger = logging.getLogger("wa_agent.sender")

#: Redirects followed by a media download (each hop is host-checked).
MAX_REDIRECTS: Final = 5


class NotFound(Exception):
    """A media download URL answered 404 (expired): fetch a fresh URL."""


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


def size_cap(max_bytes: int | None, kind: str | None, mime_type: str | None) -> int:
    """The most bytes a download may have: ``max_bytes``, else the limit of ``kind`` (or of
    the kind ``mime_type`` belongs to), else the largest limit."""
    if max_bytes is not None:
        return max_bytes
    if kind is not None:
        if kind not in MEDIA_SIZE_LIMITS:
            raise ValueError(f"unknown media kind {kind!r}; use one of {sorted(MEDIA_SIZE_LIMITS)}")
        return MEDIA_SIZE_LIMITS[kind]
    found = kind_for_mime(mime_type) if mime_type else None
    return MEDIA_SIZE_LIMITS[found] if found else max(MEDIA_SIZE_LIMITS.values())


# --------------------------------------------------------------------------- upload


async def upload(
    graph: GraphClient,
    url: str,
    data: bytes | bytearray | memoryview | os.PathLike[str],
    mime_type: str | None,
    filename: str | None,
    kind: str | None,
) -> tuple[str, str, bytes]:
    """Upload to ``url`` (the number's ``/media``); returns the media id, the MIME type
    sent and the bytes. ``kind`` (when given) is the message type the media must fit."""
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
    actual = _check_upload(raw, mime_type, kind)
    body = await graph.request(
        "POST",
        url,
        data={"messaging_product": "whatsapp", "type": mime_type},
        files={"file": (filename or f"file.{actual}", raw, mime_type)},
    )
    media_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(media_id, str | int):
        graph.stats.failures += 1
        raise WhatsAppAPIError("the media upload answered without an id", http_status=200)
    return str(media_id), mime_type, raw


def _check_upload(raw: bytes, mime_type: str, kind: str | None) -> str:
    """Check media against the Cloud API's types and sizes; return its kind."""
    actual = kind_for_mime(mime_type)
    if actual is None:
        supported = ", ".join(sorted(t for types in MEDIA_MIME_TYPES.values() for t in types))
        raise MediaError(
            f"the Cloud API does not take {base_mime(mime_type)!r} media (supported: {supported})"
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
    return actual


# --------------------------------------------------------------------------- download


async def download(graph: GraphClient, url: str, cap: int) -> tuple[bytes, str]:
    """GET a media URL with the token, following host-checked redirects; returns the body
    (at most ``cap`` bytes) and its content type. Raises :class:`NotFound` for a 404."""
    client = graph.http()
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise MediaError("the media URL is not a valid URL") from None
    attempt = 0
    failed: dict[RetryKind, int] = {}
    hops = 0
    while True:
        attempt += 1
        headers = graph.headers(target)  # raises MediaError for a foreign host
        started = time.perf_counter()
        where = f"{target.host}{target.path}"
        try:
            async with graph.semaphore:
                graph.in_flight += 1
                try:
                    async with client.stream(
                        "GET",
                        target,
                        headers=headers,
                        timeout=graph.timeout_arg(),
                        follow_redirects=False,
                    ) as response:
                        graph.stats.requests += 1
                        elapsed = (time.perf_counter() - started) * 1000
                        logger.info(
                            "GET %s -> %d in %.0f ms (attempt %d)",
                            where,
                            response.status_code,
                            elapsed,
                            attempt,
                        )
                        if response.is_redirect and "location" in response.headers:
                            hops += 1
                            target = _redirect_target(target, response, hops)
                            attempt = 0
                            failed.clear()
                            continue
                        if response.status_code == 404:
                            raise NotFound()
                        if response.is_success:
                            return await _read_capped(response, cap), response.headers.get(
                                "content-type", ""
                            )
                        await response.aread()
                        error = api_error_from_body(response_body(response), response.status_code)
                finally:
                    graph.in_flight -= 1
        except httpx.TransportError as exc:
            graph.stats.requests += 1
            logger.info("GET %s -> %s (attempt %d)", where, type(exc).__name__, attempt)
            failed[RetryKind.TRANSIENT] = tries = failed.get(RetryKind.TRANSIENT, 0) + 1
            delay = graph.retry.transport_delay(tries, total=attempt)
            if delay is None:
                graph.stats.failures += 1
                raise TransportError(
                    f"GET {where} failed after {attempt} attempt(s): {type(exc).__name__}",
                    maybe_delivered=False,
                ) from exc
            graph.stats.retries += 1
            await graph.retry.wait(delay)
            continue
        except MediaError:
            graph.stats.failures += 1
            raise
        failed[error.retry_kind] = tries = failed.get(error.retry_kind, 0) + 1
        delay = graph.retry.delay(error, tries, total=attempt)
        if delay is None:
            graph.stats.failures += 1
            raise error
        graph.stats.retries += 1
        await graph.retry.wait(delay)


def _redirect_target(target: httpx.URL, response: httpx.Response, hops: int) -> httpx.URL:
    """Where a redirect answer points (the next hop's host is checked by the caller)."""
    if hops > MAX_REDIRECTS:
        raise MediaError(f"more than {MAX_REDIRECTS} redirects")
    try:
        return target.join(response.headers["location"])
    except httpx.InvalidURL:
        raise MediaError("redirected to an invalid URL") from None


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
