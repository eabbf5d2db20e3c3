"""The exceptions wa_agent raises.

::

    WAAgentError
     ├─ InvalidSignature        missing, malformed or wrong X-Hub-Signature-256
     ├─ InvalidPayload          body is not JSON / not a WhatsApp Business Account envelope
     ├─ ConfigurationError      a required setting or environment variable is missing
     ├─ StoreError              the SessionStore could not read or write
     ├─ MediaError              media refused (size, MIME type, host) or undownloadable
     ├─ AgentError              the agent (or the LLM behind it) failed
     └─ WhatsAppAPIError        the Cloud API said no  (.code .details .http_status .retryable)
         ├─ TransportError      the request did not complete (Meta may or may not have it)
         ├─ RateLimitError      130429, 131056, 4, 80007, 131048, 131049, 131064
         ├─ OutsideServiceWindow 131047: more than 24 h since the user wrote; send a template
         ├─ RecipientError      131026, 131050, 130472, 137000, 131021: cannot reach this user
         ├─ AuthenticationError 190, 0: token expired or invalid
         ├─ PermissionDeniedError 10, 3, 200-299, 131005: missing permission or capability
         ├─ InvalidRequestError 100, 131008, 131009, 131051, 33: a bug in the request
         ├─ TemplateError       132000-132999: template or flow problem
         ├─ MediaUploadError    131053, 131052: media could not be processed
         ├─ AccountError        368, 131031, 130497, 131042, 131037: needs an operator
         └─ ServerError         1, 2, 131000, 131016, 131057, HTTP 5xx: trouble on Meta's side

Each class's docstring says what the user should do about it. Which class a Graph error
code raises and how it is retried is written once, in :data:`ERROR_CODES` (see
:class:`RetryKind`); ``WhatsAppAPIError.retryable`` and ``RetryPolicy`` both read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = [
    "ERROR_CODES",
    "AccountError",
    "AgentError",
    "AuthenticationError",
    "ConfigurationError",
    "ErrorRule",
    "InvalidPayload",
    "InvalidRequestError",
    "InvalidSignature",
    "MediaError",
    "MediaUploadError",
    "OutsideServiceWindow",
    "PermissionDeniedError",
    "RateLimitError",
    "RecipientError",
    "RetryKind",
    "ServerError",
    "StoreError",
    "TemplateError",
    "TransportError",
    "WAAgentError",
    "WhatsAppAPIError",
    "api_error_from_body",
    "error_rule",
]


class WAAgentError(Exception):
    """Root of every exception raised by wa_agent."""


class InvalidSignature(WAAgentError):
    """The ``X-Hub-Signature-256`` header is missing, malformed or does not match.

    Check that the app secret is the one under App Dashboard › App settings › Basic of the
    Meta app that sends the webhooks, and that the raw request bytes are verified (never a
    re-serialised JSON body).
    """


class InvalidPayload(WAAgentError):
    """The body is not JSON, or not a WhatsApp Business Account webhook envelope.

    ``reason`` says which. Such a body cannot be processed; answer it with 200 anyway (a 4xx
    only makes Meta retry it for 7 days).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid webhook payload: {reason}")
        self.reason = reason


class ConfigurationError(WAAgentError, ValueError):
    """A required setting is missing or wrong; the message names it and where to set it."""


class StoreError(WAAgentError):
    """The session store could not read or write. Check the database path or Redis URL."""


class MediaError(WAAgentError):
    """Media was refused: too large, an unsupported MIME type, or a download host that is
    not Meta's (the access token is never sent anywhere else)."""


class AgentError(WAAgentError):
    """The agent, or the language model behind it, failed to produce an answer."""


class RetryKind(StrEnum):
    """How a failed Cloud API call may be tried again (reference/cloud_api.md §10).

    The first three are retried by the :class:`~wa_agent.RetryPolicy` within the call, each
    kind with its own attempt budget; ``LATER`` is worth trying again only after minutes
    (not within the call: the interface keeps the message in its inbox and retries it with
    a growing delay); ``NEVER`` fails the same way every time until someone acts.
    """

    #: 130429 / HTTP 429: the number's throughput; back off and slow the whole number.
    THROTTLE = "throttle"
    #: 131056: too fast to one recipient; wait 4**n s for that recipient only.
    PAIR_RATE = "pair_rate"
    #: 1, 2, 131000, 131016, HTTP 5xx, connection failures: a few quick retries.
    TRANSIENT = "transient"
    #: 4, 80007 (hourly app/WABA call limits), 131057 (maintenance, ~60 s): retry later.
    LATER = "later"
    #: Anything else: a bug, a policy, a user who cannot be reached, a bad token.
    NEVER = "never"


class WhatsAppAPIError(WAAgentError):
    """The WhatsApp Cloud API refused or failed a request.

    ``code`` is Meta's ``error.code`` (``None`` when the answer had no Graph error body),
    ``details`` is ``error.error_data.details`` (or the message), ``http_status`` the HTTP
    status (``None`` for transport failures), ``retry_kind`` how it may be retried (a
    :class:`RetryKind`, from :data:`ERROR_CODES`) and ``retryable`` whether sending again
    later can succeed (every kind but ``NEVER``). Build logic on ``code``, never on the
    message text.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        details: str | None = None,
        http_status: int | None = None,
        retryable: bool | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.http_status = http_status
        self.retry_kind = error_rule(code, http_status).retry
        if retryable is None:
            retryable = self.retry_kind is not RetryKind.NEVER
        self.retryable = retryable
        self.fbtrace_id = fbtrace_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.details and self.details not in self.message:
            parts.append(f"details={self.details}")
        return " ".join(parts)


class TransportError(WhatsAppAPIError):
    """The HTTP request to the Cloud API did not complete (connection error or timeout).

    ``maybe_delivered`` is true when the request may have reached Meta (a read timeout):
    resending could duplicate the message.
    """

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message, retryable=not maybe_delivered)
        self.retry_kind = RetryKind.NEVER if maybe_delivered else RetryKind.TRANSIENT
        self.maybe_delivered = maybe_delivered


class RateLimitError(WhatsAppAPIError):
    """Throttled: 130429 (the number's throughput) and 131056 (one recipient) were already
    retried with backoff by the Sender; 4 and 80007 (hourly app or WABA call limits) need
    minutes, so they are raised at once (``retryable``: try again later); 131048 (spam
    limit), 131049 (marketing cap) and 131064 are not retryable: send less."""


class OutsideServiceWindow(WhatsAppAPIError):
    """131047: more than 24 hours since the user last wrote. Only a template can be sent."""


class RecipientError(WhatsAppAPIError):
    """The recipient cannot receive this message (not on WhatsApp, opted out, identity
    changed). Do not retry."""


class AuthenticationError(WhatsAppAPIError):
    """190/0: the access token is expired or invalid. Create a new (system-user) token and
    set ``WHATSAPP_ACCESS_TOKEN``."""


class PermissionDeniedError(WhatsAppAPIError):
    """The token lacks a permission (``whatsapp_business_messaging``) or the number a
    capability. Fix the app's permissions in Meta's dashboard."""


class InvalidRequestError(WhatsAppAPIError):
    """100/131008/131009/131051/33: a parameter is invalid or missing. This is a bug in the
    request; it will fail the same way every time."""


class TemplateError(WhatsAppAPIError):
    """132xxx: the template is missing, paused, disabled or got the wrong parameters."""


class MediaUploadError(WhatsAppAPIError):
    """131053/131052: media could not be uploaded, downloaded or processed. Check its MIME
    type and size against the Cloud API limits."""


class AccountError(WhatsAppAPIError):
    """The account is blocked, locked, restricted or unpaid. An operator must act in
    Meta's Business Manager."""


class ServerError(WhatsAppAPIError):
    """A failure on Meta's side: 1, 2, 131000, 131016 and HTTP 5xx are transient (the Sender
    retried them); 131057 (the number in maintenance, up to a minute) is retryable later."""


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """What a Graph error code means here: the exception raised and how it is retried."""

    error: type[WhatsAppAPIError]
    retry: RetryKind


def _rules(error: type[WhatsAppAPIError], retry: RetryKind, *codes: int) -> dict[int, ErrorRule]:
    rule = ErrorRule(error, retry)
    return dict.fromkeys(codes, rule)


_K = RetryKind
#: The one table of Graph error codes (reference/cloud_api.md §10): code → (exception
#: class, retry kind). Also: 200–299 → PermissionDeniedError and 132000–132999 →
#: TemplateError, never retried; without a code, HTTP 429 → RateLimitError (throttle),
#: 5xx → ServerError (transient), 401 → AuthenticationError; any other code or status →
#: WhatsAppAPIError, never retried.
ERROR_CODES: Mapping[int, ErrorRule] = MappingProxyType(
    {
        **_rules(RateLimitError, _K.THROTTLE, 130429),
        **_rules(RateLimitError, _K.PAIR_RATE, 131056),
        **_rules(RateLimitError, _K.LATER, 4, 80007),
        **_rules(RateLimitError, _K.NEVER, 131048, 131049, 131064),
        **_rules(ServerError, _K.TRANSIENT, 1, 2, 131000, 131016),
        **_rules(ServerError, _K.LATER, 131057),
        **_rules(OutsideServiceWindow, _K.NEVER, 131047),
        **_rules(RecipientError, _K.NEVER, 131026, 131050, 130472, 137000, 131021),
        **_rules(AuthenticationError, _K.NEVER, 0, 190),
        **_rules(PermissionDeniedError, _K.NEVER, 3, 10, 131005),
        **_rules(InvalidRequestError, _K.NEVER, 33, 100, 131008, 131009, 131051),
        **_rules(MediaUploadError, _K.NEVER, 131052, 131053),
        **_rules(AccountError, _K.NEVER, 368, 131031, 130497, 131042, 131037),
    }
)
_PERMISSION_RANGE = ErrorRule(PermissionDeniedError, _K.NEVER)
_TEMPLATE_RANGE = ErrorRule(TemplateError, _K.NEVER)
_THROTTLED = ErrorRule(RateLimitError, _K.THROTTLE)
_SERVER_DOWN = ErrorRule(ServerError, _K.TRANSIENT)
_UNAUTHORIZED = ErrorRule(AuthenticationError, _K.NEVER)
_OTHER = ErrorRule(WhatsAppAPIError, _K.NEVER)


def error_rule(code: int | None, http_status: int | None = None) -> ErrorRule:
    """The :class:`ErrorRule` for a Graph error ``code`` (the HTTP status only counts when
    there is no code): see :data:`ERROR_CODES`."""
    if code is not None:
        rule = ERROR_CODES.get(code)
        if rule is not None:
            return rule
        if 200 <= code <= 299:
            return _PERMISSION_RANGE
        if 132000 <= code <= 132999:
            return _TEMPLATE_RANGE
        return _OTHER
    if http_status == 429:
        return _THROTTLED
    if http_status == 401:
        return _UNAUTHORIZED
    if http_status is not None and http_status >= 500:
        return _SERVER_DOWN
    return _OTHER


def api_error_from_body(body: Any, http_status: int | None) -> WhatsAppAPIError:
    """Build the right :class:`WhatsAppAPIError` subclass from a Graph error body.

    Tolerates anything as ``body`` (a proxy's HTML 502 arrives as a string): what cannot be
    read as ``{"error": {...}}`` gives an error keyed on the HTTP status only.
    """
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        cls = error_rule(None, http_status).error
        return cls(f"Cloud API answered HTTP {http_status}", http_status=http_status)
    raw_code = err.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"Cloud API error {code}"
    data = err.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    if not isinstance(details, str):
        details = None
    trace = err.get("fbtrace_id")
    return error_rule(code, http_status).error(
        message,
        code=code,
        details=details,
        http_status=http_status,
        fbtrace_id=trace if isinstance(trace, str) else None,
    )
