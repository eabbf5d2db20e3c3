"""Build webhook bodies exactly as Meta shapes them (reference: cloud_api.md §5–7).

Each ``*_message`` function returns one ``messages[]`` item; :func:`envelope` wraps items in
the ``whatsapp_business_account`` envelope and :func:`encode` serialises it the way Meta
does (compact JSON, non-ASCII as ``\\uXXXX`` escapes) so signatures match byte for byte.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "button_reply_message",
    "contacts_message",
    "encode",
    "envelope",
    "interactive_reply_message",
    "location_message",
    "media_message",
    "new_wamid",
    "reaction_message",
    "status_item",
    "text_message",
]


def new_wamid() -> str:
    """A fresh message id shaped like Meta's (``wamid.`` + base64)."""
    return "wamid." + base64.b64encode(b"\x08\x01\x12" + os.urandom(24)).decode().rstrip("=")


def _now() -> str:
    return str(int(time.time()))


def _base(
    sender: str,
    mtype: str,
    wamid: str | None,
    timestamp: int | str | None,
    context: dict[str, Any] | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "from": sender,
        "id": wamid or new_wamid(),
        "timestamp": str(timestamp) if timestamp is not None else _now(),
        "type": mtype,
    }
    if context:
        item["context"] = context
    return item


def text_message(
    sender: str,
    text: str,
    *,
    wamid: str | None = None,
    timestamp: int | str | None = None,
    context: dict[str, Any] | None = None,
    group_id: str | None = None,
) -> dict[str, Any]:
    """A ``text`` message item; with ``group_id``, written in that group (``sender`` is
    the participant), as Meta's group messaging sends it."""
    item = _base(sender, "text", wamid, timestamp, context)
    item["text"] = {"body": text}
    if group_id is not None:
        item["group_id"] = group_id
    return item


def media_message(
    sender: str,
    kind: str,
    media_id: str,
    mime_type: str,
    *,
    sha256: str | None = None,
    caption: str | None = None,
    filename: str | None = None,
    voice: bool | None = None,
    animated: bool | None = None,
    wamid: str | None = None,
    timestamp: int | str | None = None,
) -> dict[str, Any]:
    """An image/video/audio/document/sticker message item referring to ``media_id``."""
    obj: dict[str, Any] = {
        "id": media_id,
        "mime_type": mime_type,
        "sha256": sha256 or base64.b64encode(os.urandom(32)).decode(),
    }
    if caption is not None and kind in ("image", "video", "document"):
        obj["caption"] = caption
    if filename is not None and kind == "document":
        obj["filename"] = filename
    if kind == "audio":
        obj["voice"] = bool(voice)
    if kind == "sticker":
        obj["animated"] = bool(animated)
    item = _base(sender, kind, wamid, timestamp, None)
    item[kind] = obj
    return item


def location_message(
    sender: str,
    latitude: float,
    longitude: float,
    *,
    name: str | None = None,
    address: str | None = None,
    wamid: str | None = None,
) -> dict[str, Any]:
    """A ``location`` message item (``name``/``address`` only for a chosen place)."""
    loc: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if name:
        loc["name"] = name
    if address:
        loc["address"] = address
    item = _base(sender, "location", wamid, None, None)
    item["location"] = loc
    return item


def interactive_reply_message(
    sender: str,
    reply_id: str,
    title: str,
    *,
    kind: str = "button_reply",
    description: str | None = None,
    context_id: str | None = None,
    business_number: str = "",
    wamid: str | None = None,
) -> dict[str, Any]:
    """A tap on a reply button (``button_reply``) or a list row (``list_reply``)."""
    reply: dict[str, Any] = {"id": reply_id, "title": title}
    if description is not None and kind == "list_reply":
        reply["description"] = description
    context = {"from": business_number, "id": context_id} if context_id else None
    item = _base(sender, "interactive", wamid, None, context)
    item["interactive"] = {"type": kind, kind: reply}
    return item


def button_reply_message(
    sender: str,
    text: str,
    payload: str,
    *,
    context_id: str | None = None,
    business_number: str = "",
    wamid: str | None = None,
) -> dict[str, Any]:
    """A quick-reply button tapped on a template (``type: button``)."""
    context = {"from": business_number, "id": context_id} if context_id else None
    item = _base(sender, "button", wamid, None, context)
    item["button"] = {"payload": payload, "text": text}
    return item


def reaction_message(
    sender: str, message_id: str, emoji: str | None, *, wamid: str | None = None
) -> dict[str, Any]:
    """A reaction to ``message_id``; ``emoji=None`` removes it (Meta omits the key)."""
    reaction: dict[str, Any] = {"message_id": message_id}
    if emoji:
        reaction["emoji"] = emoji
    item = _base(sender, "reaction", wamid, None, None)
    item["reaction"] = reaction
    return item


def contacts_message(
    sender: str, name: str, phones: Sequence[str], *, wamid: str | None = None
) -> dict[str, Any]:
    """A shared contact card."""
    item = _base(sender, "contacts", wamid, None, None)
    item["contacts"] = [
        {
            "name": {"formatted_name": name, "first_name": name.split(" ")[0]},
            "phones": [{"phone": p, "type": "CELL"} for p in phones],
        }
    ]
    return item


def status_item(
    wamid: str,
    status: str,
    recipient: str,
    *,
    timestamp: int | str | None = None,
    errors: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``statuses[]`` item (``sent``/``delivered``/``read``/``played``/``failed``)."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp) if timestamp is not None else _now(),
        "recipient_id": recipient,
    }
    if status in ("sent", "delivered", "read"):
        item["pricing"] = {
            "billable": True,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
    if errors:
        item["errors"] = list(errors)
    return item


def envelope(
    *,
    messages: Sequence[dict[str, Any]] = (),
    statuses: Sequence[dict[str, Any]] = (),
    profiles: dict[str, str] | None = None,
    phone_number_id: str = "100000000000001",
    display_phone_number: str = "15550000000",
    waba_id: str = "200000000000001",
) -> dict[str, Any]:
    """Wrap message and status items in one webhook body (one entry, one change).

    ``profiles`` maps sender numbers to profile names (``value.contacts``); by default
    every message sender gets a profile named after their number.
    """
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    if messages:
        if profiles is None:
            profiles = {m["from"]: f"User {m['from'][-4:]}" for m in messages if m.get("from")}
        value["contacts"] = [
            {"profile": {"name": name}, "wa_id": number} for number, name in profiles.items()
        ]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}],
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise like Meta: compact, ASCII-only with ``\\uXXXX`` escapes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
