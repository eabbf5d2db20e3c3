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

The parts, for a maintainer: :class:`CloudAPIEmulator` (here) routes each call, checks the
token, records it and answers sends and read receipts; the checks of message bodies against
Meta's limits are in ``_emulator_validation``, media storage and its endpoints in
``_emulator_media``, injected failures, hangs and the throughput window in
``_emulator_faults``, subscribers and waiters in ``_emulator_notify``, the ASGI request and
response plumbing in ``_emulator_http``, and Meta's error bodies in ``_graph_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, final

from .._asgi_types import Receive, Scope, Send
from ..secret import Secret
from ._emulator_faults import Fault, FaultPlan, Hang, InjectedFault, hang
from ._emulator_http import (
    Request,
    Response,
    describe_form,
    json_object,
    parse_multipart,
    read_request,
    send_response,
)
from ._emulator_media import DOWNLOAD_PATH, MediaStore, StoredMedia
from ._emulator_notify import Notifier
from ._emulator_validation import PHONE_RE, digits, is_read, validate_message
from ._graph_errors import Reject, graph_error, status_for

__all__ = [
    "CloudAPIEmulator",
    "ReadReceipt",
    "RecordedCall",
    "SentMessage",
    "StoredMedia",
    "graph_error",
]

Subscriber = Callable[["SentMessage"], Any]

_VERSION_RE = re.compile(r"v\d+\.\d+")


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
        self._store = MediaStore()  # media by id and its download URLs
        self._faults = FaultPlan()  # failures, hangs and the throughput window still to come
        self._notifier: Notifier[SentMessage] = Notifier()  # subscribers and waiters
        self.phone_number_ids = (
            None if phone_number_ids is None else set(map(str, phone_number_ids))
        )
        self.api_version = api_version
        self.media_url_ttl = media_url_ttl
        #: Every call answered, in order.
        self.calls: list[RecordedCall] = []
        #: Every accepted outbound message, in order.
        self.messages: list[SentMessage] = []
        #: Every accepted mark-as-read / typing-indicator call, in order.
        self.reads: list[ReadReceipt] = []
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

    @property
    def media(self) -> dict[str, StoredMedia]:
        """Media by id (uploads and :meth:`add_media`); deleted media is removed."""
        return self._store.items

    @media.setter
    def media(self, media: dict[str, StoredMedia]) -> None:
        self._store.items = media

    def __repr__(self) -> str:
        return (
            f"CloudAPIEmulator(access_token={self._token!r}, "
            f"messages={len(self.messages)}, calls={len(self.calls)})"
        )

    # ------------------------------------------------------------------ assertions

    def sent_to(self, number: str) -> list[SentMessage]:
        """Accepted messages to ``number`` (``+``, spaces and dashes are ignored)."""
        wanted = digits(number)
        return [m for m in self.messages if m.to == number or (wanted and m.wa_id == wanted)]

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
                await asyncio.wait_for(self._notifier.change_event().wait(), remaining)
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
        self._store.clear()
        self.templates.clear()
        self._notifier.subscribers.clear()
        self._faults.forget_sends()
        self.reset_faults()
        self.media_url_ttl = self._initial_ttl
        self.set_token(self._initial_token)

    # ------------------------------------------------------------------ media and hooks

    def add_media(self, data: bytes, mime_type: str, filename: str | None = None) -> str:
        """Store media (as a user's inbound media) and return its id for a webhook payload."""
        return self._store.add(data, mime_type, filename)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(message)`` (sync or async) for each accepted outbound message.

        Callbacks run in acceptance order on a background task, after the send was answered,
        so a callback may call back into the bot. Returns a function that unsubscribes.
        """
        return self._notifier.subscribe(callback)

    async def drain(self) -> None:
        """Wait until every subscriber callback queued so far has run."""
        await self._notifier.drain()

    async def aclose(self) -> None:
        """Stop the callback task (after running what is queued) and release hung calls."""
        await self._notifier.aclose()

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
        status = status_for(code, http_status)
        self._faults.add(Fault(n, code, status, details, message, retry_after, endpoint, to))

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
        fault = Fault(-1, code, status_for(code, http_status), None, None, None, endpoint, None)
        self._faults.set_rate(p, fault, seed)

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
        self._faults.add_hang(Hang(n, endpoint, accept, seconds))

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
        request = await read_request(scope, receive)
        if request is None:
            await send_response(send, Response(413, graph_error(100, "Request body too large")))
            return
        response = await self._handle(request, receive)
        if response is not None:
            await send_response(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: Request, receive: Receive) -> Response | None:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        endpoint, route = self._route(request)
        body: Any = None
        authorized = self._authorized(request)
        try:
            if route is None:
                raise Reject(100, f"Unknown path components: {request.path}")
            if not authorized:
                raise self._auth_error(request)
            body = self._parse_body(request, endpoint)
            if endpoint == "messages" and is_read(body):
                endpoint = "read"
            pending = self._faults.take_hang(endpoint)
            if pending is not None and not pending.accept:
                self._record(request, endpoint, body, Response(0, None), authorized)
                await hang(pending, receive, self._notifier.closing_event())
                return None
            self._inject_fault(endpoint, body, request)
            response = route(request, body)
            if pending is not None:
                self._record(request, endpoint, body, response, authorized)
                await hang(pending, receive, self._notifier.closing_event())
                return None
        except InjectedFault as fault:
            response = fault.response
        except Reject as exc:
            response = Response(exc.status, graph_error(exc.code, exc.details))
            if exc.code == 190:
                response.headers.append(
                    (b"www-authenticate", b'OAuth "Facebook Platform" "invalid_token"')
                )
        self._record(request, endpoint, body, response, authorized)
        return response

    def _record(
        self, request: Request, endpoint: str, body: Any, response: Response, authorized: bool
    ) -> None:
        shown = response.body
        if response.raw is not None:
            shown = {"size": len(response.raw)} if response.status == 200 else None
        if endpoint == "upload" and isinstance(body, dict):
            body = describe_form(body)
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

    def _route(self, request: Request) -> tuple[str, Callable[[Request, Any], Response] | None]:
        method = request.method
        if request.path.rstrip("/") + "/" == DOWNLOAD_PATH and method == "GET":
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

    def _unknown_object(self, request: Request, body: Any) -> Response:
        raise Reject(
            100,
            f"Unsupported post request. Object with ID '{_object_id(request)}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
        )

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            token = request.query.get("access_token", "")
        return bool(token) and self._token == token and not self._token_expired

    def _auth_error(self, request: Request) -> Reject:
        if self._token_expired:
            return Reject(190, None, 401)
        if "authorization" not in request.headers and "access_token" not in request.query:
            return Reject(190, "An active access token must be used", 401)
        return Reject(190, "Invalid OAuth access token - Cannot parse access token", 401)

    def _parse_body(self, request: Request, endpoint: str) -> Any:
        if endpoint == "messages":
            return json_object(request)
        if endpoint == "upload":
            return parse_multipart(request)
        return None

    def _inject_fault(self, endpoint: str, body: Any, request: Request) -> None:
        """Raise the injected failure for this call, or 130429 over the throughput."""
        self._faults.inject(endpoint, body.get("to") if isinstance(body, dict) else None)
        counted = ("messages", "read") if self.throughput_counts_reads else ("messages",)
        if endpoint in counted and self.throughput is not None:
            self._faults.check_throughput(request.path.strip("/").split("/")[1], self.throughput)

    # ------------------------------------------------------------------ endpoints

    def _messages(self, request: Request, body: Any) -> Response:
        phone_number_id = _object_id(request)
        if body.get("messaging_product") != "whatsapp":
            raise Reject(100, "The parameter messaging_product is required.")
        if is_read(body):
            return self._mark_read(body, phone_number_id)
        message = validate_message(body, self.media, self.templates)
        wamid = "wamid." + secrets.token_urlsafe(33)
        to = body.get("to") if isinstance(body.get("to"), str) else body.get("recipient")
        assert isinstance(to, str)
        wa_id = digits(to) if PHONE_RE.fullmatch(to) else to
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
        self._notifier.publish(sent)
        contact: dict[str, str] = {"input": to}
        if "recipient" in body and "to" not in body:
            contact["user_id"] = to
        else:
            contact["wa_id"] = wa_id
        info: dict[str, str] = {"id": wamid}
        if message == "template":
            info["message_status"] = "accepted"
        return Response(
            200, {"messaging_product": "whatsapp", "contacts": [contact], "messages": [info]}
        )

    def _mark_read(self, body: dict[str, Any], phone_number_id: str) -> Response:
        if body.get("status") != "read":
            raise Reject(100, "Param status must be 'read'")
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise Reject(100, "The parameter message_id is required.")
        if not message_id.startswith("wamid."):
            raise Reject(131009, f"Invalid message_id: {message_id}")
        typing = body.get("typing_indicator")
        if typing is not None and typing != {"type": "text"}:
            raise Reject(100, "Param typing_indicator['type'] must be 'text'")
        self.reads.append(ReadReceipt(message_id, typing is not None, time.time(), phone_number_id))
        self._notifier.changed()
        return Response(200, {"success": True})

    def _upload(self, request: Request, form: Any) -> Response:
        return self._store.upload(form)

    def _media_url(self, request: Request, body: Any) -> Response:
        base = self.media_url_base or request.base_url
        return self._store.lookup(_object_id(request), base=base, ttl=self.media_url_ttl)

    def _delete(self, request: Request, body: Any) -> Response:
        return self._store.delete(_object_id(request))

    def _download(self, request: Request, body: Any) -> Response:
        return self._store.download(request, redirect=self.download_redirect)


def _object_id(request: Request) -> str:
    """The id after the version in ``/{version}/{id}[/...]`` (a number id or a media id)."""
    return request.path.strip("/").split("/")[1]
