"""A local WhatsApp Cloud API emulator: the Graph endpoints a bot calls, on your own machine.

:class:`CloudAPIEmulator` is a plain ASGI app. Run it on a loopback port and point a
:class:`~wa_agent.sender.Sender` (or any HTTP client) at it::

    emulator = CloudAPIEmulator(access_token="test-token")
    async with emulator.serve() as base_url:
        async with Sender("test-token", "100000000000001", base_url=base_url) as sender:
            await sender.send_text("15551230001", "hello")
    assert emulator.texts_to("15551230001") == ["hello"]

It implements, under ``/{version}/``:

* ``POST /{phone_number_id}/messages``: every message type, mark-as-read and the typing
  indicator, validated against the Cloud API limits (4096-character text, 1024-character
  captions, 1–3 unique reply buttons with 20-character titles, at most 10 list rows with
  24-character titles, CTA URL buttons with an http(s) URL, one-emoji reactions, locations
  in range, named contact cards, template shape, ...) and answering Meta's error for a
  violation (131009 for a value out of range, 100 for a missing or mistyped parameter);
* ``POST /{phone_number_id}/media`` (multipart upload, MIME type and size checked),
  ``GET /{media_id}`` (metadata and a short-lived download URL), ``DELETE /{media_id}``;
* the download URL itself (``/whatsapp_business/attachments/?mid=...``), served by the
  emulator and, like Meta's, only with the bearer token.

Every call needs ``Authorization: Bearer <access_token>``. Errors use Meta's JSON shape and
codes (``{"error": {"message", "type", "code", "error_data": {"details"}, "fbtrace_id"}}``).
Everything is recorded for assertions (:attr:`~CloudAPIEmulator.calls`,
:attr:`~CloudAPIEmulator.messages`, :attr:`~CloudAPIEmulator.reads`; :meth:`~CloudAPIEmulator.reset`
starts over, so one server can serve a whole test module), and faults are injected
on demand: :meth:`~CloudAPIEmulator.fail_next`, :meth:`~CloudAPIEmulator.fail_rate`,
:meth:`~CloudAPIEmulator.pair_rate_limit`, :meth:`~CloudAPIEmulator.hang_next`,
:meth:`~CloudAPIEmulator.expire_token`, :attr:`~CloudAPIEmulator.delay` and
:attr:`~CloudAPIEmulator.throughput`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import inspect
import json
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, final
from urllib.parse import parse_qsl, quote

from .._asgi_types import Receive, Scope, Send
from .._media import MEDIA_MIME_TYPES, MEDIA_SIZE_LIMITS, base_mime, kind_for_mime
from ..secret import Secret

__all__ = [
    "CloudAPIEmulator",
    "ReadReceipt",
    "RecordedCall",
    "SentMessage",
    "StoredMedia",
    "graph_error",
]

logger = logging.getLogger(__name__)

Subscriber = Callable[["SentMessage"], Any]

_VERSION_RE = re.compile(r"v\d+\.\d+")
_PHONE_RE = re.compile(r"\+?[\d\s\-().]+")
_MAX_BODY = 110 * 1024 * 1024
_DOWNLOAD_PATH = "/whatsapp_business/attachments/"

# Messages Meta uses for each code (reference/cloud_api.md §10), "(#code) <title>".
_TITLES: dict[int, str] = {
    0: "AuthException",
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    3: "Capability or permissions issue",
    4: "Application request limit reached",
    10: "Permission denied",
    33: "This phone number is deleted",
    100: "Invalid parameter",
    190: "Error validating access token: Session has expired",
    368: "Temporarily blocked for policies violations",
    80007: "Rate limit issues",
    130429: "Rate limit hit",
    130472: "User's number is part of an experiment",
    130497: "Business account is restricted from messaging users in this country",
    131000: "Something went wrong",
    131005: "Access denied",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131021: "Recipient cannot be sender",
    131026: "Message Undeliverable",
    131031: "Business Account locked",
    131037: "WhatsApp provided number needs display name approval before message can be sent",
    131042: "Business eligibility payment issue",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement",
    131050: "User has stopped marketing messages",
    131051: "Unsupported message type",
    131052: "Media download error",
    131053: "Media upload error",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131057: "Account in maintenance mode",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    137000: "Identity key hash mismatch",
}
_DETAILS: dict[int, str] = {
    130429: "Cloud API message throughput has been reached.",
    131056: "Too many messages sent from the sender phone number to the same recipient phone "
    "number in a short period of time.",
    131047: "Message failed to send because more than 24 hours have passed since the customer "
    "last replied to this number.",
    131026: "Message failed to send because the recipient is not a WhatsApp user or has not "
    "accepted the latest terms of service.",
}
_STATUS: dict[int, int] = {
    0: 401, 190: 401, 3: 403, 10: 403, 4: 429, 80007: 429, 130429: 429, 131056: 429,
    1: 500, 131000: 500, 2: 503, 131016: 503, 131057: 503,
}  # fmt: skip


def graph_error(
    code: int,
    details: str | None = None,
    *,
    message: str | None = None,
    subcode: int | None = None,
) -> dict[str, Any]:
    """Meta's synchronous error body for ``code`` (``{"error": {...}}``)."""
    title = message or f"(#{code}) {_TITLES.get(code, 'Error')}"
    error: dict[str, Any] = {"message": title, "type": "OAuthException", "code": code}
    if code not in (0, 190) or details is not None:
        error["error_data"] = {
            "messaging_product": "whatsapp",
            "details": details or _DETAILS.get(code, _TITLES.get(code, "Error")),
        }
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(15)
    return {"error": error}


@final
@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One HTTP call the emulator answered (the token itself is never recorded)."""

    method: str
    path: str
    query: dict[str, str]
    status: int  # 0: never answered (hang_next(accept=False))
    body: Any  # parsed JSON; for uploads the form fields (file as name/type/size)
    response: Any
    time: float
    authorized: bool
    endpoint: str  # messages, read, upload, media, download, delete, or unknown


@final
@dataclass(frozen=True, slots=True)
class SentMessage:
    """One outbound message the emulator accepted."""

    to: str  # as the client sent it
    wa_id: str  # digits only (or the BSUID/group id for non-phone recipients)
    type: str
    body: dict[str, Any]  # the whole request body
    wamid: str
    time: float
    phone_number_id: str

    @property
    def content(self) -> dict[str, Any]:
        """The object named after the type (``body["text"]``, ``body["image"]``, ...)."""
        value = self.body.get(self.type)
        return value if isinstance(value, dict) else {}

    @property
    def text(self) -> str | None:
        """Text body, media caption, or interactive/template body text, if any."""
        content = self.content
        if self.type == "text":
            return content.get("body")
        if "caption" in content:
            return content.get("caption")
        if self.type == "interactive":
            inner = content.get("body")
            return inner.get("text") if isinstance(inner, dict) else None
        return None

    @property
    def reply_to(self) -> str | None:
        """The quoted wamid (``context.message_id``), if any."""
        context = self.body.get("context")
        return context.get("message_id") if isinstance(context, dict) else None


@final
@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """One mark-as-read call (``typing`` when it also showed the typing indicator)."""

    message_id: str
    typing: bool
    time: float
    phone_number_id: str


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


@dataclass(slots=True)
class _Fault:
    remaining: int
    code: int | None
    http_status: int
    details: str | None
    message: str | None
    retry_after: float | None
    endpoint: str | None
    to: str | None


@dataclass(slots=True)
class _Hang:
    remaining: int
    endpoint: str | None
    accept: bool
    seconds: float


class _Reject(Exception):
    def __init__(self, code: int, details: str | None = None, status: int | None = None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.status = status if status is not None else _STATUS.get(code, 400)


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str


@dataclass(slots=True)
class _Response:
    status: int
    body: Any
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes | None = None
    content_type: bytes = b"application/json"


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


@final
class CloudAPIEmulator:
    """An in-process WhatsApp Cloud API (see the module docstring).

    ``access_token`` is the bearer token every call must carry; ``phone_number_ids``
    restricts which business numbers exist (``None``: any); ``api_version`` pins the Graph
    version in the path (``None``: any ``vNN.0``). ``media_url_ttl`` is how long a download
    URL stays valid (Meta: 5 minutes).
    """

    def __init__(
        self,
        *,
        access_token: str | Secret = "test-token",
        phone_number_ids: Iterable[str] | None = None,
        api_version: str | None = None,
        media_url_ttl: float = 300.0,
    ) -> None:
        self._initial_token = self._token = Secret(access_token)
        self._token_expired = False
        self._initial_ttl = media_url_ttl
        self.phone_number_ids = None if phone_number_ids is None else set(map(str, phone_number_ids))
        self.api_version = api_version
        self.media_url_ttl = media_url_ttl
        #: Every call answered, in order.
        self.calls: list[RecordedCall] = []
        #: Every accepted outbound message, in order.
        self.messages: list[SentMessage] = []
        #: Every accepted mark-as-read / typing-indicator call, in order.
        self.reads: list[ReadReceipt] = []
        #: Media by id (uploads and :meth:`add_media`); deleted media is removed.
        self.media: dict[str, StoredMedia] = {}
        #: Seconds of latency added to every call.
        self.delay: float = 0.0
        #: Messages per second per business number before sends fail with 130429 (``None``: off).
        self.throughput: float | None = None
        #: Whether mark-read/typing calls count against :attr:`throughput` too. Meta counts
        #: messages (inbound and outbound, every type); a read receipt is not one.
        self.throughput_counts_reads: bool = False
        #: Override ``scheme://host[:port]`` of download URLs (default: the host that was called).
        self.media_url_base: str | None = None
        #: When set, the download URL answers ``302`` to this ``scheme://host[:port]`` (same path).
        self.download_redirect: str | None = None
        #: Template (name, language) pairs that exist; empty means every template exists.
        self.templates: set[tuple[str, str]] = set()
        self._faults: list[_Fault] = []
        self._fault_rate: tuple[float, _Fault, random.Random] | None = None
        self._hangs: list[_Hang] = []
        self._urls: dict[str, tuple[str, float]] = {}  # hash -> (media id, expiry)
        self._sent_times: dict[str, collections.deque[float]] = {}
        self._subscribers: list[Subscriber] = []
        self._queue: asyncio.Queue[SentMessage | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._media_seq = 0

    def __repr__(self) -> str:
        return (
            f"CloudAPIEmulator(access_token={self._token!r}, "
            f"messages={len(self.messages)}, calls={len(self.calls)})"
        )

    # ------------------------------------------------------------------ assertions

    def sent_to(self, number: str) -> list[SentMessage]:
        """Accepted messages to ``number`` (``+``, spaces and dashes are ignored)."""
        digits = _digits(number)
        return [m for m in self.messages if m.to == number or (digits and m.wa_id == digits)]

    def texts_to(self, number: str) -> list[str]:
        """Bodies of the text messages accepted for ``number``, in order."""
        return [m.content.get("body", "") for m in self.sent_to(number) if m.type == "text"]

    async def wait_for_messages(
        self, count: int, *, to: str | None = None, timeout: float = 5.0
    ) -> list[SentMessage]:
        """Wait until at least ``count`` messages (to ``to``, if given) were accepted.

        Returns every matching message; raises :class:`TimeoutError` naming what did arrive.
        """

        def matching() -> list[SentMessage]:
            return self.messages if to is None else self.sent_to(to)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found := matching()) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                whom = f" to {to}" if to else ""
                raise TimeoutError(
                    f"expected {count} message(s){whom} within {timeout} s, got {len(found)}: "
                    f"{[(m.to, m.type, m.text) for m in found]}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change_event().wait(), remaining)
        return found

    def clear(self) -> None:
        """Forget recorded calls, messages and reads (media and faults are kept)."""
        self.calls.clear()
        self.messages.clear()
        self.reads.clear()

    def reset(self) -> None:
        """Return to the state right after construction: no records, media, faults,
        templates or subscribers, the original token (useful with one server per module)."""
        self.clear()
        self.media.clear()
        self.templates.clear()
        self._subscribers.clear()
        self._urls.clear()
        self._sent_times.clear()
        self.reset_faults()
        self.media_url_ttl = self._initial_ttl
        self.set_token(self._initial_token)

    # ------------------------------------------------------------------ media and hooks

    def add_media(self, data: bytes, mime_type: str, filename: str | None = None) -> str:
        """Store media (as a user's inbound media) and return its id for a webhook payload."""
        self._media_seq += 1
        media_id = str(10**15 + secrets.randbelow(10**15) * 1000 + self._media_seq % 1000)
        self.media[media_id] = StoredMedia(
            id=media_id,
            data=bytes(data),
            mime_type=mime_type,
            filename=filename,
            sha256=hashlib.sha256(data).hexdigest(),
            created=time.time(),
        )
        return media_id

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(message)`` (sync or async) for each accepted outbound message.

        Callbacks run in acceptance order on a background task, after the send was answered,
        so a callback may call back into the bot. Returns a function that unsubscribes.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def drain(self) -> None:
        """Wait until every subscriber callback queued so far has run."""
        if self._queue is not None and self._worker is not None and not self._worker.done():
            await self._queue.join()

    async def aclose(self) -> None:
        """Stop the callback task (after running what is queued) and release hung calls."""
        if self._closing is not None:
            self._closing.set()
        worker, queue = self._worker, self._queue
        self._worker = self._queue = None
        if worker is not None and queue is not None and not worker.done():
            queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(worker), 5.0)
            except TimeoutError:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        self._closing = None

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on a loopback port for the duration of the block; yields the base URL."""
        from ..server import BackgroundServer

        try:
            async with BackgroundServer(self, host=host, port=port) as server:
                yield server.url
        finally:
            await self.aclose()

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        n: int = 1,
        code: int | None = 130429,
        http_status: int | None = None,
        *,
        details: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        endpoint: str | None = "messages",
        to: str | None = None,
    ) -> None:
        """Fail the next ``n`` matching calls with Graph error ``code``.

        ``http_status`` defaults to what Meta uses for the code (429 for throttling, 401 for
        190, 5xx for 1/2/131000/131016, else 400). ``code=None`` answers a non-Graph error
        page (as a proxy would) with ``http_status`` (default 502). ``endpoint`` is one of
        ``messages`` (sends; the default), ``read``, ``upload``, ``media``, ``download``,
        ``delete`` or ``None`` (any call); ``to`` only fails sends to that recipient.
        """
        status = http_status or (_STATUS.get(code, 400) if code is not None else 502)
        self._faults.append(
            _Fault(n, code, status, details, message, retry_after, endpoint, to)
        )

    def fail_rate(
        self,
        p: float,
        code: int | None = 130429,
        http_status: int | None = None,
        *,
        seed: int | None = None,
        endpoint: str | None = "messages",
    ) -> None:
        """Fail a random fraction ``p`` of matching calls (``p=0`` turns it off)."""
        if p <= 0:
            self._fault_rate = None
            return
        status = http_status or (_STATUS.get(code, 400) if code is not None else 502)
        fault = _Fault(-1, code, status, None, None, None, endpoint, None)
        self._fault_rate = (p, fault, random.Random(seed))

    def pair_rate_limit(self, to: str, n: int = 1) -> None:
        """The next ``n`` sends to ``to`` fail with 131056 (pair rate limit); others pass."""
        self.fail_next(n, 131056, to=to)

    def hang_next(
        self,
        n: int = 1,
        *,
        endpoint: str | None = "messages",
        accept: bool = True,
        seconds: float = 30.0,
    ) -> None:
        """Never answer the next ``n`` matching calls (until the client gives up).

        With ``accept`` (the default) the message is processed and recorded first, as when
        Meta got the request but the answer was lost: the case where a resend duplicates.
        """
        self._hangs.append(_Hang(n, endpoint, accept, seconds))

    def expire_token(self) -> None:
        """Every call now fails with 190 (token expired) until :meth:`set_token`."""
        self._token_expired = True

    def set_token(self, access_token: str | Secret) -> None:
        """Accept a new access token (and end :meth:`expire_token`)."""
        self._token = Secret(access_token)
        self._token_expired = False

    def reset_faults(self) -> None:
        """Remove every injected fault, hang, delay and throughput limit."""
        self._faults.clear()
        self._hangs.clear()
        self._fault_rate = None
        self.delay = 0.0
        self.throughput = None
        self.throughput_counts_reads = False
        self.download_redirect = None
        self.media_url_base = None

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = await self._read(scope, receive)
        if request is None:
            await self._respond(send, _Response(413, graph_error(100, "Request body too large")))
            return
        response = await self._handle(request, receive)
        if response is not None:
            await self._respond(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read(self, scope: Scope, receive: Receive) -> _Request | None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        root = scope.get("root_path", "")
        path = scope["path"]
        if root and path.startswith(root):
            path = path[len(root) :]
        host = headers.get("host")
        if host is None and scope.get("server"):
            server_host, server_port = scope["server"]
            host = f"{server_host}:{server_port}"
        base = f"{scope.get('scheme', 'http')}://{host or 'localhost'}{root}"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return _Request(scope["method"], path or "/", query, headers, b"".join(chunks), base)

    async def _respond(self, send: Send, response: _Response) -> None:
        if response.raw is not None:
            payload = response.raw
        else:
            payload = json.dumps(response.body, ensure_ascii=False).encode()
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(payload)).encode()),
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: _Request, receive: Receive) -> _Response | None:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        endpoint, route = self._route(request)
        body: Any = None
        authorized = self._authorized(request)
        try:
            if route is None:
                raise _Reject(100, f"Unknown path components: {request.path}")
            if not authorized:
                raise self._auth_error(request)
            body = self._parse_body(request, endpoint)
            if endpoint == "messages" and _is_read(body):
                endpoint = "read"
            hang = self._take_hang(endpoint)
            if hang is not None and not hang.accept:
                self._record(request, endpoint, body, _Response(0, None), authorized)
                await self._hang(hang, receive)
                return None
            self._inject_fault(endpoint, body, request)
            response = route(request, body)
            if hang is not None:
                self._record(request, endpoint, body, response, authorized)
                await self._hang(hang, receive)
                return None
        except _InjectedFault as fault:
            response = fault.response
        except _Reject as exc:
            response = _Response(exc.status, graph_error(exc.code, exc.details))
            if exc.code == 190:
                response.headers.append(
                    (b"www-authenticate", b'OAuth "Facebook Platform" "invalid_token"')
                )
        self._record(request, endpoint, body, response, authorized)
        return response

    def _record(
        self, request: _Request, endpoint: str, body: Any, response: _Response, authorized: bool
    ) -> None:
        shown = response.body
        if response.raw is not None:
            shown = {"size": len(response.raw)} if response.status == 200 else None
        if endpoint == "upload" and isinstance(body, dict):
            body = _describe_form(body)
        self.calls.append(
            RecordedCall(
                method=request.method,
                path=request.path,
                query={k: v for k, v in request.query.items() if k != "access_token"},
                status=response.status,
                body=body,
                response=shown,
                time=time.time(),
                authorized=authorized,
                endpoint=endpoint,
            )
        )

    def _route(
        self, request: _Request
    ) -> tuple[str, Callable[[_Request, Any], _Response] | None]:
        method = request.method
        if request.path.rstrip("/") + "/" == _DOWNLOAD_PATH and method == "GET":
            return "download", self._download
        parts = [p for p in request.path.split("/") if p]
        if not parts or not _VERSION_RE.fullmatch(parts[0]):
            return "unknown", None
        if self.api_version is not None and parts[0] != self.api_version:
            return "unknown", None
        if len(parts) == 3 and method == "POST" and parts[2] == "messages":
            if not self._known_number(parts[1]):
                return "messages", self._unknown_object
            return "messages", self._messages
        if len(parts) == 3 and method == "POST" and parts[2] == "media":
            if not self._known_number(parts[1]):
                return "upload", self._unknown_object
            return "upload", self._upload
        if len(parts) == 2 and method == "GET":
            return "media", self._media_url
        if len(parts) == 2 and method == "DELETE":
            return "delete", self._delete
        return "unknown", None

    def _known_number(self, phone_number_id: str) -> bool:
        return self.phone_number_ids is None or phone_number_id in self.phone_number_ids

    def _unknown_object(self, request: _Request, body: Any) -> _Response:
        object_id = request.path.strip("/").split("/")[1]
        raise _Reject(
            100,
            f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
        )

    def _authorized(self, request: _Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            token = request.query.get("access_token", "")
        return bool(token) and self._token == token and not self._token_expired

    def _auth_error(self, request: _Request) -> _Reject:
        if self._token_expired:
            return _Reject(190, None, 401)
        if "authorization" not in request.headers and "access_token" not in request.query:
            return _Reject(190, "An active access token must be used", 401)
        return _Reject(190, "Invalid OAuth access token - Cannot parse access token", 401)

    def _parse_body(self, request: _Request, endpoint: str) -> Any:
        if endpoint == "messages":
            try:
                body = json.loads(request.body or b"null")
            except ValueError:
                raise _Reject(100, "The request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise _Reject(100, "The request body must be a JSON object")
            return body
        if endpoint == "upload":
            return _parse_multipart(request)
        return None

    def _take_hang(self, endpoint: str) -> _Hang | None:
        for hang in self._hangs:
            if hang.endpoint is None or hang.endpoint == endpoint:
                hang.remaining -= 1
                if hang.remaining <= 0:
                    self._hangs.remove(hang)
                return hang
        return None

    async def _hang(self, hang: _Hang, receive: Receive) -> None:
        """Wait until the client disconnects, the emulator closes, or ``seconds`` pass."""
        closing = self._closing_event()

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        waiters = [asyncio.ensure_future(disconnected()), asyncio.ensure_future(closing.wait())]
        try:
            await asyncio.wait(waiters, timeout=hang.seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    def _inject_fault(self, endpoint: str, body: Any, request: _Request) -> None:
        effective = endpoint
        to = body.get("to") if isinstance(body, dict) else None
        for fault in self._faults:
            if fault.endpoint not in (None, effective):
                continue
            if fault.to is not None and (
                not isinstance(to, str) or _digits(to) != _digits(fault.to)
            ):
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            raise _InjectedFault(fault)
        if self._fault_rate is not None:
            p, fault, rng = self._fault_rate
            if fault.endpoint in (None, effective) and rng.random() < p:
                raise _InjectedFault(fault)
        counted = ("messages", "read") if self.throughput_counts_reads else ("messages",)
        if effective in counted and self.throughput is not None:
            self._check_throughput(request.path.strip("/").split("/")[1])

    def _check_throughput(self, phone_number_id: str) -> None:
        assert self.throughput is not None
        window = self._sent_times.setdefault(phone_number_id, collections.deque())
        now = time.monotonic()
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.throughput:
            raise _Reject(130429)
        window.append(now)

    # ------------------------------------------------------------------ endpoints

    def _messages(self, request: _Request, body: Any) -> _Response:
        phone_number_id = request.path.strip("/").split("/")[1]
        if body.get("messaging_product") != "whatsapp":
            raise _Reject(100, "The parameter messaging_product is required.")
        if _is_read(body):
            return self._mark_read(body, phone_number_id)
        message = _validate_message(body, self)
        wamid = "wamid." + secrets.token_urlsafe(33)
        to = body.get("to") if isinstance(body.get("to"), str) else body.get("recipient")
        assert isinstance(to, str)
        wa_id = _digits(to) if _PHONE_RE.fullmatch(to) else to
        sent = SentMessage(
            to=to,
            wa_id=wa_id,
            type=message,
            body=body,
            wamid=wamid,
            time=time.time(),
            phone_number_id=phone_number_id,
        )
        self.messages.append(sent)
        self._notify(sent)
        contact: dict[str, str] = {"input": to}
        if "recipient" in body and "to" not in body:
            contact["user_id"] = to
        else:
            contact["wa_id"] = wa_id
        info: dict[str, str] = {"id": wamid}
        if message == "template":
            info["message_status"] = "accepted"
        return _Response(
            200, {"messaging_product": "whatsapp", "contacts": [contact], "messages": [info]}
        )

    def _mark_read(self, body: dict[str, Any], phone_number_id: str) -> _Response:
        if body.get("status") != "read":
            raise _Reject(100, "Param status must be 'read'")
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise _Reject(100, "The parameter message_id is required.")
        if not message_id.startswith("wamid."):
            raise _Reject(131009, f"Invalid message_id: {message_id}")
        typing = body.get("typing_indicator")
        if typing is not None and typing != {"type": "text"}:
            raise _Reject(100, "Param typing_indicator['type'] must be 'text'")
        self.reads.append(ReadReceipt(message_id, typing is not None, time.time(), phone_number_id))
        self._notify_change()
        return _Response(200, {"success": True})

    def _upload(self, request: _Request, form: Any) -> _Response:
        assert isinstance(form, dict)
        if form.get("messaging_product") != "whatsapp":
            raise _Reject(100, "The parameter messaging_product is required.")
        file = form.get("file")
        if not isinstance(file, _Part):
            raise _Reject(100, "The parameter file is required.")
        mime = form.get("type")
        if not isinstance(mime, str) or not mime:
            raise _Reject(100, "The parameter type is required.")
        kind = kind_for_mime(mime)
        if kind is None:
            supported = sorted(t for types in MEDIA_MIME_TYPES.values() for t in types)
            raise _Reject(
                131053,
                f"Param file must be a file with one of the following types: "
                f"{', '.join(supported)}. Received file of type '{base_mime(mime)}'.",
            )
        if len(file.data) > MEDIA_SIZE_LIMITS[kind]:
            raise _Reject(
                131053,
                f"File of {len(file.data)} bytes is over the {kind} limit of "
                f"{MEDIA_SIZE_LIMITS[kind]} bytes.",
            )
        if not file.data:
            raise _Reject(131053, "The file is empty.")
        media_id = self.add_media(file.data, mime, file.filename)
        return _Response(200, {"id": media_id})

    def _stored(self, request: _Request) -> StoredMedia:
        media_id = request.path.strip("/").split("/")[1]
        stored = self.media.get(media_id)
        if stored is None:
            raise _Reject(
                100,
                f"Unsupported get request. Object with ID '{media_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
            )
        return stored

    def _media_url(self, request: _Request, body: Any) -> _Response:
        stored = self._stored(request)
        nonce = secrets.token_urlsafe(16)
        self._urls[nonce] = (stored.id, time.monotonic() + self.media_url_ttl)
        base = (self.media_url_base or request.base_url).rstrip("/")
        url = (
            f"{base}{_DOWNLOAD_PATH}?mid={quote(stored.id)}&ext={int(time.time())}"
            f"&hash={quote(nonce)}"
        )
        return _Response(
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

    def _delete(self, request: _Request, body: Any) -> _Response:
        stored = self._stored(request)
        del self.media[stored.id]
        return _Response(200, {"success": True})

    def _download(self, request: _Request, body: Any) -> _Response:
        if not request.headers.get("user-agent"):
            raise _Reject(100, "A User-Agent header is required", 400)
        if self.download_redirect and request.query.get("redirected") != "1":
            target = self.download_redirect.rstrip("/")
            query = "&".join(f"{quote(k)}={quote(v)}" for k, v in request.query.items())
            location = f"{target}{_DOWNLOAD_PATH}?{query}&redirected=1"
            return _Response(302, None, [(b"location", location.encode())], raw=b"")
        nonce = request.query.get("hash", "")
        entry = self._urls.get(nonce)
        stored = self.media.get(request.query.get("mid", ""))
        if entry is None or stored is None or entry[0] != stored.id:
            return _Response(404, None, raw=b"Not Found", content_type=b"text/plain")
        if time.monotonic() > entry[1]:
            del self._urls[nonce]
            return _Response(404, None, raw=b"URL expired", content_type=b"text/plain")
        return _Response(
            200,
            None,
            [(b"content-disposition", b"attachment")],
            raw=stored.data,
            content_type=stored.mime_type.encode("latin-1"),
        )

    # ------------------------------------------------------------------ notification

    def _change_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    def _notify_change(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _notify(self, message: SentMessage) -> None:
        self._notify_change()
        if not self._subscribers:
            return
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(
                self._run_subscribers(self._queue), name="wa_agent-emulator-subscribers"
            )
        self._queue.put_nowait(message)

    async def _run_subscribers(self, queue: asyncio.Queue[SentMessage | None]) -> None:
        while True:
            message = await queue.get()
            try:
                if message is None:
                    return
                for callback in list(self._subscribers):
                    try:
                        result = callback(message)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.warning("emulator subscriber %r failed", callback, exc_info=True)
            finally:
                queue.task_done()


class _InjectedFault(Exception):
    """Internal control flow: an injected fault answers the call."""

    def __init__(self, fault: _Fault) -> None:
        super().__init__(fault.code)
        headers: list[tuple[bytes, bytes]] = []
        if fault.retry_after is not None:
            headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
        if fault.code is None:
            self.response = _Response(
                fault.http_status,
                None,
                headers,
                raw=f"<html><body>{fault.http_status} Bad Gateway</body></html>".encode(),
                content_type=b"text/html",
            )
        else:
            self.response = _Response(
                fault.http_status,
                graph_error(fault.code, fault.details, message=fault.message),
                headers,
            )


def _is_read(body: Any) -> bool:
    return isinstance(body, dict) and ("status" in body or "typing_indicator" in body) and (
        "type" not in body
    )


# ---------------------------------------------------------------------- multipart


@dataclass(slots=True)
class _Part:
    data: bytes
    filename: str | None
    content_type: str | None


def _parse_multipart(request: _Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise _Reject(100, "The request must be multipart/form-data")
    delimiter = b"--" + match.group(1).encode("latin-1")
    form: dict[str, Any] = {}
    for raw in request.body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        part = raw[2:] if raw.startswith(b"\r\n") else raw
        part = part[:-2] if part.endswith(b"\r\n") else part
        head, _, data = part.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is None:
            continue
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if filename is not None or "content-type" in headers:
            form[name.group(1)] = _Part(
                data, filename.group(1) if filename else None, headers.get("content-type")
            )
        else:
            form[name.group(1)] = data.decode("utf-8", "replace")
    return form


def _describe_form(form: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            {"filename": v.filename, "content_type": v.content_type, "size": len(v.data)}
            if isinstance(v, _Part)
            else v
        )
        for k, v in form.items()
    }


# ---------------------------------------------------------------------- validation


def _check_str(
    value: Any, name: str, max_len: int, *, min_len: int = 1, code: int = 100,
    details: str | None = None,
) -> str:
    """A string of ``min_len``..``max_len`` characters; a missing or non-string value is
    code 100, a length out of range ``code`` (with Meta's own ``details`` where known)."""
    if not isinstance(value, str):
        raise _Reject(100, f"The parameter {name} is required and must be a string.")
    if len(value) < min_len:
        raise _Reject(code, details or f"Param {name} must be at least {min_len} characters long.")
    if len(value) > max_len:
        raise _Reject(code, details or f"Param {name} must be at most {max_len} characters long.")
    return value


def _length_details(what: str, max_len: int) -> str:
    # Meta's wording, as observed in live answers (code 131009):
    # "Button title length invalid. Min length: 1, Max length: 20".
    return f"{what} length invalid. Min length: 1, Max length: {max_len}"


def _check_keys(obj: dict[str, Any], name: str, allowed: set[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _Reject(100, f"Param {name}['{extra[0]}'] is not a valid parameter.")


def _obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Reject(100, f"The parameter {name} is required and must be an object.")
    return value


_MESSAGE_TYPES = {
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
    "interactive", "reaction", "template",
}  # fmt: skip
#: Message types a group takes (Meta: text, media and text- or media-based templates).
_GROUP_TYPES = {"text", "image", "video", "audio", "document", "sticker", "template"}
_MEDIA_FIELDS = {
    "image": {"id", "link", "caption"},
    "video": {"id", "link", "caption"},
    "document": {"id", "link", "caption", "filename"},
    "audio": {"id", "link", "voice"},
    "sticker": {"id", "link"},
}


def _validate_message(body: dict[str, Any], emulator: CloudAPIEmulator) -> str:
    """Check a send against reference/cloud_api.md §8; return its type."""
    to = body.get("to", body.get("recipient"))
    if not isinstance(to, str) or not to.strip():
        raise _Reject(100, "The parameter to is required.")
    recipient_type = body.get("recipient_type", "individual")
    if recipient_type not in ("individual", "group"):
        raise _Reject(100, "Param recipient_type must be one of {individual, group}.")
    if recipient_type == "individual" and _PHONE_RE.fullmatch(to) and not (
        5 <= len(_digits(to)) <= 20
    ):
        raise _Reject(100, f"Param to is not a valid phone number: {to!r}")
    kind = body.get("type", "text")
    if not isinstance(kind, str) or kind not in _MESSAGE_TYPES:
        raise _Reject(100, f"Param type must be one of {{{', '.join(sorted(_MESSAGE_TYPES))}}}.")
    if recipient_type == "group" and kind not in _GROUP_TYPES:
        # Meta's "Group messaging" page: groups take text, media and templates only.
        raise _Reject(131051, f"Message type {kind} is not supported for group messages.")
    if kind not in body:
        raise _Reject(100, f"The parameter {kind} is required.")
    context = body.get("context")
    if context is not None:
        _check_str(_obj(context, "context").get("message_id"), "context['message_id']", 256)
    opaque = body.get("biz_opaque_callback_data")
    if opaque is not None:
        _check_str(opaque, "biz_opaque_callback_data", 512)
    content = body[kind]
    if kind == "text":
        text = _obj(content, "text")
        _check_keys(text, "text", {"body", "preview_url"})
        _check_str(text.get("body"), "text['body']", 4096)
        if "preview_url" in text and not isinstance(text["preview_url"], bool):
            raise _Reject(100, "Param text['preview_url'] must be a boolean.")
    elif kind in _MEDIA_FIELDS:
        _validate_media(kind, _obj(content, kind), emulator)
    elif kind == "location":
        _validate_location(_obj(content, "location"))
    elif kind == "reaction":
        reaction = _obj(content, "reaction")
        _check_keys(reaction, "reaction", {"message_id", "emoji"})
        _check_str(reaction.get("message_id"), "reaction['message_id']", 256)
        emoji = _check_str(reaction.get("emoji"), "reaction['emoji']", 16, min_len=0,
                           code=131009, details="Invalid emoji: one emoji at most.")
        if any(c.isspace() or (c.isascii() and c.isalpha()) for c in emoji):
            raise _Reject(131009, f"Invalid emoji {emoji!r}: a reaction is one emoji.")
    elif kind == "contacts":
        if not isinstance(content, list) or not content:
            raise _Reject(100, "Param contacts must be a non-empty array.")
        for n, contact in enumerate(content):
            name = _obj(_obj(contact, f"contacts[{n}]").get("name"), f"contacts[{n}]['name']")
            _check_str(name.get("formatted_name"), f"contacts[{n}]['name']['formatted_name']", 512)
    elif kind == "interactive":
        _validate_interactive(_obj(content, "interactive"), emulator)
    elif kind == "template":
        _validate_template(_obj(content, "template"), emulator)
    return kind


def _validate_media(kind: str, media: dict[str, Any], emulator: CloudAPIEmulator) -> None:
    _check_keys(media, kind, _MEDIA_FIELDS[kind])
    has_id, has_link = "id" in media, "link" in media
    if has_id == has_link:
        raise _Reject(100, f"Param {kind} must have exactly one of 'id' or 'link'.")
    if has_id:
        media_id = _check_str(media["id"], f"{kind}['id']", 64)
        stored = emulator.media.get(media_id)
        if stored is None:
            raise _Reject(100, f"Param {kind}['id'] is not a valid media id: {media_id}")
        if kind_for_mime(stored.mime_type) != kind:
            raise _Reject(
                131053, f"Media of type {stored.mime_type} cannot be sent as {kind}."
            )
    else:
        link = _check_str(media["link"], f"{kind}['link']", 2048)
        if not re.match(r"https?://[^\s/]+", link):
            raise _Reject(100, f"Param {kind}['link'] must be an http(s) URL.")
    if "voice" in media and not isinstance(media["voice"], bool):
        raise _Reject(100, f"Param {kind}['voice'] must be a boolean.")
    if "caption" in media:
        _check_str(media["caption"], f"{kind}['caption']", 1024, min_len=0)
    if "filename" in media:
        _check_str(media["filename"], f"{kind}['filename']", 240)


def _validate_location(location: dict[str, Any]) -> None:
    _check_keys(location, "location", {"latitude", "longitude", "name", "address"})
    for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
        value = location.get(name)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if not isinstance(value, int | float) or isinstance(value, bool) or abs(value) > bound:
            raise _Reject(100, f"Param location['{name}'] must be a number in ±{bound:g}.")
    for name in ("name", "address"):
        if name in location:
            _check_str(location[name], f"location['{name}']", 1000)


def _validate_header(header: Any, emulator: CloudAPIEmulator) -> None:
    header = _obj(header, "interactive['header']")
    kind = header.get("type")
    if kind == "text":
        _check_str(header.get("text"), "interactive['header']['text']", 60, code=131009,
                   details=_length_details("Header text", 60))
    elif kind in ("image", "video", "document"):
        _validate_media(kind, _obj(header.get(kind), f"interactive['header']['{kind}']"), emulator)
    else:
        raise _Reject(100, "Param interactive['header']['type'] must be text/image/video/document.")


#: Interactive types the Cloud API knows; the emulator checks button, list and cta_url fully.
_INTERACTIVE_TYPES = {
    "button", "list", "cta_url", "flow", "product", "product_list", "catalog_message",
    "location_request_message", "address_message", "call_permission_request", "carousel",
    "order_details", "order_status",
}  # fmt: skip


def _validate_interactive(interactive: dict[str, Any], emulator: CloudAPIEmulator) -> None:
    """Reply buttons, list messages and CTA URL buttons against Meta's limits.

    Lengths and counts out of range answer 131009 "Parameter value is not valid" with the
    details Meta gives (observed: "Button title length invalid. Min length: 1, Max length:
    20", "Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: 3", "Row title
    is too long. Max length is 24", "Total row count exceed max allowed count: 10"); a missing
    or mistyped parameter answers 100.
    """
    kind = interactive.get("type")
    if not isinstance(kind, str):
        raise _Reject(100, "The parameter interactive['type'] is required.")
    if kind not in _INTERACTIVE_TYPES:
        raise _Reject(100, f"Param interactive['type'] {kind!r} is not a valid interactive type.")
    action = _obj(interactive.get("action"), "interactive['action']")
    if "header" in interactive:
        _validate_header(interactive["header"], emulator)
    if "footer" in interactive:
        footer = _obj(interactive["footer"], "interactive['footer']")
        _check_str(footer.get("text"), "interactive['footer']['text']", 60, code=131009,
                   details=_length_details("Footer text", 60))
    if kind in ("button", "list", "cta_url"):
        body = _obj(interactive.get("body"), "interactive['body']")
        _check_str(body.get("text"), "interactive['body']['text']", 1024, code=131009,
                   details=_length_details("Body text", 1024))
    if kind == "button":
        _validate_reply_buttons(action)
    elif kind == "list":
        _validate_list(action)
    elif kind == "cta_url":
        _validate_cta_url(action)


def _validate_reply_buttons(action: dict[str, Any]) -> None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list):
        raise _Reject(100, "The parameter interactive['action']['buttons'] is required.")
    if not 1 <= len(buttons) <= 3:
        raise _Reject(131009, "Invalid buttons count. Min allowed buttons: 1, Max allowed "
                              f"buttons: 3 (got {len(buttons)}).")
    ids, titles = set(), set()
    for n, button in enumerate(buttons):
        where = f"interactive['action']['buttons'][{n}]"
        button = _obj(button, where)
        if button.get("type") != "reply":
            raise _Reject(100, f"Param {where}['type'] must be 'reply'.")
        reply = _obj(button.get("reply"), f"{where}['reply']")
        button_id = _check_str(reply.get("id"), f"{where}['reply']['id']", 256, code=131009,
                               details=_length_details("Button id", 256))
        title = _check_str(reply.get("title"), f"{where}['reply']['title']", 20, code=131009,
                           details=_length_details("Button title", 20))
        if not title.strip():
            raise _Reject(131009, _length_details("Button title", 20))
        if button_id in ids or title in titles:
            raise _Reject(131009, "Button ids and titles must be unique.")
        ids.add(button_id)
        titles.add(title)


def _validate_list(action: dict[str, Any]) -> None:
    _check_str(action.get("button"), "interactive['action']['button']", 20, code=131009,
               details=_length_details("Button text", 20))
    sections = action.get("sections")
    if not isinstance(sections, list) or not sections:
        raise _Reject(100, "The parameter interactive['action']['sections'] is required.")
    if len(sections) > 10:
        raise _Reject(131009, f"Too many sections: {len(sections)}. Max allowed sections: 10.")
    total = 0
    row_ids: set[str] = set()
    for n, section in enumerate(sections):
        where = f"interactive['action']['sections'][{n}]"
        section = _obj(section, where)
        if len(sections) > 1 or "title" in section:
            _check_str(section.get("title"), f"{where}['title']", 24, code=131009,
                       details="Section title is too long. Max length is 24")
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise _Reject(100, f"Param {where}['rows'] must be a non-empty array.")
        total += len(rows)
        for r, row in enumerate(rows):
            row_where = f"{where}['rows'][{r}]"
            row = _obj(row, row_where)
            row_id = _check_str(row.get("id"), f"{row_where}['id']", 200, code=131009,
                                details="Row id is too long. Max length is 200")
            _check_str(row.get("title"), f"{row_where}['title']", 24, code=131009,
                       details="Row title is too long. Max length is 24")
            if "description" in row:
                _check_str(row["description"], f"{row_where}['description']", 72, min_len=0,
                           code=131009, details="Row description is too long. Max length is 72")
            if row_id in row_ids:
                raise _Reject(131009, "Row ids must be unique.")
            row_ids.add(row_id)
    if total > 10:
        raise _Reject(131009, f"Total row count exceed max allowed count: 10 (got {total}).")


def _validate_cta_url(action: dict[str, Any]) -> None:
    if action.get("name") != "cta_url":
        raise _Reject(100, "Param interactive['action']['name'] must be 'cta_url'.")
    parameters = _obj(action.get("parameters"), "interactive['action']['parameters']")
    _check_keys(parameters, "interactive['action']['parameters']", {"display_text", "url"})
    label = _check_str(parameters.get("display_text"),
                       "interactive['action']['parameters']['display_text']", 20, code=131009,
                       details=_length_details("Display text", 20))
    if not label.strip():
        raise _Reject(131009, _length_details("Display text", 20))
    url = _check_str(parameters.get("url"), "interactive['action']['parameters']['url']", 2000,
                     code=131009, details="Parameter url is too long.")
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url, re.IGNORECASE):
        raise _Reject(131009, f"Param interactive['action']['parameters']['url'] must be an "
                              f"http(s) URL, got {url!r}.")


def _validate_template(template: dict[str, Any], emulator: CloudAPIEmulator) -> None:
    name = _check_str(template.get("name"), "template['name']", 512)
    language = _obj(template.get("language"), "template['language']")
    code = _check_str(language.get("code"), "template['language']['code']", 16)
    if emulator.templates and (name, code) not in emulator.templates:
        raise _Reject(132001, f"template name ({name}) does not exist in {code}")
    components = template.get("components", [])
    if not isinstance(components, list):
        raise _Reject(100, "Param template['components'] must be an array.")
    for n, component in enumerate(components):
        where = f"template['components'][{n}]"
        component = _obj(component, where)
        kind = component.get("type")
        if kind not in ("header", "body", "footer", "button", "carousel", "limited_time_offer"):
            raise _Reject(100, f"Param {where}['type'] is not a valid component type.")
        if kind == "button" and ("sub_type" not in component or "index" not in component):
            raise _Reject(100, f"Param {where} needs 'sub_type' and 'index'.")
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            raise _Reject(100, f"Param {where}['parameters'] must be an array.")
        for p, parameter in enumerate(parameters):
            parameter = _obj(parameter, f"{where}['parameters'][{p}]")
            if not isinstance(parameter.get("type"), str):
                raise _Reject(100, f"Param {where}['parameters'][{p}]['type'] is required.")
