"""The emulator's Graph errors: Meta's error body for a code, and how a check refuses.

:func:`graph_error` builds the body Meta answers (``{"error": {"message", "type", "code",
"error_data": {"details"}, "fbtrace_id"}}``, reference/cloud_api.md §10) with Meta's title
for each code; :data:`STATUS` gives the HTTP status Meta pairs with a code. A check anywhere
in the emulator raises :class:`Reject` and the dispatcher turns it into that answer.
"""

from __future__ import annotations

import secrets
from typing import Any

__all__ = ["STATUS", "Reject", "graph_error", "status_for"]

# Messages Meta uses for each code (reference/cloud_api.md §10), "(#code) <title>".
_TITLES: dict[int, str] = {
    0: "AuthException",
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    3: "Capability or permissions issue",
    4: "Application request limit reached",
    10: "Permission denied",
    33: "This phone number is deleted",
    100: "Invalid parameter",
    190: "Error validating access token: Session has expired",
    368: "Temporarily blocked for policies violations",
    80007: "Rate limit issues",
    130429: "Rate limit hit",
    130472: "User's number is part of an experiment",
    130497: "Business account is restricted from messaging users in this country",
    131000: "Something went wrong",
    131005: "Access denied",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131021: "Recipient cannot be sender",
    131026: "Message Undeliverable",
    131031: "Business Account locked",
    131037: "WhatsApp provided number needs display name approval before message can be sent",
    131042: "Business eligibility payment issue",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement",
    131050: "User has stopped marketing messages",
    131051: "Unsupported message type",
    131052: "Media download error",
    131053: "Media upload error",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131057: "Account in maintenance mode",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    137000: "Identity key hash mismatch",
}
_DETAILS: dict[int, str] = {
    130429: "Cloud API message throughput has been reached.",
    131056: "Too many messages sent from the sender phone number to the same recipient phone "
    "number in a short period of time.",
    131047: "Message failed to send because more than 24 hours have passed since the customer "
    "last replied to this number.",
    131026: "Message failed to send because the recipient is not a WhatsApp user or has not "
    "accepted the latest terms of service.",
}
#: The HTTP status Meta answers with each code (any other code: 400).
STATUS: dict[int, int] = {
    0: 401, 190: 401, 3: 403, 10: 403, 4: 429, 80007: 429, 130429: 429, 131056: 429,
    1: 500, 131000: 500, 2: 503, 131016: 503, 131057: 503,
}  # fmt: skip


def graph_error(
    code: int,
    details: str | None = None,
    *,
    message: str | None = None,
    subcode: int | None = None,
) -> dict[str, Any]:
    """Meta's synchronous error body for ``code`` (``{"error": {...}}``)."""
    title = message or f"(#{code}) {_TITLES.get(code, 'Error')}"
    error: dict[str, Any] = {"message": title, "type": "OAuthException", "code": code}
    if code not in (0, 190) or details is not None:
        error["error_data"] = {
            "messaging_product": "whatsapp",
            "details": details or _DETAILS.get(code, _TITLES.get(code, "Error")),
        }
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(15)
    return {"error": error}


class Reject(Exception):
    """A check refused the call: answer Graph error ``code`` (HTTP ``status``)."""

    def __init__(self, code: int, details: str | None = None, status: int | None = None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.status = status if status is not None else STATUS.get(code, 400)


def status_for(code: int | None, http_status: int | None = None) -> int:
    """The HTTP status of an injected fault: ``http_status``, else Meta's for ``code``
    (400 when Meta has none), else 502 for a non-Graph error page (``code=None``)."""
    return http_status or (STATUS.get(code, 400) if code is not None else 502)
