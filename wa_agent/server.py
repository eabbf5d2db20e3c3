"""Run an ASGI app with uvicorn as a background task on the *current* event loop.

Safe inside Jupyter: no signal handlers are installed (the kernel's interrupt button keeps
working and never stops the server), the socket is bound here so a port clash raises a
plain :class:`OSError` in the caller, and uvicorn's ``sys.exit()`` on a failed startup is
turned into a :class:`RuntimeError` instead of killing the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any, Self

import uvicorn

__all__ = ["BackgroundServer", "ServerStartError"]


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
            exc.errno, f"cannot listen on {host}:{port}: {exc.strerror} "
            "(is another server using this port? pass port=0 for a free one)"
        ) from exc
    return sock


class BackgroundServer:
    """One uvicorn server running as an asyncio task.

    ``await start()`` returns once the server is listening (``port`` then holds the real
    port, useful with ``port=0``); ``await stop()`` closes the listener, lets in-flight
    requests finish, runs the lifespan shutdown and frees the port.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        lifespan: str = "on",
        **config: Any,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
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
