"""How an acknowledged message is kept in the durable inbox, and read back.

An inbox item's ``payload`` is either the compact record :func:`dump_message` writes for a
parsed message (``{"m": <the message as Meta sent it>, "p": phone_number_id, "d": display
number, "n": profile name}``), or, for a body taken by the fast path, the whole webhook
body as it arrived (:func:`lone_text_message` decides which bodies qualify). Either way
:func:`load_message` gives back the same :class:`~wa_agent.Message` the full parser gives.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json

from ..events import Message
from ..exceptions import InvalidPayload, StoreError
from ..parser import MessageParser, _too_deep

__all__ = ["dump_message", "load_message", "lone_text_message"]

_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps builds one per call


def dump_message(message: Message) -> str:
    return _COMPACT.encode(
        {
            "m": message.raw,
            "p": message.phone_number_id,
            "d": message.display_phone_number,
            "n": message.profile_name,
        }
    )


def _read_json(body: bytes) -> Any:
    # Key strings cached, values not: every wamid and sender is new (pydantic-core >= 2.18;
    # older ones cache everything).
    return from_json(body, cache_strings="keys")


try:
    _read_json(b"{}")
except TypeError:  # pragma: no cover - an older pydantic-core
    _read_json = from_json  # type: ignore[assignment]


def lone_text_message(body: bytes, max_depth: int) -> tuple[str, str, str | None] | None:
    """``(wamid, sender, phone_number_id)`` when ``body`` is a webhook holding exactly one
    text message and nothing else, shaped so that :class:`MessageParser` reads it as that
    one valid text message; ``None`` for anything else (the full parse decides those). Uses
    pydantic-core's JSON reader (twice as fast as ``json.loads``; it refuses what the two
    could read differently: lone surrogates, out-of-range numbers, non-UTF-8)."""
    if _too_deep(body, max_depth):
        return None
    try:
        # pydantic-core's reader refuses lone surrogates (json.loads would let them through
        # and the parser scrub them): no pre-scan for them is needed here.
        data = _read_json(body)
        # Indexing and one-item unpacking refuse every other shape at once: a list, string
        # or number where an object is needed raises TypeError, a missing key LookupError,
        # not exactly one entry / change / message ValueError (JSON has no other sequences).
        (entry,) = data["entry"]
        (change,) = entry["changes"]
        value = change["value"]
        (item,) = value["messages"]
        text = item["text"]["body"]
        wamid, sender, stamp = item["id"], item["from"], item["timestamp"]
        metadata = value.get("metadata")
        if (
            data["object"] != "whatsapp_business_account"
            or change["field"] != "messages"
            or "statuses" in value
            or "errors" in value
            or "errors" in item
            or "group_id" in item
            or item["type"] != "text"
            or type(data["entry"]) is not list
        ):
            return None
    except (ValueError, LookupError, TypeError, AttributeError):
        return None
    pnid = metadata.get("phone_number_id") if type(metadata) is dict else None
    if (
        (pnid is not None and type(pnid) is not str)
        or type(wamid) is not str
        or not wamid
        or type(sender) is not str
        or not sender
        or type(text) is not str
        or type(stamp) is not str
        or not (stamp.isascii() and stamp.isdigit() and 9 <= len(stamp) <= 11)
    ):
        return None
    return wamid, sender, pnid


def load_message(payload: str, wamid: str, parser: MessageParser) -> Message:
    """The message an inbox payload holds: the compact record of :func:`dump_message`, or
    the whole webhook body it came in (the fast path), read by the full parser."""
    if not payload.startswith('{"m":'):
        try:
            events = parser.parse(payload)
        except InvalidPayload:
            events = []
        for event in events:
            if isinstance(event, Message) and event.id == wamid:
                return event
        raise StoreError("an inbox item could not be read back as a message")
    data = json.loads(payload)
    contacts = []
    if data.get("n") is not None:
        raw = data["m"]
        contacts.append(
            {
                "profile": {"name": data["n"]},
                "wa_id": raw.get("from") or "",
                "user_id": raw.get("from_user_id"),
            }
        )
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {
                                "phone_number_id": data.get("p"),
                                "display_phone_number": data.get("d"),
                            },
                            "contacts": contacts,
                            "messages": [data["m"]],
                        },
                    }
                ],
            }
        ],
    }
    events = parser.parse(body)
    message = events[0] if events else None
    if not isinstance(message, Message):
        raise StoreError("an inbox item could not be read back as a message")
    return message
