"""Phone numbers and ids: the one place that says how WhatsApp numbers are written.

WhatsApp identifies a user by their number in international form, digits only, with no
``+`` and no ``00`` dialling prefix (``"4915123456789"``), or, for users who hide their
number, by a business-scoped user id (``"US.13491208655302741918"``). Every part of
wa_agent that compares, stores or sends to a number goes through :func:`normalize_number`.
"""

from __future__ import annotations

import re

__all__ = ["mask_number", "normalize_id", "normalize_number"]

_SEPARATORS = re.compile(r"[\s\-().+]")


def normalize_number(number: str | int) -> str:
    """International digits only: ``"+49 151-234 567"`` and ``"0049 151 234567"`` give
    ``"49151234567"``.

    Anything that is not a phone number once separators are removed (a business-scoped
    user id such as ``"US.1349…"``) is returned unchanged but stripped.
    """
    text = str(number).strip()
    digits = _SEPARATORS.sub("", text)
    if not digits.isdigit():
        return text
    digits = digits.removeprefix("00")
    return digits


def normalize_id(value: str | int | None, field: str) -> str | None:
    """A Graph object id (``phone_number_id``, a WABA id) as a string of digits.

    Ids are digits; an ``int`` is accepted and converted. A display number such as
    ``"+1 555 0100"`` is a common mistake for the phone number *id* and is refused with a
    :class:`ValueError` naming ``field``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{field} must be a string of digits, not {type(value).__name__}")
    text = str(value).strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit():
        hint = (
            " (that looks like a phone number: the id is a different, longer number "
            "shown under WhatsApp > API Setup in Meta's App Dashboard)"
            if _SEPARATORS.sub("", text).isdigit()
            else ""
        )
        raise ValueError(f"{field} must be the numeric id Meta gives, got {text!r}{hint}")
    return text


def mask_number(number: str | None) -> str:
    """A number for logs: enough to tell users apart, not enough to identify one."""
    if not number:
        return "…"
    return number[:3] + "…" + number[-2:] if len(number) > 6 else "…"
