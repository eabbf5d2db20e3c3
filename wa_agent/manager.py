"""``InterfaceManager``: one ASGI app for several interfaces, and ways to run it.

* ``manager.app`` — every interface under its prefix, with a lifespan that starts and stops
  them (store, Sender, heartbeat). Mount it anywhere or give it to any ASGI server.
* ``manager.serve()`` — blocks in a script; in a notebook (a loop is already running) it
  starts the server in the background on that loop and returns at once.
* ``await manager.start(host, port)`` / ``await manager.stop()`` — background server on the
  current loop (notebooks, tests); a port clash raises ``OSError`` and never kills the
  kernel; stop frees the port.
* ``await manager.atunnel()`` (or ``manager.tunnel()``, which schedules it on a running loop)
  — an ngrok tunnel to the running server, printing the webhook URL and the verify token to
  paste into Meta's dashboard.
* ``manager.widget()`` — a live ipywidgets view of the conversations, with the operator
  controls of human handoff.

Nothing here needs ``nest_asyncio``: in a notebook everything runs as tasks on the kernel's
own loop, and the only blocking work (starting ngrok) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._asgi_types import Receive, Scope, Send
from .exceptions import WAAgentError
from .interface import WhatsAppInterface
from .server import DEFAULT_LIMITS, BackgroundServer, ServerLimits, ServerStartError
from .server import uvicorn_options as _limited_options

if TYPE_CHECKING:
    from ._operator_console import OperatorRouter
    from .tunnel import Tunnel
    from .widget import ConversationLog, ConversationsWidget

__all__ = ["InterfaceManager"]

logger = logging.getLogger(__name__)


#: Generation-1 collections per full collection while tuned (``tune_gc``); CPython's
#: default is 10.
_FULL_COLLECTION_EVERY = 100


class InterfaceManager:
    """Hosts one or more :class:`~wa_agent.WhatsAppInterface` objects in one ASGI app.

    Interfaces are routed by their ``prefix`` (two numbers: two prefixes). ``GET /health``
    at the root lists every interface's health.

    ``tune_gc``: after the interfaces have started (ASGI lifespan startup), collect
    garbage once, ``gc.freeze()`` what is left, and make full collections ten times rarer
    (CPython's third ``gc.set_threshold()`` value, 10 → 100; restored by :meth:`close`).
    With thousands of agents in flight, each full collection walks every object of every
    running agent (plus, unfrozen, the imported libraries' tens of thousands) and holds the
    event loop for tens of milliseconds, and the defaults run one every second or two at
    1 000 webhooks/s: those pauses were the ack latency's tail (p99 at 1 000 webhooks/s
    with 2 s agents: 41–75 ms untuned, 14–24 ms frozen, 4–8 ms with rarer full
    collections too; see BENCHMARKS.md). The rarer collections are safe here because the
    reply path leaves no reference cycles behind (young cycles are still collected by the
    frequent young-generation passes). Frozen objects are still freed when unused; only
    reference cycles among them would stay until ``gc.unfreeze()``. ``None`` (the default)
    tunes when serving for real (``serve()`` in a script, or the app under uvicorn or any
    ASGI server) and not for :meth:`start` (a notebook kernel's process is the user's);
    ``True`` / ``False`` always / never.
    """

    def __init__(
        self, interfaces: Iterable[WhatsAppInterface], *, tune_gc: bool | None = None
    ) -> None:
        self.interfaces = list(interfaces)
        self.tune_gc = tune_gc
        self._gc_threshold: tuple[int, int, int] | None = None  # to restore on close()
        self._background = False  # started by start(): a notebook or a test, not a server
        if not self.interfaces:
            raise ValueError("InterfaceManager needs at least one WhatsAppInterface")
        prefixes = [i.prefix for i in self.interfaces]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"two interfaces share a prefix: {prefixes}; give each its own")
        # Longest prefix first so "/wa/two" wins over "/wa".
        self._routes = sorted(
            ((i.prefix, i) for i in self.interfaces), key=lambda r: len(r[0]), reverse=True
        )
        self._server: BackgroundServer | None = None
        self._tunnel: Tunnel | None = None
        self._log: ConversationLog | None = None
        self._router: OperatorRouter | None = None  # contact -> interface, for the console
        self._serve_task: asyncio.Task[None] | None = None
        self._startup_error: Exception | None = None

    def __repr__(self) -> str:
        return f"InterfaceManager({[i.name for i in self.interfaces]!r})"

    # -- ASGI ------------------------------------------------------------------------------
    @property
    def app(self) -> InterfaceManager:
        """The ASGI app (the manager itself is ASGI-callable)."""
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        root = scope.get("root_path", "")
        path: str = scope.get("path", "")
        local = path[len(root) :] if root and path.startswith(root) else path
        for prefix, interface in self._routes:
            if local == prefix or local.startswith(prefix + "/"):
                app = interface.attach_routes()
                if prefix or not path.startswith(root):
                    scope = dict(scope)  # the child's own (the common root mount needs none)
                    scope["root_path"] = root + prefix
                    if not path.startswith(root):  # server gave a path relative to root_path
                        scope["path"] = root + path
                await app(scope, receive, send)
                return
        if local.rstrip("/") in ("", "/health"):
            body = json.dumps(
                {
                    "status": "ok",
                    "interfaces": [i.health() | {"prefix": i.prefix} for i in self.interfaces],
                }
            ).encode()
            status = 200
            ctype = b"application/json"
        else:
            body, status, ctype = b"not found", 404, b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.open()
                except Exception as exc:
                    self._startup_error = exc
                    if isinstance(exc, WAAgentError):  # the message says what to fix
                        logger.error("startup failed: %s", exc)
                    else:
                        logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def open(self) -> None:
        """Start every interface (what the ASGI lifespan startup does)."""
        started: list[WhatsAppInterface] = []
        try:
            for interface in self.interfaces:
                await interface.start()
                started.append(interface)
        except BaseException:
            for interface in started:
                await interface.aclose()
            raise
        if self.tune_gc or (self.tune_gc is None and not self._background):
            gc.collect()
            gc.freeze()
            young, middle, old = gc.get_threshold()
            if old < _FULL_COLLECTION_EVERY and self._gc_threshold is None:
                self._gc_threshold = (young, middle, old)
                gc.set_threshold(young, middle, _FULL_COLLECTION_EVERY)
            logger.debug(
                "gc.freeze(): %d objects out of the collector's way; thresholds %s",
                gc.get_freeze_count(),
                gc.get_threshold(),
            )

    async def close(self) -> None:
        """Stop every interface (what the ASGI lifespan shutdown does)."""
        for interface in self.interfaces:
            try:
                await interface.aclose()
            except Exception:
                logger.exception("closing interface %r failed", interface.name)
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None

    # -- running ---------------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """Base URL of the running background server, or ``None``."""
        return self._server.url if self._server is not None and self._server.running else None

    def webhook_url(
        self, interface: WhatsAppInterface | None = None, base: str | None = None
    ) -> str:
        """The callback URL of an interface (the first by default)."""
        interface = interface or self.interfaces[0]
        base = base or self.url
        if base is None:
            raise RuntimeError("the server is not running: await manager.start() first")
        return f"{base.rstrip('/')}{interface.prefix}/webhook"

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        log_level: str = "warning",
        limits: ServerLimits | None = DEFAULT_LIMITS,
    ) -> str:
        """Serve in the background on the running loop; return the base URL once listening.

        ``limits`` caps each request's headers and the time to send them and the body
        (:class:`~wa_agent.server.ServerLimits`; ``None``: uvicorn's own behaviour).
        Raises ``OSError`` when the port is taken, and the startup error itself when an
        interface cannot start (for instance :class:`~wa_agent.ConfigurationError` naming
        a missing ``WHATSAPP_*`` variable; other failures raise ``ServerStartError``, a
        ``RuntimeError``). The caller's loop (a notebook kernel) keeps running either way
        and nothing is left listening.
        """
        if self._server is not None and self._server.running:
            raise RuntimeError(f"already serving at {self._server.url}; await stop() first")
        server = BackgroundServer(self, host, port, log_level=log_level, limits=limits)
        self._startup_error = None
        self._background = True
        try:
            await server.start()
        except ServerStartError:
            error, self._startup_error = self._startup_error, None
            if error is not None:
                raise error from None
            raise
        self._server = server
        logger.info("serving %d interface(s) at %s", len(self.interfaces), server.url)
        return server.url

    async def stop(self) -> None:
        """Stop the background server (and the tunnel), finishing in-flight work within
        each interface's ``shutdown_timeout``; frees the port."""
        if self._tunnel is not None:
            tunnel, self._tunnel = self._tunnel, None
            await tunnel.aclose()
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(timeout=max(i.settings.shutdown_timeout for i in self.interfaces) + 5)
        self._background = False

    def serve(
        self,
        host: str = "0.0.0.0",
        port: int = 8000,
        reload: bool = False,
        *,
        limits: ServerLimits | None = DEFAULT_LIMITS,
        **uvicorn_options: Any,
    ) -> asyncio.Task[str] | None:
        """Run the server.

        In a script this blocks until interrupted (Ctrl+C). Called where an event loop is
        already running (a notebook cell), it starts the server in the background on that
        loop instead and returns the task (``await`` it to get the URL, or just carry on).
        ``limits`` caps each request's headers and the time to send them and the body,
        whatever HTTP parser uvicorn uses (:class:`~wa_agent.server.ServerLimits`; ``None``:
        uvicorn's own behaviour); other keywords go to ``uvicorn.run``. ``reload`` needs an
        import string and is not supported here: use ``uvicorn module:app --reload``.
        """
        if reload:
            raise ValueError(
                "reload=True needs an import string: run "
                "`uvicorn yourmodule:manager.app --reload` instead"
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            task = asyncio.ensure_future(self.start(host, port, limits=limits))
            task.add_done_callback(_report_start)
            return task
        import uvicorn

        uvicorn_options.setdefault("log_level", "info")
        uvicorn_options.update(_limited_options(limits, uvicorn_options.pop("http", "auto")))
        uvicorn.run(self, host=host, port=port, interface="asgi3", **uvicorn_options)
        return None

    # -- notebook helpers --------------------------------------------------------------------
    async def atunnel(self, *, authtoken: str | None = None) -> str:
        """Open an ngrok tunnel to the running server; print and return the webhook URL."""
        from .tunnel import aopen_tunnel, print_dashboard_instructions

        if self._server is None or not self._server.running:
            raise RuntimeError("start the server first: await manager.start()")
        self._tunnel = await aopen_tunnel(self._server.port, authtoken=authtoken)
        for interface in self.interfaces:
            url = self._tunnel.webhook_url(interface.prefix)
            print_dashboard_instructions(url, interface.verify_token)
        return self._tunnel.webhook_url(self.interfaces[0].prefix)

    def tunnel(self, *, authtoken: str | None = None) -> asyncio.Task[str] | str:
        """Open an ngrok tunnel (see :meth:`atunnel`); in a notebook prefer
        ``await manager.atunnel()``, which waits and raises errors in the cell.

        Called where an event loop is running (a notebook cell), this never blocks that loop
        (it serves the webhooks): it schedules :meth:`atunnel` on it and returns the task at
        once. The dashboard instructions are printed when the tunnel is up (in a notebook,
        under the cell that called this) and a failure is logged. Without a running loop it
        runs :meth:`atunnel` to completion and returns the webhook URL.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.atunnel(authtoken=authtoken))
        task = asyncio.ensure_future(self.atunnel(authtoken=authtoken))
        task.add_done_callback(_report_tunnel)
        return task

    def conversation_log(self, max_messages: int = 200) -> ConversationLog:
        """The shared conversation model, attached to every interface on first use."""
        if self._log is None:
            from .widget import ConversationLog

            self._log = ConversationLog(max_messages=max_messages)
            for interface in self.interfaces:
                interface.listeners.append(self._log)
            if len(self.interfaces) > 1:  # the console needs each contact's interface
                from ._operator_console import OperatorRouter

                self._router = OperatorRouter(self.interfaces)
        return self._log

    def widget(self, *, max_messages: int = 200, operator: bool = True) -> ConversationsWidget:
        """A live ipywidgets view of every conversation (needs the ``notebook`` extra).

        With ``operator=True`` it is also an operator console: "Take over" / "Hand back" and a
        reply box under each conversation, acting on the interface whose webhooks that
        contact's messages came in on. ``operator=False`` gives a read-only view.
        """
        from .widget import ConversationsWidget

        log = self.conversation_log(max_messages)
        if not operator:
            return ConversationsWidget(log)
        if len(self.interfaces) == 1:
            return ConversationsWidget(log, operator=self.interfaces[0])
        return ConversationsWidget(log, operator=self._router)


def _report_tunnel(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("could not open the tunnel: %s", task.exception())


def _report_start(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("background server failed to start: %s", exc)
    else:
        logger.warning("wa_agent serving at %s", task.result())
