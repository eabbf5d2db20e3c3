"""Expose a local webhook server to Meta through an ngrok tunnel (extra ``tunnel``).

::

    tunnel = await aopen_tunnel(8000)                 # NGROK_AUTHTOKEN from the environment
    print_dashboard_instructions(tunnel.webhook_url("/whatsapp"), verify_token)
    ...
    await tunnel.aclose()

The tunnel is made by `pyngrok <https://pyngrok.readthedocs.io>`_, which runs the ngrok agent
as a child process (downloading it on first use unless ``ngrok_path`` points at one).
pyngrok blocks, so in a notebook use :func:`aopen_tunnel` / :meth:`Tunnel.aclose`: they run it
in a worker thread and the webhook server on the kernel's loop keeps answering meanwhile.
Every failure (pyngrok missing, no or a rejected auth token, the agent not starting) raises
:class:`TunnelError` with a message that says what to do; the auth token never appears in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any, Self, TextIO, final

from .exceptions import WAAgentError
from .secret import Secret

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "Tunnel",
    "TunnelError",
    "aopen_tunnel",
    "open_tunnel",
    "print_dashboard_instructions",
]

logger = logging.getLogger(__name__)

_TOKEN_HELP = "https://dashboard.ngrok.com/get-started/your-authtoken"
_AUTH_MARKERS = ("ERR_NGROK_105", "ERR_NGROK_107", "ERR_NGROK_4018", "authentication failed")


class TunnelError(WAAgentError):
    """The ngrok tunnel could not be opened: pyngrok is missing, the auth token is missing or
    was rejected, or the ngrok agent did not start. ``ngrok_error_code`` holds ngrok's
    ``ERR_NGROK_<n>`` code when it gave one (see https://ngrok.com/docs/errors/)."""

    def __init__(self, message: str, *, ngrok_error_code: str | None = None) -> None:
        super().__init__(message)
        self.ngrok_error_code = ngrok_error_code


class _PyngrokMissing(TunnelError, ImportError):
    """pyngrok is not installed (also an ``ImportError``)."""


# Open Tunnel objects per ngrok agent (pyngrok runs one agent process per ngrok_path): the
# agent is stopped when the last of our tunnels on it closes.
_agents: dict[str, int] = {}
_agents_lock = threading.Lock()


_MIN_REDACT = 8  # real tokens are ~50 characters; masking every "t" would garble the text


def _redact(text: str, token: str) -> str:
    return text.replace(token, "**********") if len(token) >= _MIN_REDACT else text


def _tidy(text: str) -> str:
    """ngrok's error text arrives with escaped line breaks: make it one readable line."""
    return re.sub(r"\s+", " ", text.replace("\\r", " ").replace("\\n", " ")).strip()


class _RedactTokens(logging.Filter):
    """pyngrok logs every ngrok output line, and ngrok echoes a rejected auth token: mask it."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for token in self.tokens:
            redacted = _redact(redacted, token)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_redactor = _RedactTokens()
for _name in ("pyngrok.process.ngrok", "pyngrok.process", "pyngrok.ngrok"):
    logging.getLogger(_name).addFilter(_redactor)


@final
class Tunnel:
    """An open ngrok tunnel: ``public_url`` forwards to ``local_url``.

    Close it with :meth:`close` (or :meth:`aclose` in async code); it is also a (async)
    context manager. Closing twice is harmless.
    """

    def __init__(self, public_url: str, local_url: str, *, _tunnel: Any, _config: Any) -> None:
        self.public_url = public_url
        self.local_url = local_url
        self._tunnel = _tunnel
        self._config = _config  # holds the auth token: never shown
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def webhook_url(self, prefix: str = "/whatsapp") -> str:
        """The Callback URL for Meta's dashboard: ``{public_url}{prefix}/webhook``.

        ``prefix`` is the interface's prefix (``WhatsAppInterface(prefix=...)``, default
        ``/whatsapp``); pass ``""`` when the app is served at the root.
        """
        prefix = prefix.strip("/")
        path = f"/{prefix}/webhook" if prefix else "/webhook"
        return self.public_url.rstrip("/") + path

    def close(self) -> None:
        """Remove the tunnel; stop the ngrok agent when no other tunnel of ours uses it.

        Blocking (it talks to the agent's local API); use :meth:`aclose` on an event loop.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError

        try:
            ngrok.disconnect(self.public_url, pyngrok_config=self._config)
        except (PyngrokError, OSError) as exc:
            logger.warning("could not remove ngrok tunnel %s: %s", self.public_url, exc)
        _release_agent(self._config)
        logger.info("ngrok tunnel %s closed", self.public_url)

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Tunnel {self.public_url} -> {self.local_url} ({state})>"


def _release_agent(config: Any) -> None:
    from pyngrok import ngrok

    path = config.ngrok_path
    with _agents_lock:
        left = _agents.get(path, 0) - 1
        if left > 0:
            _agents[path] = left
            return
        _agents.pop(path, None)
        ngrok.kill(pyngrok_config=config)


def _import_pyngrok() -> tuple[Any, Any, Any]:
    try:
        from pyngrok import conf, exception, ngrok
    except ImportError as exc:
        raise _PyngrokMissing(
            "opening a tunnel needs pyngrok: pip install 'wa-agent-host[tunnel]' (or pip "
            "install pyngrok)"
        ) from exc
    return conf, exception, ngrok


def open_tunnel(
    port: int,
    *,
    authtoken: str | Secret | None = None,
    region: str | None = None,
    host: str = "127.0.0.1",
    ngrok_path: str | os.PathLike[str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    startup_timeout: int = 15,
) -> Tunnel:
    """Open an ngrok tunnel to ``http://{host}:{port}`` and return it. Blocking.

    ``authtoken`` defaults to ``NGROK_AUTHTOKEN``. ``region`` (``us``, ``eu``, ``ap``, ...)
    applies to the agent process. ``ngrok_path``/``config_path`` choose the agent binary and
    its config (default: pyngrok's, downloading ngrok on first use; an explicit
    ``ngrok_path`` that does not exist is an error, never a download).

    Raises :class:`TunnelError` when pyngrok is missing, no token is set, ngrok rejects the
    token, or the agent does not start.
    """
    conf, exception, ngrok = _import_pyngrok()
    token = Secret(authtoken) if authtoken is not None else None
    if not token:
        token = Secret(os.environ.get("NGROK_AUTHTOKEN", ""))
    if not token:
        raise TunnelError(
            "no ngrok auth token: pass authtoken=... or set the NGROK_AUTHTOKEN environment "
            f"variable (get a token at {_TOKEN_HELP})"
        )
    if ngrok_path is not None and not os.path.exists(ngrok_path):
        raise TunnelError(f"no ngrok agent at ngrok_path={os.fspath(ngrok_path)!r}")
    config = conf.PyngrokConfig(
        ngrok_path=None if ngrok_path is None else os.fspath(ngrok_path),
        config_path=None if config_path is None else os.fspath(config_path),
        auth_token=token.reveal(),
        region=region,
        startup_timeout=startup_timeout,
    )
    local_url = f"http://{host}:{port}"
    secret = token.reveal()
    _redactor.tokens.add(secret)
    name = f"wa-agent-{port}-{uuid.uuid4().hex[:8]}"  # pyngrok's default name holds "://"
    with _agents_lock:
        try:
            tunnel = ngrok.connect(local_url, name=name, pyngrok_config=config)
        except exception.PyngrokNgrokInstallError as exc:
            raise TunnelError(
                "could not download the ngrok agent (no internet?): install ngrok and pass "
                f"ngrok_path=..., or set PYNGROK_NGROK_PATH ({_redact(str(exc), secret)})"
            ) from None
        except exception.PyngrokNgrokError as exc:
            _kill_if_unused(ngrok, config)
            detail = _tidy(_redact(str(exc.ngrok_error or exc), secret))
            if exc.ngrok_error is None and exc.ngrok_logs:
                detail += f" Last ngrok output: {_tidy(_redact(exc.ngrok_logs[-1].line, secret))}"
            code = getattr(exc, "ngrok_error_code", None)
            if any(marker in detail for marker in _AUTH_MARKERS):
                raise TunnelError(
                    "ngrok rejected the auth token: check NGROK_AUTHTOKEN "
                    f"(see {_TOKEN_HELP}); ngrok said: {detail}",
                    ngrok_error_code=code,
                ) from None
            raise TunnelError(
                f"the ngrok agent ({config.ngrok_path}) could not start: {detail}",
                ngrok_error_code=code,
            ) from None
        except (exception.PyngrokError, OSError) as exc:
            _kill_if_unused(ngrok, config)
            raise TunnelError(
                f"could not open the ngrok tunnel: {_redact(str(exc), secret)}"
            ) from None
        _agents[config.ngrok_path] = _agents.get(config.ngrok_path, 0) + 1
    logger.info("ngrok tunnel %s -> %s", tunnel.public_url, local_url)
    return Tunnel(tunnel.public_url, local_url, _tunnel=tunnel, _config=config)


def _kill_if_unused(ngrok: Any, config: Any) -> None:
    """After a failure, stop an agent that no open tunnel of ours uses (caller holds the lock)."""
    if not _agents.get(config.ngrok_path):
        try:
            ngrok.kill(pyngrok_config=config)
        except OSError:  # pragma: no cover - already gone
            pass


async def aopen_tunnel(
    port: int,
    *,
    authtoken: str | Secret | None = None,
    region: str | None = None,
    host: str = "127.0.0.1",
    ngrok_path: str | os.PathLike[str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    startup_timeout: int = 15,
) -> Tunnel:
    """:func:`open_tunnel` in a worker thread, for notebooks and async code.

    If the caller is cancelled while ngrok starts, the tunnel is closed once it is open, so
    nothing is left behind.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        None,
        lambda: open_tunnel(
            port,
            authtoken=authtoken,
            region=region,
            host=host,
            ngrok_path=ngrok_path,
            config_path=config_path,
            startup_timeout=startup_timeout,
        ),
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:

        def _cleanup(done: asyncio.Future[Tunnel]) -> None:
            if not done.cancelled() and done.exception() is None:
                loop.run_in_executor(None, done.result().close)

        future.add_done_callback(_cleanup)
        raise


def print_dashboard_instructions(
    webhook_url: str, verify_token: str | Secret | None, *, file: TextIO | None = None
) -> str:
    """Print (and return) what to paste into Meta's App Dashboard to receive webhooks.

    The verify token is shown in full on purpose: the user has to paste it.
    """
    token = verify_token.reveal() if isinstance(verify_token, Secret) else verify_token
    shown = token if token else "(none set: pass verify_token=... or set WHATSAPP_VERIFY_TOKEN)"
    lines = [
        "In Meta's App Dashboard, open WhatsApp > Configuration > Webhook > Edit and paste:",
        f"  Callback URL:  {webhook_url}",
        f"  Verify token:  {shown}",
        'Click "Verify and save", then under Webhook fields subscribe to "messages".',
    ]
    if not webhook_url.startswith("https://"):
        lines.append("Note: Meta only accepts an https:// Callback URL with a valid certificate.")
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout)
    return text
