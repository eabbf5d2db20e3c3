"""The webhook HTTP contract as a tiny hand-written ASGI app (no framework).

Routes, relative to wherever the app is mounted:

* ``GET  /webhook`` — Meta's verification handshake.
* ``POST /webhook`` — signed event notifications, handed to a :class:`WebhookConsumer`.
* ``GET  /health``  — live counters as JSON.

Status codes and bodies (SPEC §3): challenge echoed as ``text/plain`` or ``403``; ``500``
when no verify token is configured; ``403`` for a missing/invalid signature when an app
secret is set; ``413`` over the body cap (checked from ``Content-Length`` and again while
streaming); ``200 {"status": "invalid_payload"}`` for a non-WhatsApp body (a 4xx would make
Meta retry for 7 days); ``200 {"status": "ignored"}`` or ``200 {"status": "processing"}``
once the consumer has durably recorded the messages; ``500`` when it could not
(:class:`~wa_agent.StoreError`, so Meta redelivers); ``503`` when it is overloaded.

The app never raises out of its ASGI callable: an unexpected error is logged and answered
with ``500``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, final
from urllib.parse import parse_qs

from ._asgi_types import Receive, Scope, Send
from .events import Event, Message
from .exceptions import InvalidPayload, StoreError
from .parser import MessageParser
from .secret import Secret
from .signature import SignatureVerifier

__all__ = [
    "DEFAULT_MAX_BODY",
    "CallbackConsumer",
    "Overloaded",
    "RedactVerifyToken",
    "WebhookApp",
    "WebhookConsumer",
]

logger = logging.getLogger(__name__)


#: Meta's documented maximum webhook payload.
DEFAULT_MAX_BODY = 3 * 1024 * 1024


class Overloaded(Exception):  # a signal, not an error (hence no "Error" suffix)
    """Raised by a consumer that cannot even record the message now (answered ``503``)."""


class WebhookConsumer(Protocol):
    """What the webhook app hands verified bodies and parsed events to.

    Each signed body is first offered raw to :meth:`accept_body`, the consumer's fast path
    for the bodies it sees most; when that returns ``None`` the app parses the body and
    calls :meth:`accept` with the events.
    """

    async def accept_body(self, body: bytes) -> str | None:
        """Handle ``body`` completely (exactly as :meth:`accept` would after the parse) and
        return its status, or return ``None`` having done nothing. Raises what
        :meth:`accept` raises. A consumer without a fast path returns ``None``."""
        ...

    async def accept(self, events: list[Event]) -> str:
        """Durably record what needs processing and schedule it; return ``"processing"``
        if at least one message was accepted, else ``"ignored"``. Must not wait for the
        agent. Raise :class:`~wa_agent.StoreError` if recording failed, :class:`Overloaded`
        if it cannot take the messages now."""
        ...

    def health(self) -> dict[str, Any]:
        """Counters and state for ``GET /health``."""
        ...


class CallbackConsumer:
    """A minimal consumer: calls ``callback(message)`` for every new message in a
    background task (deduplicated by wamid in memory). Useful for tests and quick hacks;
    :class:`~wa_agent.WhatsAppInterface` is the durable one."""

    def __init__(
        self, callback: Callable[[Message], Awaitable[Any]], name: str = "webhook"
    ) -> None:
        self._callback = callback
        self._seen: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.name = name
        self.received = 0
        self.processed = 0
        self.duplicates = 0
        self.failures = 0

    async def accept_body(self, body: bytes) -> str | None:
        """No fast path: every body is parsed and given to :meth:`accept`."""
        return None

    async def accept(self, events: list[Event]) -> str:
        """Start ``callback`` for each message not seen before; ``"processing"`` if
        any was new, else ``"ignored"``."""
        status = "ignored"
        for event in events:
            if not isinstance(event, Message):
                continue
            if event.id in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(event.id)
            self.received += 1
            status = "processing"
            task = asyncio.get_running_loop().create_task(self._run(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return status

    async def _run(self, message: Message) -> None:
        try:
            await self._callback(message)
            self.processed += 1
        except Exception:
            self.failures += 1
            logger.exception("webhook callback failed for message %s", message.id)

    async def drain(self) -> None:
        """Wait for every callback started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """Counters for ``GET /health``."""
        return {
            "status": "ok",
            "interface": self.name,
            "received": self.received,
            "processed": self.processed,
            "in_flight": len(self._tasks),
            "duplicates": self.duplicates,
            "send_failures": self.failures,
        }


def _json_body(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


_JSON = [(b"content-type", b"application/json")]
# nosniff: the echoed hub.challenge must never be rendered as HTML by a browser
_TEXT = [(b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff")]
_PROCESSING = b'{"status":"processing"}'
_IGNORED = b'{"status":"ignored"}'
_INVALID = b'{"status":"invalid_payload"}'


class _TooLarge(Exception):
    pass


_VERIFY_TOKEN_IN_QUERY = re.compile(r"(hub(?:\.|%2[eE])verify_token=)[^&\s\"]*")


class RedactVerifyToken(logging.Filter):
    """Masks ``hub.verify_token=...`` in log records: Meta sends the verify token in the
    query string of the handshake, and uvicorn's access log prints whole paths at INFO.
    Installed on the ``uvicorn.access`` logger by every :class:`WebhookApp` with a verify
    token; add it to other servers' access loggers the same way."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask ``hub.verify_token`` values in the record's arguments; never drops it."""
        args = record.args
        if isinstance(args, tuple) and any(
            isinstance(a, str) and "verify_token" in a for a in args
        ):
            record.args = tuple(
                _VERIFY_TOKEN_IN_QUERY.sub(r"\1**********", a) if isinstance(a, str) else a
                for a in args
            )
        elif isinstance(record.msg, str) and "verify_token" in record.msg:
            record.msg = _VERIFY_TOKEN_IN_QUERY.sub(r"\1**********", record.msg)
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactVerifyToken) for f in access.filters):
        access.addFilter(RedactVerifyToken())


class _Disconnected(Exception):
    """The client went away before the whole body arrived."""


class _StoreFailures:
    """Logs store failures on the webhook path without drowning the log: one ERROR line per
    failure (exception type and a short message; the traceback only at DEBUG), a WARNING
    summary once ``period`` seconds of failures have passed ("N store failures in the last
    60 s"), and one INFO line when a webhook is recorded again."""

    def __init__(self, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self.total = 0  # since the process started
        self._window = 0  # failures since the last summary (or the first failure)
        self._since: float | None = None  # when that window began; None: no failure pending
        self._unresolved = 0  # failures since the last recorded webhook

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.total += 1
        self._unresolved += 1
        if self._since is None:
            self._since = now
        self._window += 1
        message = " ".join(str(exc).split())
        if len(message) > 200:
            message = message[:197] + "..."
        logger.error(
            "could not record a webhook (%s: %s); answered 500 so Meta redelivers it",
            type(exc).__name__,
            message,
        )
        logger.debug("store failure on the webhook path", exc_info=exc)
        if now - self._since >= self.period:
            logger.warning(
                "%d store failures in the last %.0f s (%d since start); webhooks "
                "are answered 500 and redelivered by Meta",
                self._window,
                now - self._since,
                self.total,
            )
            self._since, self._window = now, 0

    @property
    def pending(self) -> bool:
        """Whether failures happened since the last webhook that was recorded."""
        return self._unresolved > 0

    def recovered(self) -> None:
        logger.info("recording webhooks again after %d store failure(s)", self._unresolved)
        self._unresolved = 0
        self._since, self._window = None, 0


@final
class WebhookApp:
    """ASGI app serving one interface's webhook (see the module docstring).

    ``verify_token`` answers the GET handshake; ``app_secret`` (recommended) makes every
    POST carry a valid signature; without one, a warning is logged once, at start-up or on
    the first request (``warn_unsigned=False`` for a host that warns itself). ``max_body``
    caps the body, enforced from ``Content-Length`` and again while streaming.
    ``consumer`` receives the parsed events. ``on_startup`` /
    ``on_shutdown`` run on ASGI lifespan; ``on_first_request`` runs once before the first
    request is handled (for apps mounted where lifespan does not reach, e.g. a sub-mount in
    Starlette/FastAPI).
    """

    def __init__(
        self,
        consumer: WebhookConsumer,
        *,
        verify_token: str | Secret | None = None,
        app_secret: str | Secret | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        parser: MessageParser | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        on_first_request: Callable[[], Awaitable[None]] | None = None,
        warn_unsigned: bool = True,
    ) -> None:
        missing = [
            name
            for name in ("accept_body", "accept", "health")
            if not callable(getattr(consumer, name, None))
        ]
        if missing:
            raise TypeError(
                f"{type(consumer).__name__} is not a WebhookConsumer: it has no "
                f"{', '.join(missing)} (see WebhookConsumer; a consumer without a fast path "
                "defines `async def accept_body(self, body): return None`)"
            )
        self.consumer = consumer
        self._verify_token = Secret(verify_token) if verify_token else None
        self._verifier = SignatureVerifier(app_secret) if app_secret else None
        self._warn_unsigned = warn_unsigned and self._verifier is None
        if self._verify_token is not None:
            _redact_access_log()
        self.max_body = max_body
        self.parser = parser or MessageParser()
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._on_first_request = on_first_request
        self._ready: asyncio.Future[None] | None = None
        self._store_failures = _StoreFailures()

    @property
    def store_failures(self) -> int:
        """Webhooks answered ``500`` because the consumer could not record them
        (:class:`~wa_agent.StoreError`), since the app was created."""
        return self._store_failures.total

    @property
    def signature_required(self) -> bool:
        """Whether POSTs must carry a valid ``X-Hub-Signature-256`` (an app secret is set)."""
        return self._verifier is not None

    def _warn_once(self) -> None:
        self._warn_unsigned = False
        logger.warning(
            "webhook app has NO app secret: signatures are not verified and anyone who "
            "finds the URL can post fake messages. Set WHATSAPP_APP_SECRET (app_secret=)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._warn_unsigned:
            self._warn_once()
        if kind == "http":
            try:  # routing inline: one coroutine less on every webhook
                path: str = scope.get("path", "")
                root = scope.get("root_path", "")
                if root and path.startswith(root):
                    path = path[len(root) :]
                if path == "/webhook" and scope.get("method") == "POST":
                    await self._post(scope, receive, send)
                else:
                    await self._http(path, scope, receive, send)
            except Exception:
                logger.exception(
                    "unexpected error handling %s %s", scope.get("method"), scope.get("path")
                )
                try:
                    await _respond(send, 500, b'{"status":"error"}', _JSON)
                except Exception:  # response already started or client gone
                    logger.debug("could not send the 500 response", exc_info=True)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    logger.exception("webhook app startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    if self._on_shutdown is not None:
                        await self._on_shutdown()
                except Exception as exc:
                    logger.exception("webhook app shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ensure_ready(self) -> None:
        if self._on_first_request is None:
            return
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self._on_first_request()
            except BaseException as exc:
                self._ready.set_exception(exc)
                self._ready.exception()  # mark retrieved
                self._ready = None
                raise
            self._ready.set_result(None)
        elif not self._ready.done():
            await asyncio.shield(self._ready)

    async def _http(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request but ``POST /webhook`` (``path`` is relative to the mount)."""
        path = path.rstrip("/") or "/"
        method = scope.get("method", "GET")
        if path == "/webhook":
            if method == "POST":
                await self._post(scope, receive, send)
            elif method in ("GET", "HEAD"):
                await self._verify(scope, send)
            else:
                await _respond(send, 405, b"method not allowed", _TEXT + [(b"allow", b"GET, POST")])
        elif path == "/health":
            if method in ("GET", "HEAD"):
                await _respond(send, 200, _json_body(self.consumer.health()), _JSON)
            else:
                await _respond(send, 405, b"method not allowed", _TEXT + [(b"allow", b"GET")])
        else:
            await _respond(send, 404, b"not found", _TEXT)

    async def _verify(self, scope: Scope, send: Send) -> None:
        if self._verify_token is None:
            await _respond(
                send,
                500,
                b"no verify token configured: set WHATSAPP_VERIFY_TOKEN (or verify_token=) "
                b"to the string you entered in Meta's dashboard",
                _TEXT,
            )
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        mode = query.get("hub.mode", [""])[0]
        token = query.get("hub.verify_token", [""])[0]
        challenge = query.get("hub.challenge", [""])[0]
        expected = self._verify_token.reveal().encode()
        token_ok = hmac.compare_digest(expected, token.encode())
        if mode != "subscribe" or not token_ok:
            logger.warning(
                "webhook verification refused (mode=%r, token %s)",
                mode,
                "matched" if token_ok else "did not match",
            )
            await _respond(send, 403, b"verification failed", _TEXT)
            return
        logger.info("webhook verified by Meta")
        await _respond(send, 200, challenge.encode(), _TEXT)

    async def _read_body(self, receive: Receive, declared: int) -> bytes:
        """The whole request body (``declared`` is its ``Content-Length``, or -1)."""
        if declared > self.max_body:
            raise _TooLarge
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the common case: one chunk
            if len(body) > self.max_body:
                raise _TooLarge
            return body
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise _Disconnected  # never process a partial body
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    raise _TooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        return b"".join(chunks)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = -1
        header = None
        for name, value in scope.get("headers", ()):  # one pass for both headers
            if name == b"content-length":
                try:  # repeated: the largest decides
                    declared = max(declared, int(value))
                except ValueError:
                    pass
            elif name == b"x-hub-signature-256" and header is None:
                header = value
        try:
            body = await self._read_body(receive, declared)
        except _TooLarge:
            await _respond(send, 413, b'{"status":"too_large"}', _JSON)
            return
        except _Disconnected:
            logger.info("client disconnected before the whole webhook body arrived")
            return
        if self._verifier is not None and not self._verifier.is_valid(body, header):
            logger.warning(
                "webhook refused: %s X-Hub-Signature-256",
                "missing" if header is None else "invalid",
            )
            await _respond(send, 403, b'{"status":"invalid_signature"}', _JSON)
            return
        try:
            ready = self._ready
            if self._on_first_request is not None and (ready is None or not ready.done()):
                await self._ensure_ready()
            # The consumer's fast path for the common body (WhatsAppInterface: one new
            # text message), tried before the full parse.
            status = await self.consumer.accept_body(body)
            if status is None:
                try:
                    events = self.parser.parse(body)
                except InvalidPayload as exc:
                    logger.warning("webhook body is not a WhatsApp payload: %s", exc.reason)
                    await _respond(send, 200, _INVALID, _JSON)
                    return
                status = await self.consumer.accept(events)
        except StoreError as exc:
            self._store_failures.failed(exc)
            await _respond(send, 500, b'{"status":"store_error"}', _JSON)
            return
        except Overloaded:
            logger.warning("overloaded: answering 503 so Meta retries later")
            await _respond(send, 503, b'{"status":"overloaded"}', _JSON)
            return
        if self._store_failures.pending:
            self._store_failures.recovered()
        # The two common answers, headers built once (fresh messages and header lists per
        # request: a middleware may edit them in place).
        body, headers = _ACK_PROCESSING if status == "processing" else _ACK_IGNORED
        await send({"type": "http.response.start", "status": 200, "headers": headers[:]})
        await send({"type": "http.response.body", "body": body})


def _fixed_response(body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    return body, [*_JSON, (b"content-length", str(len(body)).encode())]


_ACK_PROCESSING = _fixed_response(_PROCESSING)
_ACK_IGNORED = _fixed_response(_IGNORED)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
