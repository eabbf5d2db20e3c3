"""The content objects of outbound messages, built from the Sender's arguments.

Each function returns the object that goes under the message's type in the Cloud API body
(``{"type": "interactive", "interactive": <this>}``, reference/cloud_api.md §8) and raises
ValueError or TypeError for arguments that cannot make one. No I/O and no state: the
:class:`~wa_agent.sender.Sender` wraps the object in the envelope (recipient, type, quoted
message) and sends it. The Meta limits themselves (title lengths, counts) are checked by the
Cloud API, and by the emulator in tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "contact_cards",
    "cta_url",
    "list_message",
    "location",
    "media_object",
    "media_reference",
    "reaction",
    "read_receipt",
    "reply_buttons",
    "template",
]

_LINK = re.compile(r"https?://", re.IGNORECASE)


# --------------------------------------------------------------------------- media


def media_reference(media: str) -> dict[str, Any]:
    """The media object of a message that names its media: ``{"link": ...}`` for an
    http(s) URL, ``{"id": ...}`` for a media id; anything else raises ValueError."""
    if _LINK.match(media):
        return {"link": media}
    if not media or any(c.isspace() for c in media) or "/" in media or "\\" in media:
        raise ValueError(
            f"{media!r} is neither a media id nor an http(s) link; pass a pathlib.Path for a file"
        )
    return {"id": media}


def media_object(
    content: dict[str, Any],
    kind: str,
    *,
    caption: str | None,
    filename: str | None,
    voice: bool | None,
) -> dict[str, Any]:
    """Complete a media object (``{"id"}`` or ``{"link"}``) with the voice flag, the
    caption and a document's file name; returns ``content``."""
    if voice:
        content["voice"] = True
    if caption is not None:
        content["caption"] = caption
    if filename is not None and kind == "document":
        content["filename"] = filename
    return content


# --------------------------------------------------------------------------- plain


def reaction(message_id: str, emoji: str) -> dict[str, Any]:
    """A reaction to ``message_id`` (``""`` removes one)."""
    if not message_id:
        raise ValueError("send_reaction needs the message_id of the message to react to")
    return {"message_id": message_id, "emoji": emoji}


def location(
    latitude: float, longitude: float, name: str | None, address: str | None
) -> dict[str, Any]:
    """A location pin; ``name``/``address`` label a place."""
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise ValueError(f"({latitude}, {longitude}) is not a latitude/longitude pair")
    content: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if name is not None:
        content["name"] = name
    if address is not None:
        content["address"] = address
    return content


def contact_cards(contacts: Sequence[Any]) -> list[dict[str, Any]]:
    """Contact cards from :class:`~wa_agent.Contact` values, received
    :class:`~wa_agent.SharedContact` values, names, or card dicts in Meta's shape."""
    from .agents import Contact, _contact

    cards: list[dict[str, Any]] = []
    for contact in contacts:
        if isinstance(contact, Mapping) and isinstance(contact.get("name"), Mapping):
            cards.append(dict(contact))
        else:
            card = contact if isinstance(contact, Contact) else _contact(contact)
            cards.append(card.to_card())
    if not cards:
        raise ValueError("send_contacts needs at least one contact")
    return cards


def template(
    name: str, language: str, components: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """An approved template by name and language code, with its components."""
    content: dict[str, Any] = {"name": name, "language": {"code": language}}
    if components is not None:
        content["components"] = [dict(c) for c in components]
    return content


def read_receipt(message_id: str, typing: bool) -> dict[str, Any]:
    """The whole body that marks ``message_id`` read (and shows the typing indicator)."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": message_id,
    }
    if typing:
        payload["typing_indicator"] = {"type": "text"}
    return payload


# --------------------------------------------------------------------------- interactive


def reply_buttons(
    body: str,
    buttons: Sequence[tuple[str, str] | Mapping[str, Any] | str],
    header: str | Mapping[str, Any] | None,
    footer: str | None,
) -> dict[str, Any]:
    """Reply buttons under ``body``: each ``(id, title)``, a dict, or a bare title."""
    interactive: dict[str, Any] = {
        "type": "button",
        "body": {"text": body},
        "action": {"buttons": [_button(b) for b in buttons]},
    }
    return _decorate(interactive, header, footer)


def list_message(
    body: str,
    button: str,
    sections: Sequence[Mapping[str, Any] | tuple[str, ...]],
    header: str | None,
    footer: str | None,
) -> dict[str, Any]:
    """A list message: sections of rows, or a flat list of rows for one section."""
    interactive: dict[str, Any] = {
        "type": "list",
        "body": {"text": body},
        "action": {"button": button, "sections": _sections(sections)},
    }
    return _decorate(interactive, header, footer)


def cta_url(
    body: str,
    label: str,
    url: str,
    header: str | Mapping[str, Any] | None,
    footer: str | None,
) -> dict[str, Any]:
    """A call-to-action button labelled ``label`` that opens ``url``."""
    interactive: dict[str, Any] = {
        "type": "cta_url",
        "body": {"text": body},
        "action": {"name": "cta_url", "parameters": {"display_text": label, "url": url}},
    }
    return _decorate(interactive, header, footer)


def _button(button: tuple[str, str] | Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(button, str):
        return {"type": "reply", "reply": {"id": button, "title": button}}
    if isinstance(button, Mapping):
        if "reply" in button:
            return {"type": "reply", "reply": dict(button["reply"])}
        return {"type": "reply", "reply": {"id": button["id"], "title": button["title"]}}
    button_id, title = button
    return {"type": "reply", "reply": {"id": button_id, "title": title}}


def _row(row: tuple[str, ...] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    if len(row) == 2:
        return {"id": row[0], "title": row[1]}
    if len(row) == 3:
        return {"id": row[0], "title": row[1], "description": row[2]}
    raise ValueError(f"a list row is (id, title) or (id, title, description), got {row!r}")


def _sections(sections: Sequence[Mapping[str, Any] | tuple[str, ...]]) -> list[dict[str, Any]]:
    items: list[Any] = list(sections)
    if items and all(isinstance(s, tuple) or "id" in s for s in items):
        return [{"rows": [_row(r) for r in items]}]  # a flat list of rows
    result: list[dict[str, Any]] = []
    for section in items:
        if not isinstance(section, Mapping):
            raise TypeError("send_list(sections=...) mixes sections and rows")
        entry: dict[str, Any] = {k: v for k, v in section.items() if k != "rows"}
        entry["rows"] = [_row(r) for r in section.get("rows", [])]
        result.append(entry)
    return result


def _decorate(
    interactive: dict[str, Any], header: str | Mapping[str, Any] | None, footer: str | None
) -> dict[str, Any]:
    if header is not None:
        interactive["header"] = (
            {"type": "text", "text": header} if isinstance(header, str) else dict(header)
        )
    if footer is not None:
        interactive["footer"] = {"text": footer}
    return interactive
