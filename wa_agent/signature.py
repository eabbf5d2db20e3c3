"""Verify Meta's ``X-Hub-Signature-256`` header over the exact raw request bytes."""

from __future__ import annotations

import hashlib
import hmac
import string
from typing import final

from .exceptions import InvalidSignature
from .secret import Secret

__all__ = ["SIGNATURE_HEADER", "SignatureVerifier"]

SIGNATURE_HEADER = "x-hub-signature-256"
_PREFIX = "sha256="
_HEX = frozenset(string.hexdigits)


@final
class SignatureVerifier:
    """Checks that a webhook body was signed by Meta with the app secret.

    The HMAC-SHA256 is computed over the raw bytes as received, never over re-serialised
    JSON: Meta signs its escaped-unicode form (``\\u00e4``), which a parse/dump round trip
    changes. The comparison is constant-time.

    >>> v = SignatureVerifier("app-secret")
    >>> v.verify(b"{}", v.sign(b"{}"))  # no exception: valid
    """

    __slots__ = ("_key",)

    def __init__(self, app_secret: str | Secret) -> None:
        value = app_secret.reveal() if isinstance(app_secret, Secret) else app_secret
        if not value:
            raise ValueError("SignatureVerifier needs a non-empty app secret")
        self._key = value.encode()

    def sign(self, body: bytes) -> str:
        """The header value Meta would send for ``body``: ``sha256=<lowercase hex>``."""
        return _PREFIX + hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def is_valid(self, body: bytes, header: str | None) -> bool:
        """``True`` if ``header`` is a valid signature of ``body``."""
        if not header:
            return False
        header = header.strip()
        if header[:7].lower() != _PREFIX:
            return False
        given = header[7:].lower()
        if len(given) != 64:
            return False
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), given.encode("ascii", "replace"))

    def verify(self, body: bytes, header: str | None) -> None:
        """Raise :class:`~wa_agent.InvalidSignature` unless ``header`` signs ``body``.

        The message says what is wrong: missing header, wrong format, or mismatch.
        """
        if not header:
            raise InvalidSignature(
                "missing X-Hub-Signature-256 header: the request was not signed by Meta"
            )
        stripped = header.strip()
        if (stripped[:7].lower() != _PREFIX or len(stripped) != 71
                or not _HEX.issuperset(stripped[7:])):
            raise InvalidSignature(
                "malformed X-Hub-Signature-256 header: expected 'sha256=' and 64 hex digits"
            )
        if not self.is_valid(body, stripped):
            raise InvalidSignature(
                "X-Hub-Signature-256 does not match the body: check the app secret "
                "(App Dashboard > App settings > Basic) and that the raw bytes are verified"
            )

    def __repr__(self) -> str:
        return "SignatureVerifier(app_secret=Secret('**********'))"
