"""The Sender's HTTP core: calls to the Graph API for one business number, with retries.

:class:`GraphClient` owns what every call of a :class:`~wa_agent.sender.Sender` shares:

* the :class:`httpx.AsyncClient` (its own, created on first use and closed by
  :meth:`GraphClient.aclose`, or a shared one that it never closes);
* the access token and where it may go (:meth:`GraphClient.token_allowed`): Meta's hosts
  over HTTPS and the configured ``base_url``, nothing else;
* the bound on requests in flight, the number's :class:`~wa_agent.sender.RateLimiter` and
  the per-recipient wait after a pair-rate error (131056);
* the retry loop (:meth:`GraphClient.request`) driven by a
  :class:`~wa_agent.sender.RetryPolicy`, including the rule that a message ``POST`` which
  may have reached Meta is never resent by default;
* the counters (:class:`SenderStats`).

It knows nothing about message types or media: callers hand it complete URLs and bodies
(``wa_agent.sender`` builds them, ``wa_agent._sender_media`` streams downloads through it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, final

import anyio
import httpx

from ._policy import RateLimiter, RetryPolicy
from ._transport import choose_transport, unlink_response
from .exceptions import MediaError, RetryKind, TransportError, WhatsAppAPIError, api_error_from_body
from .secret import Secret

__all__ = ["DEFAULT_TIMEOUT", "GraphClient", "SenderStats", "response_body"]

#: The Sender's logger: one INFO line per HTTP call (method, path, status, ms, attempt).
logger = logging.getLogger("wa_agent.sender")

#: Timeouts of the client a Sender creates for itself.
DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)

_META_SUFFIXES = (".facebook.com", ".fbsbx.com", ".fbcdn.net")
_META_DOMAINS = frozenset({"facebook.com", "fbsbx.com", "fbcdn.net"})
# Failures before the request could have been written: safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@final
@dataclass(slots=True)
class SenderStats:
    """Counters of one Sender: HTTP requests made, messages accepted by the API, retries
    (waits before another attempt) and calls that raised."""

    requests: int = 0
    sent: int = 0
    retries: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


@final
class GraphClient:
    """HTTP calls to the Graph API with the token, the bounds and the retries (see the
    module docstring). ``base_url`` must already be a valid http(s) URL (the Sender checks
    it); ``transport`` is the Sender's ``transport=`` choice, used for its own client."""

    def __init__(
        self,
        token: Secret,
        base_url: str,
        *,
        retry: RetryPolicy,
        rate_limiter: RateLimiter | None,
        max_in_flight: int,
        timeout: httpx.Timeout | None,
        user_agent: str,
        client: httpx.AsyncClient | None,
        transport: str | httpx.AsyncBaseTransport,
    ) -> None:
        base = httpx.URL(base_url)
        self._base_url = base_url
        self._base_origin = (base.scheme, base.host.lower(), base.port)
        self._token = token
        self._user_agent = user_agent
        self._timeout = timeout
        self._transport_choice = transport
        self._max_connections = max_in_flight
        self._client = client
        self._owns_client = client is None
        self._pair_gate: dict[str, float] = {}  # recipient -> monotonic time its wait ends
        self.retry = retry
        self.rate_limiter = rate_limiter
        self.stats = SenderStats()
        #: Bounds the requests in flight; :attr:`in_flight` counts them.
        self.semaphore = anyio.Semaphore(max_in_flight)
        self.in_flight = 0
        self.closed = False

    # ----------------------------------------------------------------- client

    def http(self) -> httpx.AsyncClient:
        """The client to send with (created on first use); raises once closed."""
        if self.closed:
            raise RuntimeError("this Sender is closed; create a new one")
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout or DEFAULT_TIMEOUT,
                limits=httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                ),
                headers={"User-Agent": self._user_agent},
                transport=choose_transport(
                    self._transport_choice, max_connections=self._max_connections
                ),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the client if this core created it; no call is made afterwards."""
        self.closed = True
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()

    def timeout_arg(self) -> httpx.Timeout | Any:
        """The per-request ``timeout=``: the configured one, or the client's own."""
        return self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT

    # ----------------------------------------------------------------- the token

    def token_allowed(self, url: str | httpx.URL) -> bool:
        """Whether the access token may be sent to ``url`` (see
        :meth:`wa_agent.sender.Sender.token_allowed`)."""
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return False
        host = target.host.lower().rstrip(".")
        if (target.scheme, host, target.port) == self._base_origin:
            return True
        if target.scheme != "https" or target.port not in (None, 443):
            return False
        return host in _META_DOMAINS or host.endswith(_META_SUFFIXES)

    def headers(self, url: str | httpx.URL) -> dict[str, str]:
        """The headers of a call to ``url``, with the token; raises
        :class:`~wa_agent.exceptions.MediaError` for a host the token must not reach."""
        if not self.token_allowed(url):
            try:
                target = httpx.URL(url)
                where = f"{target.scheme}://{target.host}"
            except (httpx.InvalidURL, TypeError, ValueError):
                where = "an invalid URL"
            raise MediaError(
                f"refusing to send the access token to {where}: media "
                "is only fetched from Meta hosts (*.facebook.com, *.fbsbx.com, *.fbcdn.net "
                f"over https) or {self._base_url}"
            )
        return {
            "Authorization": f"Bearer {self._token.reveal()}",
            "User-Agent": self._user_agent,
        }

    # ----------------------------------------------------------------- calls

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        message: bool = False,
        recipient: str | None = None,
        rate_limited: bool = False,
        counted: bool = True,
    ) -> Any:
        """One Graph call with retries; returns the parsed JSON of the 2xx answer.

        ``message`` marks a message send (never resent after a possible delivery);
        ``recipient`` keys the 131056 pair-rate wait; ``rate_limited`` makes each attempt
        wait for the number's bucket: take a slot, or with ``counted=False`` (read
        receipts) only wait out a throttle pause.
        """
        client = self.http()
        headers = self.headers(url)
        path = httpx.URL(url).path
        attempt = 0
        failed: dict[RetryKind, int] = {}  # attempts that failed, per kind: one budget each
        just_waited_for_pair = False
        while True:
            attempt += 1
            if recipient is not None and not just_waited_for_pair and recipient in self._pair_gate:
                await self._wait_for_pair_gate(recipient)
            just_waited_for_pair = False
            limiter = self.rate_limiter
            if rate_limited and limiter is not None:
                await (limiter.acquire() if counted else limiter.wait_out_pause())
            started = time.perf_counter()
            try:
                async with self.semaphore:
                    self.in_flight += 1
                    try:
                        response = await client.request(
                            method,
                            url,
                            json=json,
                            data=data,
                            files=files,
                            params=params,
                            headers=headers,
                            timeout=self.timeout_arg(),
                            follow_redirects=False,
                        )
                    finally:
                        self.in_flight -= 1
                unlink_response(response)
            except httpx.TransportError as exc:
                delay = self._after_transport_error(
                    exc, method, path, started, attempt, failed, message
                )
                await self.retry.wait(delay)
                continue
            self.stats.requests += 1
            elapsed = (time.perf_counter() - started) * 1000
            logger.info(
                "%s %s -> %d in %.0f ms (attempt %d)",
                method,
                path,
                response.status_code,
                elapsed,
                attempt,
            )
            if response.is_success:
                try:
                    return response.json()
                except ValueError:
                    self.stats.failures += 1
                    raise WhatsAppAPIError(
                        f"{method} {path} answered {response.status_code} with a body that is "
                        "not JSON",
                        http_status=response.status_code,
                    ) from None
            just_waited_for_pair = await self._after_error_answer(
                response, attempt, failed, recipient, rate_limited
            )

    def _after_transport_error(
        self,
        exc: httpx.TransportError,
        method: str,
        path: str,
        started: float,
        attempt: int,
        failed: dict[RetryKind, int],
        message: bool,
    ) -> float:
        """Count and log a connection failure; return the wait before the next attempt, or
        raise :class:`~wa_agent.exceptions.TransportError` when there is none (always for a
        message that may have reached Meta, unless the policy allows resending)."""
        self.stats.requests += 1
        elapsed = (time.perf_counter() - started) * 1000
        logger.info(
            "%s %s -> %s in %.0f ms (attempt %d)",
            method,
            path,
            type(exc).__name__,
            elapsed,
            attempt,
        )
        maybe_delivered = not isinstance(exc, _NOT_SENT)
        failed[RetryKind.TRANSIENT] = tries = failed.get(RetryKind.TRANSIENT, 0) + 1
        delay = self.retry.transport_delay(tries, total=attempt)
        if isinstance(exc, httpx.UnsupportedProtocol) or (
            maybe_delivered and message and not self.retry.resend_on_read_timeout
        ):
            delay = None
        if delay is None:
            self.stats.failures += 1
            note = (
                "; the request may have reached Meta, so it was not resent (a resend "
                "could deliver the message twice)"
                if maybe_delivered and message
                else ""
            )
            raise TransportError(
                f"{method} {path} failed after {attempt} attempt(s): {type(exc).__name__}{note}",
                maybe_delivered=maybe_delivered,
            ) from exc
        self.stats.retries += 1
        return delay

    async def _after_error_answer(
        self,
        response: httpx.Response,
        attempt: int,
        failed: dict[RetryKind, int],
        recipient: str | None,
        rate_limited: bool,
    ) -> bool:
        """Raise the Graph error of a non-2xx answer, or wait as its kind says before the
        next attempt. Returns whether the wait was this recipient's pair-rate wait."""
        error = api_error_from_body(response_body(response), response.status_code)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        kind = error.retry_kind
        failed[kind] = tries = failed.get(kind, 0) + 1
        delay = self.retry.delay(error, tries, retry_after=retry_after, total=attempt)
        if delay is None:
            self.stats.failures += 1
            if attempt > 1:
                error.add_note(f"gave up after {attempt} attempts")
            raise error
        self.stats.retries += 1
        if kind is RetryKind.PAIR_RATE and recipient is not None:
            # Other sends to this recipient wait too; sends to others do not.
            until = time.monotonic() + delay
            self._pair_gate[recipient] = max(self._pair_gate.get(recipient, 0.0), until)
            await self.retry.wait(delay)
            if self._pair_gate.get(recipient) == until:
                del self._pair_gate[recipient]  # waited out
            return True
        if kind is RetryKind.THROTTLE and rate_limited and self.rate_limiter is not None:
            # The whole number is throttled: hold every send back; our own next
            # attempt waits for its slot in the bucket.
            self.rate_limiter.pause(delay)
        else:
            await self.retry.wait(delay)
        return False

    async def _wait_for_pair_gate(self, recipient: str) -> None:
        until = self._pair_gate.get(recipient)
        if until is None:
            return
        wait = until - time.monotonic()
        if wait <= 0:
            del self._pair_gate[recipient]
            return
        await self.retry.wait(wait)


def response_body(response: httpx.Response) -> Any:
    """An error answer's JSON, or the start of its text when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return response.text[:1000]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
