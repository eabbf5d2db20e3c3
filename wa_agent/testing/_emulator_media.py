"""The emulator's media storage: uploads, lookups, deletes and the download URLs.

:class:`MediaStore` holds media by id (what the bot uploaded and what a test added as a
user's inbound media) and answers the media endpoints as Meta does:

* ``POST /{phone_number_id}/media``: a multipart form whose MIME type and size are checked
  against the Cloud API limits (131053 otherwise);
* ``GET /{media_id}``: metadata and a download URL that is valid for a while (Meta: 5
  minutes) and only for that media;
* ``DELETE /{media_id}``;
* the download URL itself (:data:`DOWNLOAD_PATH`), which, like Meta's, wants a User-Agent
  and can be made to redirect first.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import final
from urllib.parse import quote

from .._media import MEDIA_MIME_TYPES, MEDIA_SIZE_LIMITS, base_mime, kind_for_mime
from ._emulator_http import Part, Request, Response
from ._graph_errors import Reject

__all__ = ["DOWNLOAD_PATH", "MediaStore", "StoredMedia"]

#: Where download URLs point (on the emulator's own host, like Meta's lookaside host).
DOWNLOAD_PATH = "/whatsapp_business/attachments/"


@final
@dataclass(slots=True)
class StoredMedia:
    """A media object held by the emulator (uploaded by the bot or added for a user)."""

    id: str
    data: bytes = field(repr=False)
    mime_type: str
    filename: str | None
    sha256: str
    created: float


@final
class MediaStore:
    """Media by id (:attr:`items`) and the download URLs handed out for them."""

    def __init__(self) -> None:
        self.items: dict[str, StoredMedia] = {}
        self._urls: dict[str, tuple[str, float]] = {}  # hash -> (media id, expiry)
        self._seq = 0

    def clear(self) -> None:
        """Forget every media object and download URL."""
        self.items.clear()
        self._urls.clear()

    def add(self, data: bytes, mime_type: str, filename: str | None = None) -> str:
        """Store media and return its new id."""
        self._seq += 1
        media_id = str(10**15 + secrets.randbelow(10**15) * 1000 + self._seq % 1000)
        self.items[media_id] = StoredMedia(
            id=media_id,
            data=bytes(data),
            mime_type=mime_type,
            filename=filename,
            sha256=hashlib.sha256(data).hexdigest(),
            created=time.time(),
        )
        return media_id

    def get(self, media_id: str) -> StoredMedia:
        """The media with ``media_id``; Meta's 100 "does not exist" when there is none."""
        stored = self.items.get(media_id)
        if stored is None:
            raise Reject(
                100,
                f"Unsupported get request. Object with ID '{media_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
            )
        return stored

    # ------------------------------------------------------------------ endpoints

    def upload(self, form: dict[str, object]) -> Response:
        """``POST /{phone_number_id}/media``: check the form and store its file."""
        if form.get("messaging_product") != "whatsapp":
            raise Reject(100, "The parameter messaging_product is required.")
        file = form.get("file")
        if not isinstance(file, Part):
            raise Reject(100, "The parameter file is required.")
        mime = form.get("type")
        if not isinstance(mime, str) or not mime:
            raise Reject(100, "The parameter type is required.")
        kind = kind_for_mime(mime)
        if kind is None:
            supported = sorted(t for types in MEDIA_MIME_TYPES.values() for t in types)
            raise Reject(
                131053,
                f"Param file must be a file with one of the following types: "
                f"{', '.join(supported)}. Received file of type '{base_mime(mime)}'.",
            )
        if len(file.data) > MEDIA_SIZE_LIMITS[kind]:
            raise Reject(
                131053,
                f"File of {len(file.data)} bytes is over the {kind} limit of "
                f"{MEDIA_SIZE_LIMITS[kind]} bytes.",
            )
        if not file.data:
            raise Reject(131053, "The file is empty.")
        return Response(200, {"id": self.add(file.data, mime, file.filename)})

    def lookup(self, media_id: str, *, base: str, ttl: float) -> Response:
        """``GET /{media_id}``: metadata and a download URL on ``base``, valid ``ttl`` s."""
        stored = self.get(media_id)
        nonce = secrets.token_urlsafe(16)
        self._urls[nonce] = (stored.id, time.monotonic() + ttl)
        url = (
            f"{base.rstrip('/')}{DOWNLOAD_PATH}?mid={quote(stored.id)}&ext={int(time.time())}"
            f"&hash={quote(nonce)}"
        )
        return Response(
            200,
            {
                "messaging_product": "whatsapp",
                "url": url,
                "mime_type": stored.mime_type,
                "sha256": stored.sha256,
                "file_size": len(stored.data),
                "id": stored.id,
            },
        )

    def delete(self, media_id: str) -> Response:
        """``DELETE /{media_id}``."""
        del self.items[self.get(media_id).id]
        return Response(200, {"success": True})

    def download(self, request: Request, *, redirect: str | None) -> Response:
        """The download URL: the bytes while the URL is valid, else 404. With ``redirect``
        (``scheme://host[:port]``) a first call answers 302 to the same path there."""
        if not request.headers.get("user-agent"):
            raise Reject(100, "A User-Agent header is required", 400)
        if redirect and request.query.get("redirected") != "1":
            target = redirect.rstrip("/")
            query = "&".join(f"{quote(k)}={quote(v)}" for k, v in request.query.items())
            location = f"{target}{DOWNLOAD_PATH}?{query}&redirected=1"
            return Response(302, None, [(b"location", location.encode())], raw=b"")
        nonce = request.query.get("hash", "")
        entry = self._urls.get(nonce)
        stored = self.items.get(request.query.get("mid", ""))
        if entry is None or stored is None or entry[0] != stored.id:
            return Response(404, None, raw=b"Not Found", content_type=b"text/plain")
        if time.monotonic() > entry[1]:
            del self._urls[nonce]
            return Response(404, None, raw=b"URL expired", content_type=b"text/plain")
        return Response(
            200,
            None,
            [(b"content-disposition", b"attachment")],
            raw=stored.data,
            content_type=stored.mime_type.encode("latin-1"),
        )
