"""A string that never shows itself in ``repr``, ``str``, logs or tracebacks."""

from __future__ import annotations

import hmac
from typing import final

__all__ = ["Secret", "reveal"]


@final
class Secret:
    """Wraps a credential (verify token, app secret, access token, API key).

    ``repr()`` and ``str()`` are masked; :meth:`reveal` gives the value where it is used.
    Equality with another ``Secret`` or a ``str`` is compared in constant time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else str(value)

    def reveal(self) -> str:
        """Return the wrapped value. Only call this where the credential is sent or checked."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other = other._value
        if not isinstance(other, str):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


def reveal(value: str | Secret | None) -> str | None:
    """Return the plain value of a ``Secret`` (or the string itself)."""
    if value is None:
        return None
    return value.reveal() if isinstance(value, Secret) else value
