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
         └─ ServerError         1, 2, 131000, 131016, 131057, HTTP 5xx: transient Meta trouble

Each class's docstring says what the user should do about it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccountError",
    "AgentError",
    "AuthenticationError",
    "ConfigurationError",
    "InvalidPayload",
    "InvalidRequestError",
    "InvalidSignature",
    "MediaError",
    "MediaUploadError",
    "OutsideServiceWindow",
    "PermissionDeniedError",
    "RateLimitError",
    "RecipientError",
    "ServerError",
    "StoreError",
    "TemplateError",
    "TransportError",
    "WAAgentError",
    "WhatsAppAPIError",
    "api_error_from_body",
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


# Codes from reference/cloud_api.md §10.
_RATE_LIMIT = {4, 80007, 130429, 131056, 131048, 131049, 131064}
_RETRYABLE = {1, 2, 4, 80007, 130429, 131056, 131000, 131016, 131057}
_RECIPIENT = {131026, 131050, 130472, 137000, 131021}
_AUTH = {0, 190}
_PERMISSION = {3, 10, 131005}
_INVALID = {33, 100, 131008, 131009, 131051}
_MEDIA = {131052, 131053}
_ACCOUNT = {368, 131031, 130497, 131042, 131037}
_SERVER = {1, 2, 131000, 131016, 131057}


class WhatsAppAPIError(WAAgentError):
    """The WhatsApp Cloud API refused or failed a request.

    ``code`` is Meta's ``error.code`` (``None`` when the answer had no Graph error body),
    ``details`` is ``error.error_data.details`` (or the message), ``http_status`` the HTTP
    status (``None`` for transport failures) and ``retryable`` whether sending again later
    can succeed. Build logic on ``code``, never on the message text.
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
        if retryable is None:
            retryable = (code in _RETRYABLE) or (
                code is None and http_status is not None and http_status >= 500
            )
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
        self.maybe_delivered = maybe_delivered


class RateLimitError(WhatsAppAPIError):
    """Throttled (130429 per number, 131056 per recipient, 4/80007 per app or WABA).
    Slow down; the Sender already retried with backoff before raising this."""


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
    """A transient failure on Meta's side (1, 2, 131000, 131016, 131057, HTTP 5xx)."""


def _class_for(code: int | None, http_status: int | None) -> type[WhatsAppAPIError]:
    if code in _RATE_LIMIT:
        return RateLimitError
    if code == 131047:
        return OutsideServiceWindow
    if code in _RECIPIENT:
        return RecipientError
    if code in _AUTH:
        return AuthenticationError
    if code in _PERMISSION or (code is not None and 200 <= code <= 299):
        return PermissionDeniedError
    if code in _INVALID:
        return InvalidRequestError
    if code is not None and 132000 <= code <= 132999:
        return TemplateError
    if code in _MEDIA:
        return MediaUploadError
    if code in _ACCOUNT:
        return AccountError
    if code in _SERVER:
        return ServerError
    if code is None and http_status is not None:
        if http_status == 429:
            return RateLimitError
        if http_status in (401,):
            return AuthenticationError
        if http_status >= 500:
            return ServerError
    return WhatsAppAPIError


def api_error_from_body(body: Any, http_status: int | None) -> WhatsAppAPIError:
    """Build the right :class:`WhatsAppAPIError` subclass from a Graph error body.

    Tolerates anything as ``body`` (a proxy's HTML 502 arrives as a string): what cannot be
    read as ``{"error": {...}}`` gives an error keyed on the HTTP status only.
    """
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        cls = _class_for(None, http_status)
        retryable = http_status is not None and (http_status >= 500 or http_status == 429)
        return cls(f"Cloud API answered HTTP {http_status}", http_status=http_status,
                   retryable=retryable)
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
    cls = _class_for(code, http_status)
    status_retryable: bool | None = None
    if code is None and http_status is not None:
        status_retryable = http_status >= 500 or http_status == 429
    return cls(
        message,
        code=code,
        details=details,
        http_status=http_status,
        retryable=status_retryable,
        fbtrace_id=trace if isinstance(trace, str) else None,
    )
