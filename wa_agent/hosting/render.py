"""The words an agent is given and the words history keeps.

* :func:`render_text` — an inbound message as the request's text (locations, contacts,
  replies and orders readable, SPEC §4);
* :func:`history_text` — the user turn stored in CHAT history (a media-only message is
  named, never left empty); the assistant turn is :func:`wa_agent._rich.history_text`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..agents import Attachment
from ..events import MEDIA_TYPES, Message

__all__ = ["by_member", "history_text", "media_mark", "render_text"]


def history_text(text: str, attachments: Sequence[Attachment]) -> str:
    """A user turn for the history: media-only messages would otherwise leave an empty turn
    (which models drop), so each attachment is named: ``[image] my cat``."""
    marks = [media_mark(att.kind, att.voice, att.filename) for att in attachments]
    return " ".join([*marks, text] if text else marks)


def media_mark(kind: str, voice: bool, filename: str | None) -> str:
    """How the history names a medium: ``[image]``, ``[voice note]``, ``[document "a.pdf"]``."""
    label = "voice note" if voice else kind
    return f'[{label} "{filename}"]' if filename else f"[{label}]"


def by_member(message: Message, said: str) -> str:
    """``said`` with the name of the member who said it when ``message`` is in a group
    (unchanged otherwise)."""
    if message.group_id is None:
        return said
    return f"{message.profile_name or message.sender}: {said}"


def render_text(message: Message) -> str:
    """The message as text for the agent (SPEC §4: locations, contacts, replies readable)."""
    parts: list[str] = []
    mtype = message.type
    if mtype == "location" and message.location is not None:
        loc = message.location
        place = ", ".join(p for p in (loc.name, loc.address) if p)
        parts.append(
            f"[location: {loc.latitude:.6f}, {loc.longitude:.6f}"
            + (f" — {place}" if place else "")
            + "]"
        )
    elif mtype == "contacts":
        for card in message.contacts:
            phones = ", ".join(card.phones)
            parts.append(
                f"[contact: {card.formatted_name or 'unnamed'}"
                + (f", {phones}" if phones else "")
                + "]"
            )
    elif mtype == "interactive" and message.interactive is not None:
        inter = message.interactive
        if inter.type == "nfm_reply":
            parts.append(f"[form submitted: {json.dumps(inter.response or {})}]")
        else:
            title = (inter.title or "").strip() or f"[{inter.type}]"
            if inter.description:
                title += f" ({inter.description})"
            parts.append(title)
    elif mtype == "button" and message.button is not None:
        parts.append(message.button.text or message.button.payload or "[button]")
    elif mtype == "order" and message.order is not None:
        lines = [
            f"{i.quantity or 1} x {i.product_retailer_id} at {i.item_price} {i.currency}"
            for i in message.order.product_items
        ]
        parts.append("[order: " + "; ".join(lines) + "]")
        if message.order.text:
            parts.append(message.order.text)
    elif mtype == "reaction" and message.reaction is not None:
        parts.append(
            f"[reaction {message.reaction.emoji or 'removed'} to {message.reaction.message_id}]"
        )
    elif mtype in MEDIA_TYPES:
        if message.caption:
            parts.append(message.caption)
    elif mtype == "edit":
        parts.append("[edited an earlier message]" + (f" {message.text}" if message.text else ""))
    elif mtype == "revoke":
        parts.append("[deleted an earlier message]")
    elif message.text:
        parts.append(message.text)
    else:
        parts.append(f"[{mtype} message]")
    return "\n".join(parts)
