"""A lean HTTP/1.1 transport for httpx over asyncio streams.

:class:`FastTransport` replaces httpcore under an :class:`httpx.AsyncClient` for the
:class:`~wa_agent.sender.Sender`'s Graph calls: httpx keeps URL handling, headers, redirects
and its response API; this module only opens connections (TLS by asyncio with one
``ssl.SSLContext`` per transport), keeps them alive per origin, writes HTTP/1.1 requests and
parses responses (Content-Length, chunked and close-delimited bodies). Per request it costs
a fraction of httpcore's CPU, which is what the reply path spends most of its time on.

Not supported (use httpx's default transport): proxies, HTTP/2, ``Expect: 100-continue``,
other event loops than asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final, NoReturn

import httpx

__all__ = ["FastTransport", "choose_transport", "configured_proxies", "unlink_response"]

logger = logging.getLogger(__name__)

# (transport, reason) pairs already logged by choose_transport in this process.
_choices_logged: set[tuple[str, str]] = set()

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_EAGER_BODY: Final = 64 * 1024  # Content-Length bodies up to this are read before returning
_CHUNK: Final = 64 * 1024
_STREAM_LIMIT: Final = 256 * 1024  # longest status line + headers / chunk-size line
_NO_BODY_STATUS: Final = frozenset({204, 304})

Origin = tuple[str, str, int]


def _buffered(reader: asyncio.StreamReader) -> bytes | bytearray:
    """What ``reader`` has received and not handed out yet (asyncio has no public peek)."""
    buffer: bytes | bytearray = getattr(reader, "_buffer", b"")
    return buffer


class _Connection:
    """One open HTTP/1.1 connection and its pool bookkeeping."""

    __slots__ = ("idle_since", "origin", "reader", "requests", "writer")

    def __init__(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.requests = 0

    def usable(self) -> bool:
        """Whether an idle connection still looks open (no EOF, no stray bytes)."""
        if self.writer.transport.is_closing() or self.reader.at_eof():
            return False
        # Bytes waiting on an idle connection are not ours to parse: drop it.
        return not _buffered(self.reader)

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # event loop already closed
            pass


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before any response byte."""


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    value = request.extensions.get("timeout")
    return value if isinstance(value, dict) else {}


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams with a keep-alive pool, for :class:`httpx.AsyncClient`.

    ``max_connections`` bounds the open connections over all origins (a request waits for
    one up to the ``pool`` timeout, then raises :class:`httpx.PoolTimeout`);
    ``keepalive_expiry`` closes connections idle longer than that many seconds. ``verify``
    is ``True`` (the CAs httpx trusts by default: ``SSL_CERT_FILE``/``SSL_CERT_DIR`` or
    certifi's bundle), a CA bundle path, an :class:`ssl.SSLContext`, or ``False`` (no
    certificate checks; tests only). The SSL context is built once, on the first ``https``
    request (loading certificates is the expensive part of a new client).

    Timeouts come from the request's ``timeout`` extension (httpx sets it) and raise
    :class:`httpx.ConnectTimeout`, :class:`httpx.ReadTimeout`, :class:`httpx.WriteTimeout`
    or :class:`httpx.PoolTimeout`. A reused connection that the server closed while idle
    (reset or EOF before any response byte) is retried once on a new connection. Response
    bodies stream; a response closed before its body was read to the end closes its
    connection instead of returning it to the pool.
    """

    def __init__(
        self,
        *,
        max_connections: int = 8,
        keepalive_expiry: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) else None
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._count = 0  # open connections, idle or busy (and connects in progress)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._active: set[_Connection] = set()
        self._closed = False
        self.connections_opened = 0  # for tests and diagnostics

    def __repr__(self) -> str:
        return (
            f"FastTransport(max_connections={self.max_connections}, open={self._count}, "
            f"idle={sum(len(q) for q in self._idle.values())})"
        )

    # ------------------------------------------------------------------ pool

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self._verify, str):
                ctx = ssl.create_default_context(cafile=self._verify)
            else:
                # The CAs httpx's own transport trusts: SSL_CERT_FILE / SSL_CERT_DIR, else
                # certifi's bundle (ssl.create_default_context underneath).
                ctx = httpx.create_ssl_context(verify=self._verify)
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def _take_idle(self, origin: Origin) -> _Connection | None:
        queue = self._idle.get(origin)
        if not queue:
            return None
        now = time.monotonic()
        while queue:
            conn = queue.pop()  # most recently used first: the likeliest to be alive
            if conn.usable() and now - conn.idle_since < self.keepalive_expiry:
                return conn
            self._discard(conn)
        return None

    def _evict_one(self) -> bool:
        """Close the oldest idle connection of any origin to make room; whether one was."""
        oldest: _Connection | None = None
        for queue in self._idle.values():
            if queue and (oldest is None or queue[0].idle_since < oldest.idle_since):
                oldest = queue[0]
        if oldest is None:
            return False
        self._idle[oldest.origin].popleft()
        self._discard(oldest)
        return True

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._count -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _acquire(
        self, origin: Origin, timeouts: dict[str, float | None], request: httpx.Request
    ) -> _Connection | None:
        """An idle connection to reuse, or None after reserving a slot for a new one."""
        deadline: float | None = None
        while True:
            if self._closed:
                raise RuntimeError("this FastTransport is closed")
            conn = self._take_idle(origin)
            if conn is not None:
                return conn
            if self._count < self.max_connections or self._evict_one():
                self._count += 1
                return None
            if deadline is None:
                pool = timeouts.get("pool")
                deadline = float("inf") if pool is None else time.monotonic() + pool
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.PoolTimeout("no connection free in the pool", request=request)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                if remaining == float("inf"):
                    await waiter
                else:
                    async with asyncio.timeout(remaining):
                        await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free in the pool", request=request) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the wake-up on
                raise

    async def _connect(
        self, origin: Origin, timeouts: dict[str, float | None], request: httpx.Request
    ) -> _Connection:
        """Open a connection in the slot :meth:`_acquire` reserved (freed on failure)."""
        scheme, host, port = origin
        try:
            ssl_ctx = self._ssl_context() if scheme == "https" else None
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=ssl_ctx,
                    server_hostname=host if ssl_ctx else None,
                    limit=_STREAM_LIMIT,
                )
        except BaseException as exc:
            self._count -= 1
            self._wake()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(
                    f"connecting to {host}:{port} timed out", request=request
                ) from None
            if isinstance(exc, OSError | ssl.SSLError):
                raise httpx.ConnectError(
                    f"cannot connect to {host}:{port}: {exc}", request=request
                ) from exc
            raise
        self.connections_opened += 1
        return _Connection(origin, reader, writer)

    def _release(self, conn: _Connection, reusable: bool) -> None:
        self._active.discard(conn)
        if reusable and not self._closed and conn.usable():
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, deque()).append(conn)
            self._wake()
        else:
            self._discard(conn)

    # ------------------------------------------------------------- requests

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled connection and return the streaming response."""
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"FastTransport supports http and https URLs, not {scheme!r}", request=request
            )
        if not url.host:
            raise httpx.UnsupportedProtocol("the request URL has no host", request=request)
        origin: Origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = _timeouts(request)
        payload = await _request_bytes(request)
        conn = await self._acquire(origin, timeouts, request)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(origin, timeouts, request)
        retried = False
        while True:
            self._active.add(conn)
            try:
                return await self._exchange(conn, request, payload, timeouts, reused)
            except _Stale:
                self._release(conn, False)
                if retried:
                    raise httpx.RemoteProtocolError(
                        "the server disconnected without sending a response", request=request
                    ) from None
                retried = True
                logger.debug(
                    "keep-alive connection to %s:%s was closed by the server; "
                    "retrying once on a new one",
                    origin[1],
                    origin[2],
                )
                # The server likely dropped its other idle connections to us as well.
                for idle in self._idle.pop(origin, ()):
                    self._discard(idle)
                conn = await self._acquire(origin, timeouts, request)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(origin, timeouts, request)
            except BaseException:
                self._release(conn, False)
                raise

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        payload: list[bytes],
        timeouts: dict[str, float | None],
        reused: bool,
    ) -> httpx.Response:
        """Write the request on ``conn`` and read the response head; a small
        Content-Length body is read too, any other body is streamed by the response.
        Raises :class:`_Stale` when a reused connection turns out to be closed."""
        conn.requests += 1
        writer = conn.writer
        try:
            writer.writelines(payload)
            if writer.transport.get_write_buffer_size():  # not all of it sent at once
                async with asyncio.timeout(timeouts.get("write")):
                    await writer.drain()
            else:  # the usual case: no timer (one per request adds up with thousands)
                await writer.drain()  # at once; raises if the connection was lost
        except OSError as exc:  # TimeoutError included
            _raise_write_error(exc, request, reused)

        read_timeout = timeouts.get("read")
        reader = conn.reader
        first = True
        while True:  # skip 1xx interim responses
            try:
                async with asyncio.timeout(read_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                _raise_head_error(exc, request, first and reused)
            first = False
            status, reason, version, headers = _parse_head(head, request)
            if not 100 <= status < 200 or status == 101:
                break

        mode, length, keep_alive = _framing(headers, version, request)
        extensions = {"http_version": version, "reason_phrase": reason}
        if request.method == "HEAD" or status in _NO_BODY_STATUS or status == 101:
            response = httpx.Response(
                status,
                headers=headers,
                stream=httpx.ByteStream(b""),
                extensions=extensions,
                request=request,
            )
            self._release(conn, keep_alive and status != 101)
            return response
        if mode == "length" and length is not None and length <= _EAGER_BODY:
            try:
                if len(_buffered(reader)) >= length:
                    body = await reader.readexactly(length)  # already here: no timer
                else:
                    async with asyncio.timeout(read_timeout):
                        body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError) as exc:  # TimeoutError included
                _raise_body_error(exc, request)
            response = httpx.Response(
                status,
                headers=headers,
                stream=httpx.ByteStream(body),
                extensions=extensions,
                request=request,
            )
            self._release(conn, keep_alive)  # last: the caller releases it on errors
            return response
        if mode == "eof":
            keep_alive = False  # the body runs to the end of the connection
        stream = _ResponseStream(self, conn, request, mode, length, keep_alive, read_timeout)
        return httpx.Response(
            status, headers=headers, stream=stream, extensions=extensions, request=request
        )

    async def aclose(self) -> None:
        """Close every connection, pooled or busy (a response still being read then fails
        with :class:`httpx.ReadError`), and wait until their sockets are closed."""
        self._closed = True
        conns = [conn for queue in self._idle.values() for conn in queue]
        self._idle.clear()
        for conn in conns:
            self._discard(conn)
        conns += self._active
        for conn in self._active:
            conn.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if conns:
            await _wait_closed(conns)


async def _wait_closed(conns: list[_Connection]) -> None:
    """Let closed sockets finish closing (a TLS close waits for the peer: at most 1 s)."""
    waits = [asyncio.ensure_future(conn.writer.wait_closed()) for conn in conns]
    _done, pending = await asyncio.wait(waits, timeout=1.0)
    for conn in conns:
        if not conn.writer.transport.is_closing() or pending:
            conn.writer.transport.abort()
    for task in pending:
        task.cancel()
    for task in waits:
        with contextlib.suppress(BaseException):
            await task
    await asyncio.sleep(0)  # abort() closes the socket on the next loop iteration


class _ResponseStream(httpx.AsyncByteStream):
    """The body of one response, read from its connection as it is iterated."""

    def __init__(
        self,
        transport: FastTransport,
        conn: _Connection,
        request: httpx.Request,
        mode: str,
        length: int | None,
        keep_alive: bool,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._request = request
        self._mode = mode
        self._length = length
        self._keep_alive = keep_alive
        self._timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        reader = conn.reader
        request = self._request
        try:
            if self._mode == "length":
                remaining = self._length or 0
                while remaining:
                    async with asyncio.timeout(self._timeout):
                        data = await reader.read(min(remaining, _CHUNK))
                    if not data:
                        raise httpx.RemoteProtocolError(
                            f"the server closed the connection with {remaining} body bytes "
                            "still to come",
                            request=request,
                        )
                    remaining -= len(data)
                    yield data
            elif self._mode == "chunked":
                async for data in self._chunks(reader):
                    yield data
            else:
                while True:
                    async with asyncio.timeout(self._timeout):
                        data = await reader.read(_CHUNK)
                    if not data:
                        break
                    yield data
        except TimeoutError:
            self._finish(False)
            raise httpx.ReadTimeout(
                "reading the response body timed out", request=request
            ) from None
        except (asyncio.IncompleteReadError, OSError) as exc:
            self._finish(False)
            raise httpx.ReadError(
                f"reading the response body failed: {exc}", request=request
            ) from exc
        except asyncio.LimitOverrunError:
            self._finish(False)
            raise httpx.RemoteProtocolError("malformed chunked body", request=request) from None
        except BaseException:
            self._finish(False)
            raise
        self._finish(self._keep_alive)

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        request = self._request
        while True:
            async with asyncio.timeout(self._timeout):
                line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError("invalid chunk size", request=request) from None
            if size == 0:
                while True:  # trailers, up to the empty line
                    async with asyncio.timeout(self._timeout):
                        trailer = await reader.readuntil(b"\r\n")
                    if trailer == b"\r\n":
                        return
            while size:
                async with asyncio.timeout(self._timeout):
                    data = await reader.read(min(size, _CHUNK))
                if not data:
                    raise httpx.RemoteProtocolError(
                        "the server closed the connection inside a chunk", request=request
                    )
                size -= len(data)
                yield data
            async with asyncio.timeout(self._timeout):
                crlf = await reader.readexactly(2)
            if crlf != b"\r\n":
                raise httpx.RemoteProtocolError("malformed chunked body", request=request)

    def _finish(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport._release(conn, reusable)

    async def aclose(self) -> None:
        # Not read to the end: the rest of the body is still on the wire, so the
        # connection cannot carry another request.
        self._finish(False)


async def _request_bytes(request: httpx.Request) -> list[bytes]:
    """The request head and body as a list of byte strings (read once: a stale-connection
    retry resends the same bytes)."""
    target = _target(request.url)
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
            chunked = True
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    parts = [b"".join(lines)]
    stream: Any = request.stream
    if isinstance(stream, httpx.ByteStream):  # in memory (also iterable synchronously)
        body = b"".join(stream)
        if body:
            if chunked:
                parts += (b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n")
            elif len(body) < 16 * 1024:
                parts[0] += body
            else:
                parts.append(body)
        elif chunked:
            parts.append(b"0\r\n\r\n")
        return parts
    async for chunk in stream:
        if not chunk:
            continue
        if chunked:
            parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            parts.append(chunk)
    if chunked:
        parts.append(b"0\r\n\r\n")
    return parts


def _target(url: httpx.URL) -> bytes:
    """The request-target of ``url``: its path and query, never empty."""
    return url.raw_path or b"/"


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(
            f"invalid status line {status_line[:80]!r}", request=request
        )
    version = parts[0]
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else b""
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):  # obsolete line folding: continues the last value
            if not headers:
                raise httpx.RemoteProtocolError("invalid header folding", request=request)
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"invalid header line {line[:80]!r}", request=request)
        headers.append((name, value.strip()))
    return status, reason, version, headers


#: What a read response's stream is replaced with by :func:`unlink_response`.
_DRAINED = httpx.ByteStream(b"")


def _framing(
    headers: list[tuple[bytes, bytes]], version: bytes, request: httpx.Request
) -> tuple[str, int | None, bool]:
    """How the response body is delimited: ``("length", n, ...)``, ``("chunked", None,
    ...)`` or ``("eof", ...)`` (another transfer coding, or no length: the body runs to the
    end of the connection); and whether the connection may be kept alive afterwards."""
    length: int | None = None
    chunked = False
    other_coding = False
    keep_alive = version == b"HTTP/1.1"
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise httpx.RemoteProtocolError("invalid Content-Length", request=request) from None
            if length < 0:
                raise httpx.RemoteProtocolError("invalid Content-Length", request=request)
        elif lname == b"transfer-encoding":
            chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
            other_coding = not chunked  # the body then runs to the end of the connection
        elif lname == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    if request.headers.get("connection", "").lower() == "close":
        keep_alive = False
    if chunked:
        return "chunked", None, keep_alive
    if length is not None and not other_coding:
        return "length", length, keep_alive
    return "eof", length, keep_alive


def _raise_write_error(exc: OSError, request: httpx.Request, reused: bool) -> NoReturn:
    """The httpx error for a failed write (:class:`_Stale` on a reused connection)."""
    if isinstance(exc, TimeoutError):
        raise httpx.WriteTimeout("writing the request timed out", request=request) from None
    if reused:
        raise _Stale() from exc
    raise httpx.WriteError(f"writing the request failed: {exc}", request=request) from exc


def _raise_head_error(exc: Exception, request: httpx.Request, stale_possible: bool) -> NoReturn:
    """The httpx error for a failed read of the response head; :class:`_Stale` when a
    reused connection was closed before the first byte (``stale_possible``)."""
    if isinstance(exc, TimeoutError):
        raise httpx.ReadTimeout("waiting for the response timed out", request=request) from None
    if isinstance(exc, asyncio.IncompleteReadError):
        if stale_possible and not exc.partial:
            raise _Stale() from None
        raise httpx.RemoteProtocolError(
            "the server disconnected without sending a complete response", request=request
        ) from None
    if isinstance(exc, asyncio.LimitOverrunError):
        raise httpx.RemoteProtocolError("response headers are too long", request=request) from None
    if stale_possible and isinstance(exc, ConnectionResetError):
        raise _Stale() from exc
    raise httpx.ReadError(f"reading the response failed: {exc}", request=request) from exc


def _raise_body_error(exc: Exception, request: httpx.Request) -> NoReturn:
    """The httpx error for a failed read of a Content-Length body."""
    if isinstance(exc, TimeoutError):
        raise httpx.ReadTimeout("reading the response body timed out", request=request) from None
    raise httpx.ReadError(
        "the server closed the connection during the body", request=request
    ) from exc


def configured_proxies() -> list[str]:
    """The schemes (``http``, ``https``, ``all``) with a proxy httpx would use (it trusts the
    environment): ``HTTP(S)_PROXY``/``ALL_PROXY``, or the system settings on Windows and
    macOS, as httpx reads them. Only the schemes, never the proxy URLs (they may carry a
    password)."""
    from urllib.request import getproxies

    proxies = getproxies()
    return [scheme for scheme in ("http", "https", "all") if proxies.get(scheme)]


def choose_transport(
    choice: str | httpx.AsyncBaseTransport, *, max_connections: int
) -> httpx.AsyncBaseTransport | None:
    """The transport a Sender's own client sends with (``None``: httpx's default, httpcore).

    ``"auto"`` is :class:`FastTransport` on asyncio, unless a proxy is configured (it does
    not speak to proxies) or the loop is not asyncio; ``"httpx"`` is always httpx's
    transport; a transport instance is used as given. The choice and its reason are logged
    once per process at DEBUG on ``wa_agent._transport``, since a proxy variable switches
    silently otherwise.
    """
    result: httpx.AsyncBaseTransport | None
    if not isinstance(choice, str):
        result, name, reason = choice, type(choice).__name__, "the transport passed in"
    elif choice == "httpx":
        result, name, reason = None, "httpx's transport (httpcore)", "transport='httpx'"
    elif proxies := configured_proxies():
        result, name = None, "httpx's transport (httpcore)"
        reason = (
            f"a proxy is configured for {', '.join(proxies)} (HTTP(S)_PROXY/ALL_PROXY "
            "or the system settings), which FastTransport does not support"
        )
    else:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on asyncio (trio): httpx's transport handles that
            result, name = None, "httpx's transport (httpcore)"
            reason = "not running on an asyncio event loop"
        else:
            result, name = FastTransport(max_connections=max_connections), "FastTransport"
            reason = "transport='auto' on asyncio and no proxy configured"
    if (name, reason) not in _choices_logged:
        _choices_logged.add((name, reason))
        logger.debug("Sender sends through %s: %s", name, reason)
    return result


def unlink_response(response: httpx.Response) -> None:
    """Cut the reference cycle httpx leaves between a response and its stream wrapper (with
    the request, URL and headers hanging off them: 26 objects per call, freed only by the
    garbage collector, whose pauses grow with every agent call in flight). Only for a
    response whose body has been read (``client.request()``/``post()`` read it): reference
    counting then frees it all when the caller lets go."""
    response.stream = _DRAINED
