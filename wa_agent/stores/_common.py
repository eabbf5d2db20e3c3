"""Helpers shared by the store backends: status ranks, time and turn encoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ..agents import Turn

#: Delivery states in the order they may advance; ``failed`` is final (and outranks all).
STATUS_RANK: dict[str, int] = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 5}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def status_advances(current: str | None, new: str) -> bool:
    """Whether a message in state ``current`` may move to ``new``.

    Ranks only go up (sent < delivered < read < played); ``failed`` may follow any state but
    nothing follows it; an unknown ``new`` state never advances.
    """
    rank = STATUS_RANK.get(new)
    if rank is None:
        return False
    if current is None:
        return True
    if current == "failed":
        return False
    return rank > STATUS_RANK.get(current, 0)


def to_micros(at: datetime) -> int:
    """Exact microseconds since the epoch (a naive datetime is taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=micros)


def turn_to_dict(turn: Turn) -> dict[str, Any]:
    """A JSON-ready dict of a turn; ``at`` as ISO 8601 so it round-trips exactly."""
    return {
        "role": turn.role,
        "text": turn.text,
        "at": turn.at.isoformat() if turn.at is not None else None,
        "message_id": turn.message_id,
    }


def turn_to_json(turn: Turn) -> str:
    """Compact JSON of :func:`turn_to_dict`."""
    return json.dumps(turn_to_dict(turn), ensure_ascii=False, separators=(",", ":"))


def turn_from_dict(data: dict[str, Any]) -> Turn:
    """Inverse of :func:`turn_to_dict`."""
    at = data.get("at")
    return Turn(
        role=data["role"],
        text=data["text"],
        at=datetime.fromisoformat(at) if at else None,
        message_id=data.get("message_id"),
    )


def turn_from_json(raw: str | bytes) -> Turn:
    """Inverse of :func:`turn_to_json`."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError("a stored history turn is not a JSON object")
    return turn_from_dict(data)


def check_ttl(name: str, value: float) -> float:
    """Validate a positive duration in seconds."""
    value = float(value)
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return value
