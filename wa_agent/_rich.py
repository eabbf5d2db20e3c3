"""Rich replies as sendable parts: the seam between an :class:`~wa_agent.AgentReply` and the
Sender.

A reply is sent as a list of *parts*, one WhatsApp message each, stored (JSON) in the durable
inbox as the reply's progress so a restart resends only what was not accepted yet. The
hosting layer builds the text and media parts (it uploads media first); this module adds the
parts of the rich fields and puts everything in order:

1. the ``reaction`` (on the user's message; it never quotes);
2. the text chunks, except the one an interactive message carries;
3. images and files, as the hosting layer made them;
4. the ``audio`` (marked as a voice note when it is OGG/Opus);
5. the ``location``, then the ``contacts``;
6. the ``link_button`` (interactive ``cta_url``);
7. the choices: reply buttons or a list message, last, so they are at the bottom of the chat.

WhatsApp's interactive messages need a body, so the reply's text *is* that body: text plus
buttons is one message, not two. The last text chunk (at most 1024 characters, the body limit;
a longer one is split and only its tail is carried) becomes the body of the choices, or of the
link button when there are no choices. Without text, choices get ``"Please choose:"`` and a
link button the link's host as their body.

Part shapes (every value JSON-serialisable)::

    {"type": "reaction", "emoji": "👍"}
    {"type": "buttons", "body": str, "buttons": [{"id": str, "title": str}, ...]}
    {"type": "list", "body": str, "button": str,
     "rows": [{"id": str, "title": str, "description"?: str}, ...]}
    {"type": "cta_url", "body": str, "label": str, "url": str}
    {"type": "location", "latitude": float, "longitude": float, "name": str|None,
     "address": str|None}
    {"type": "contacts", "contacts": [<Meta contact card>, ...]}
    {"type": "audio", "id"|"link": str, "voice": bool, ...}  # the hosting layer's media part
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from .agents import AgentReply, Contact, LinkButton
from .events import Location
from .text import split_text

if TYPE_CHECKING:
    from .events import Message
    from .sender import Sender

__all__ = [
    "BODY_MAX",
    "DEFAULT_CHOICE_BODY",
    "RICH_TYPES",
    "can_quote",
    "describe_part",
    "history_text",
    "merge_parts",
    "rich_parts",
    "send_rich_part",
    "text_and_choice",
]

logger = logging.getLogger(__name__)

#: Part types sent by :func:`send_rich_part` (the hosting layer sends text and other media).
RICH_TYPES: Final = frozenset(
    {"reaction", "buttons", "list", "cta_url", "location", "contacts", "audio"}
)
#: Characters in the body of an interactive message.
BODY_MAX: Final = 1024
#: The body of choices sent without any text.
DEFAULT_CHOICE_BODY: Final = "Please choose:"

_INTERACTIVE = ("buttons", "list", "cta_url")


def rich_parts(reply: AgentReply) -> list[dict[str, Any]]:
    """The parts of ``reply``'s rich fields alone (no text, images, files or audio), in the
    order they are sent, with the default bodies; see :func:`merge_parts` to combine them
    with the text and media parts."""
    return merge_parts(reply, [])


def merge_parts(reply: AgentReply, parts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The complete, ordered part list of ``reply`` (see the module docstring).

    ``parts`` are the hosting layer's text parts (``{"type": "text", "text": ...}``, Markdown
    already converted and split) and media parts (images, files, and the ``audio`` part of
    ``reply.audio`` uploaded like any media). Audio parts gain ``"voice"`` (OGG/Opus); the
    last text chunk moves into the interactive message when there is one. ``parts`` is not
    modified.
    """
    from .sender import is_voice_note

    texts = [dict(p) for p in parts if p.get("type") == "text"]
    media = [dict(p) for p in parts if p.get("type") not in ("text", "audio")]
    audio = [dict(p) for p in parts if p.get("type") == "audio"]
    for part in audio:
        if "voice" not in part:
            part["voice"] = is_voice_note(b"", part.get("mime_type")) or str(
                part.get("link") or ""
            ).lower().split("?", 1)[0].endswith((".ogg", ".opus"))

    interactive: list[dict[str, Any]] = []
    link = reply.link_button
    if isinstance(link, LinkButton):  # AgentReply normalised it
        interactive.append({"type": "cta_url", "body": None, "label": link.label, "url": link.url})
    choices = reply.choices
    if choices:
        if reply.choice_style == "buttons":
            interactive.append(
                {
                    "type": "buttons",
                    "body": None,
                    "buttons": [{"id": c.id, "title": c.title} for c in choices],
                }
            )
        else:
            rows = []
            for c in choices:
                row = {"id": c.id, "title": c.title}
                if c.description:
                    row["description"] = c.description
                rows.append(row)
            interactive.append(
                {"type": "list", "body": None, "button": reply.list_button, "rows": rows}
            )
    if interactive and texts:
        # The last interactive message (choices, else the link button) carries the text.
        last = texts.pop()["text"]
        pieces = split_text(last, BODY_MAX) if len(last) > BODY_MAX else [last]
        texts.extend({"type": "text", "text": piece} for piece in pieces[:-1])
        interactive[-1]["body"] = pieces[-1]
    for part in interactive:
        if part["body"] is None:
            part["body"] = (
                DEFAULT_CHOICE_BODY
                if part["type"] != "cta_url"
                else urlsplit(part["url"]).hostname or part["label"]
            )

    merged: list[dict[str, Any]] = []
    if reply.reaction:
        merged.append({"type": "reaction", "emoji": reply.reaction})
    merged.extend(texts)
    merged.extend(media)
    merged.extend(audio)
    loc = reply.location
    if isinstance(loc, Location):  # AgentReply normalised it
        merged.append(
            {
                "type": "location",
                "latitude": loc.latitude,
                "longitude": loc.longitude,
                "name": loc.name,
                "address": loc.address,
            }
        )
    if reply.contacts:
        cards = [c.to_card() for c in reply.contacts if isinstance(c, Contact)]
        merged.append({"type": "contacts", "contacts": cards})
    merged.extend(interactive)
    return merged


def can_quote(part: dict[str, Any]) -> bool:
    """Whether a part can quote the user's message (``context``): all but reactions. The
    hosting layer quotes the first part that can."""
    return part.get("type") != "reaction"


async def send_rich_part(
    sender: Sender,
    to: str,
    part: dict[str, Any],
    *,
    reply_to: str | None = None,
    answering: str | None = None,
) -> str | None:
    """Send one rich part (a type in :data:`RICH_TYPES`); returns its wamid.

    ``reply_to`` quotes a message; ``answering`` is the wamid of the user's message being
    answered, the target of a reaction. A reaction with nothing to react to (a heartbeat, a
    greeting) is skipped and ``None`` returned. Sender errors propagate unchanged, so the
    caller's retry and progress rules apply as for text.
    """
    kind = part.get("type")
    if kind == "reaction":
        if not answering:
            logger.debug("reaction %s skipped: no user message to react to", part.get("emoji"))
            return None
        return await sender.send_reaction(to, answering, str(part["emoji"]))
    if kind == "buttons":
        return await sender.send_buttons(
            to, part["body"], [(b["id"], b["title"]) for b in part["buttons"]], reply_to=reply_to
        )
    if kind == "list":
        rows = [
            (r["id"], r["title"], r["description"])
            if r.get("description")
            else (r["id"], r["title"])
            for r in part["rows"]
        ]
        return await sender.send_list(to, part["body"], part["button"], rows, reply_to=reply_to)
    if kind == "cta_url":
        return await sender.send_cta_url(
            to, part["body"], part["label"], part["url"], reply_to=reply_to
        )
    if kind == "location":
        return await sender.send_location(
            to,
            part["latitude"],
            part["longitude"],
            name=part.get("name"),
            address=part.get("address"),
            reply_to=reply_to,
        )
    if kind == "contacts":
        return await sender.send_contacts(to, part["contacts"], reply_to=reply_to)
    if kind == "audio":
        media = part.get("id") or part.get("link")
        if not media:
            raise ValueError("an audio part needs an 'id' or a 'link'")
        return await sender.send_audio(to, media, reply_to=reply_to, voice=bool(part.get("voice")))
    raise ValueError(f"{kind!r} is not a rich part type (one of {sorted(RICH_TYPES)})")


def describe_part(part: dict[str, Any]) -> str:
    """A part as readable text, for conversation history, widgets and logs."""
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text", ""))
    if kind == "reaction":
        return f"[reacted {part.get('emoji')}]"
    if kind == "buttons":
        return f"{part.get('body')}\n" + " ".join(f"[{b['title']}]" for b in part["buttons"])
    if kind == "list":
        rows = " | ".join(r["title"] for r in part["rows"])
        return f"{part.get('body')}\n[{part.get('button')}: {rows}]"
    if kind == "cta_url":
        return f"{part.get('body')}\n[{part.get('label')}: {part.get('url')}]"
    if kind == "location":
        place = ", ".join(p for p in (part.get("name"), part.get("address")) if p)
        return (
            f"[location: {part['latitude']:.6f}, {part['longitude']:.6f}"
            + (f" — {place}" if place else "")
            + "]"
        )
    if kind == "contacts":
        names = []
        for card in part.get("contacts", []):
            phones = ", ".join(p.get("phone", "") for p in card.get("phones", []))
            names.append(
                card.get("name", {}).get("formatted_name", "contact")
                + (f" ({phones})" if phones else "")
            )
        return f"[contact: {'; '.join(names)}]"
    if kind == "audio":
        return "[voice note]" if part.get("voice") else "[audio]"
    caption = part.get("caption")
    return f"[{kind}]" + (f" {caption}" if caption else "")


def history_text(reply: AgentReply) -> str:
    """The assistant turn a reply leaves in the history: its text plus what else was sent,
    readably (``"Pick one\\n[choices: Yes | No]"``, ``"[reacted 👍]"``...)."""
    lines: list[str] = []
    if reply.reaction:
        lines.append(f"[reacted {reply.reaction}]")
    if reply.text and reply.text.strip():
        lines.append(reply.text)
    sent = [
        f"{len(items)} {kind}{'s' if len(items) > 1 else ''}"
        for kind, items in (("image", reply.images), ("file", reply.files))
        if items
    ]
    if reply.audio is not None:
        sent.append("audio")
    if sent:
        lines.append(f"[sent {' and '.join(sent)}]")
    for part in rich_parts(reply):
        if part["type"] in ("location", "contacts"):
            lines.append(describe_part(part))
    if isinstance(reply.link_button, LinkButton):
        lines.append(f"[link: {reply.link_button.label} {reply.link_button.url}]")
    if reply.choices:
        lines.append("[choices: " + " | ".join(c.title for c in reply.choices) + "]")
    return "\n".join(lines)


def text_and_choice(message: Message, text: str) -> tuple[str, str | None]:
    """``(text, choice)`` for an :class:`~wa_agent.AgentRequest` made from ``message``.

    A tapped reply button or list row gives its title as the text and its id as the choice;
    a template's quick-reply button its text and payload. Any other message keeps ``text``
    (the hosting layer's rendering of it) and no choice.
    """
    choice = message.choice
    if choice is None:
        return text, None
    title = message.choice_title
    return (title if title is not None else text), choice
