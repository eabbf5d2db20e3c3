"""Run an ASGI app with uvicorn as a background task on the *current* event loop, and the
request limits every wa_agent server applies.

Safe inside Jupyter: no signal handlers are installed (the kernel's interrupt button keeps
working and never stops the server), the socket is bound here so a port clash raises a
plain :class:`OSError` in the caller, and uvicorn's ``sys.exit()`` on a failed startup is
turned into a :class:`RuntimeError` instead of killing the kernel.

:class:`ServerLimits` caps what one request may cost before the app sees it, whatever
HTTP parser uvicorn uses: with ``httptools`` (the ``fast`` extra) uvicorn itself caps
neither the size of the request line and headers nor the time a client may take to send
them or the body. :func:`uvicorn_options` turns the limits into uvicorn settings (a
protocol class that enforces them); :class:`BackgroundServer`,
:meth:`~wa_agent.InterfaceManager.serve`/``start()`` and ``wa-agent serve`` apply them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import uvicorn

__all__ = [
    "DEFAULT_LIMITS",
    "BackgroundServer",
    "ServerLimits",
    "ServerStartError",
    "uvicorn_options",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one HTTP request may cost the server before the app gets it.

    * ``max_header_bytes``: the request line (with the URL) and headers together, in bytes
      (default 64 KiB; Meta's webhooks carry about 1 KiB). Over it the client gets ``431``
      and the connection is closed, before the server has buffered more than that.
    * ``head_timeout``: seconds a client may take to send a request line and headers, from
      the connection (or the request's first byte) on (default 10). Then ``408``, closed.
    * ``body_timeout``: seconds a client may take to send the body once the headers are in
      (default 30: Meta's largest webhook, 3 MB, at 100 kB/s). Then ``408`` (unless the app
      answered already) and the connection is closed; the app sees a disconnect.

    The body's size is the app's to cap (:class:`~wa_agent.asgi.WebhookApp`: 3 MB).
    """

    max_header_bytes: int = 64 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024:
            raise ValueError(
                f"max_header_bytes must be at least 1024, got {self.max_header_bytes!r}"
            )
        for name in ("head_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")


#: The limits wa_agent's servers apply unless told otherwise.
DEFAULT_LIMITS = ServerLimits()


def _reject(status: int) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    body = f"{phrase}\n".encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def _limited(base: type[Any], limits: ServerLimits) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's httptools or h11 protocol) with ``limits`` enforced.

    The parser is handed at most ``max_header_bytes`` of a request's head (httptools would
    otherwise buffer a header of any size): if the head has not ended by then, the request
    gets 431. One timer per connection runs while a head or a body is incomplete. A request
    whose headers are complete shows up as a new ``cycle``; its body is complete when
    ``cycle.more_body`` turns false (both protocols keep that state).
    """

    class Limited(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._wa_head_bytes = 0
            self._wa_timer: asyncio.TimerHandle | None = None
            self._wa_arm(limits.head_timeout, 408)  # a connection that never sends a head

        def connection_lost(self, exc: Exception | None) -> None:
            self._wa_cancel()
            super().connection_lost(exc)

        def _wa_arm(self, seconds: float, status: int) -> None:
            self._wa_cancel()
            self._wa_timer = self.loop.call_later(seconds, self._wa_timed_out, status)

        def _wa_cancel(self) -> None:
            timer = getattr(self, "_wa_timer", None)
            if timer is not None:
                timer.cancel()
                self._wa_timer = None

        def _wa_close(self, status: int) -> None:
            """Answer ``status`` unless a response already started, then close."""
            self._wa_cancel()
            cycle = self.cycle
            if not self.transport.is_closing():
                if cycle is None or cycle.response_complete or not cycle.response_started:
                    if cycle is not None:
                        cycle.response_started = cycle.response_complete = True
                        cycle.keep_alive = False
                    self.transport.write(_reject(status))
                self.transport.close()

        def _wa_timed_out(self, status: int) -> None:
            self._wa_timer = None
            what = "headers" if self._wa_in_head() else "body"
            logger.info(
                "closing a connection from %s: its request %s took longer than %g s",
                _peer(self.client),
                what,
                limits.head_timeout if what == "headers" else limits.body_timeout,
            )
            self._wa_close(status)

        def _wa_in_head(self) -> bool:
            cycle = self.cycle
            return cycle is None or not cycle.more_body

        def data_received(self, data: bytes) -> None:
            while True:
                cycle = self.cycle
                in_head = cycle is None or not cycle.more_body
                rest = b""
                if in_head:
                    # Hand the parser no more head than allowed; a read that also carries
                    # the start of the body goes on once the head has ended.
                    room = limits.max_header_bytes - self._wa_head_bytes
                    if len(data) > room:
                        data, rest = data[:room], data[room:]
                    self._wa_head_bytes += len(data)
                super().data_received(data)
                # Timers only for what is still incomplete after this read: a request that
                # arrives in one read (the usual webhook) costs no timer at all.
                current = self.cycle
                if current is not cycle and current is not None:  # a request's headers are in
                    self._wa_head_bytes = 0
                    if current.more_body and not self.transport.is_closing():
                        self._wa_arm(limits.body_timeout, 408)
                    elif self._wa_timer is not None:
                        self._wa_cancel()
                elif in_head and rest:  # the allowance is used up and the head goes on
                    logger.info(
                        "refusing a request from %s: request line and headers over %d bytes",
                        _peer(self.client),
                        limits.max_header_bytes,
                    )
                    self._wa_close(431)
                    return
                elif in_head:  # a head still incomplete: it has head_timeout from now on
                    if self._wa_timer is None and not self.transport.is_closing():
                        self._wa_arm(limits.head_timeout, 408)
                elif cycle is not None and not cycle.more_body:  # the body is complete
                    self._wa_cancel()
                if not rest or self.transport.is_closing():
                    return
                data = rest

    Limited.__name__ = Limited.__qualname__ = f"Limited{base.__name__}"
    return Limited


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def uvicorn_options(limits: ServerLimits | None, http: Any = "auto") -> dict[str, Any]:
    """uvicorn settings (``http``, ``h11_max_incomplete_event_size``) that enforce
    ``limits`` on the parser ``http`` names (``"auto"``: httptools when installed, else
    h11, as uvicorn picks; or a protocol class). ``None``: no limits (uvicorn's own
    behaviour). Another protocol (e.g. HTTP/2) is left unlimited, with a warning."""
    if limits is None:
        return {"http": http}
    from uvicorn.protocols.http.h11_impl import H11Protocol

    base: Any = http
    if http == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            base = "h11"
        else:
            base = "httptools"
    if base == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    elif base == "h11":
        base = H11Protocol
    options: dict[str, Any] = {"h11_max_incomplete_event_size": limits.max_header_bytes}
    if isinstance(base, type) and _supported(base):
        options["http"] = _limited(base, limits)
    else:
        logger.warning(
            "server limits are not applied with http=%r (only uvicorn's "
            "httptools and h11 protocols are supported)",
            http,
        )
        options["http"] = http
    return options


def _supported(protocol: type[Any]) -> bool:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed
        return issubclass(protocol, H11Protocol)
    return issubclass(protocol, H11Protocol | HttpToolsProtocol)


class ServerStartError(RuntimeError):
    """The server could not start (startup hook failed, port taken, ...)."""


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (notebook, test, CLI)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    _wake: asyncio.Event | None = None

    def request_exit(self) -> None:
        """Ask the server to stop now (rather than at its next 0.1 s tick)."""
        self.should_exit = True
        if self._wake is not None:
            self._wake.set()

    async def main_loop(self) -> None:
        # uvicorn's loop polls should_exit every 0.1 s; waiting on an event as well lets
        # stop() begin the shutdown at once (tests and notebooks stop servers often).
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY: otherwise every keep-alive request
    # after the first waits ~40 ms for delayed ACKs (uvicorn writes headers and body apart).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port}: {exc.strerror} "
            "(is another server using this port? pass port=0 for a free one)",
        ) from exc
    return sock


class BackgroundServer:
    """One uvicorn server running as an asyncio task.

    ``await start()`` returns once the server is listening (``port`` then holds the real
    port, useful with ``port=0``); ``await stop()`` closes the listener, lets in-flight
    requests finish, runs the lifespan shutdown and frees the port. ``limits`` (default
    :class:`ServerLimits`; ``None`` for none) caps each request's head and the time to
    send it and its body; other keywords go to ``uvicorn.Config``.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        lifespan: str = "on",
        limits: ServerLimits | None = DEFAULT_LIMITS,
        **config: Any,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits
        config.update(uvicorn_options(limits, config.pop("http", "auto")))
        self._config = dict(log_level=log_level, lifespan=lifespan, **config)
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the server (``0.0.0.0`` shown as ``127.0.0.1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self, timeout: float = 30.0) -> None:
        """Bind, start uvicorn as a task and return once it listens (and its lifespan
        startup finished). Raises :class:`OSError` if the port is taken and
        :class:`ServerStartError` if startup fails or takes longer than ``timeout``."""
        if self.running:
            raise RuntimeError("server already running; stop() it first")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, interface="asgi3", access_log=False, **self._config)
        server = _QuietServer(config)
        self._server = server

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            except SystemExit as exc:
                raise ServerStartError(f"uvicorn startup failed (exit code {exc.code})") from None
            finally:
                sock.close()

        self._task = asyncio.get_running_loop().create_task(serve(), name="wa_agent-server")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not server.started:
            if self._task.done():
                exc = self._task.exception()
                self._task = None
                if exc is not None:
                    raise exc
                raise ServerStartError("server stopped during startup (see the log above)")
            if loop.time() > deadline:
                await self.stop()
                raise ServerStartError(f"server did not start within {timeout} s")
            await asyncio.sleep(0.005)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, let in-flight requests finish (forced after ``timeout``),
        run the lifespan shutdown and free the port. Safe to call twice."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.request_exit()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            server.force_exit = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
        finally:
            self._server = None
            self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
