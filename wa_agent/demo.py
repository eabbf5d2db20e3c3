"""The built-in offline demo agent: useful answers with no API key and no network.

It says what it received (text, media type and size, location, contacts, button taps),
keeps a per-sender turn count in CHAT mode, and sends an image back when asked
("send me a picture"). It also shows what a WhatsApp reply can be: "menu" answers with reply
buttons, "times" with a list, "where" with a location, "contact" with a contact card, "link"
with a link button, "thanks" with a reaction; a voice note is echoed as its transcript when
the interface has a transcriber. It is what ``wa-agent demo`` runs when no ``--agent`` is
given.

It decides from structured fields: what arrived is ``request.attachments``, what did not
(a failed download) is in ``request.notes``, the message's kind and media reference are on
``request.message``; ``request.text`` holds only the user's own words (or a voice note's
transcript, or a tapped choice's title).
"""

from __future__ import annotations

import struct
import zlib

from .agents import AgentReply, AgentRequest, Choice, Contact, LinkButton, Media
from .events import Location

__all__ = ["DemoAgent", "make_png"]


def make_png(
    width: int = 64, height: int = 64, rgb: tuple[int, int, int] = (37, 211, 102)
) -> bytes:
    """A small solid-colour PNG (WhatsApp green by default), built with the stdlib."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * width
    raw = row * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


class DemoAgent:
    """An agent that needs no model: it describes what it got and can send a picture."""

    name = "wa_agent demo"
    greeting = "Greet the user after a reset."

    async def answer(self, request: AgentRequest) -> AgentReply:
        if request.purpose == "greeting":
            return AgentReply(
                text="Fresh start! Send me text, a photo, a document or a "
                "location and I'll tell you what I received."
            )
        if request.purpose == "heartbeat":
            return AgentReply(text="Just checking in: I'm still here.")
        lines: list[str] = []
        for attachment in request.attachments:
            what = "voice note" if attachment.voice else attachment.kind
            line = f"Got your {what}: {attachment.mime_type}, {_size(len(attachment.data))}"
            if attachment.filename:
                line += f", named {attachment.filename}"
            if attachment.caption:
                line += f', caption "{attachment.caption}"'
            lines.append(line + ".")
        message = request.message
        text = request.text.strip()
        plain = message is None or message.type == "text"
        if text and any(a.voice for a in request.attachments):
            lines.append(f'I heard: "{text}"')  # the transcript (with a transcriber)
        feature = self._feature(text.lower()) if text and plain else None
        if feature is not None:
            return feature
        if message is not None and message.media is not None and not request.attachments:
            why = f" ({request.notes[0]})" if request.notes else ""
            lines.append(
                f"Your {message.type} did not reach me{why}, so I cannot tell you "
                "what it is. Please send it again."
            )
        elif message is not None and message.location is not None:
            loc = message.location
            place = f" ({loc.name})" if loc.name else ""
            lines.append(f"You are at {loc.latitude:.4f}, {loc.longitude:.4f}{place}.")
        elif message is not None and message.type == "interactive" and message.interactive:
            lines.append(f"You tapped: {message.interactive.title or message.interactive.id}.")
        elif message is not None and message.type == "button" and message.button:
            lines.append(f"You tapped: {message.button.text or message.button.payload}.")
        elif message is not None and message.contacts:
            names = ", ".join(card.formatted_name or "a contact" for card in message.contacts)
            lines.append(
                f"You shared {len(message.contacts)} contact"
                f"{'s' if len(message.contacts) != 1 else ''}: {names}."
            )
        elif text and not request.attachments and plain:
            lowered = text.lower()
            if any(word in lowered for word in ("picture", "image", "photo")):
                return AgentReply(
                    text="Here is a picture for you.",
                    images=[
                        Media(
                            data=make_png(),
                            mime_type="image/png",
                            filename="green.png",
                            caption="A green square",
                        )
                    ],
                )
            if lowered in ("hi", "hello", "hey", "hola", "hallo"):
                who = request.profile_name or "there"
                lines.append(
                    f"Hello {who}! I'm the wa_agent demo bot. Send me text, a photo, "
                    "a document or a location, or ask me for a picture."
                )
            else:
                words = len(text.split())
                lines.append(
                    f'You said: "{text}" ({words} word{"s" if words != 1 else ""}, '
                    f"{len(text)} characters)."
                )
        if request.history:
            turns = sum(1 for t in request.history if t.role == "user")
            lines.append(
                f"(We have talked {turns} time{'s' if turns != 1 else ''} before; "
                "send /reset to start over.)"
            )
        if not lines:
            lines.append(f"I received a {message.type if message else 'message'} message.")
        return AgentReply(text="\n".join(lines))

    @staticmethod
    def _feature(lowered: str) -> AgentReply | None:
        """The rich reply a keyword asks for, if it is one."""
        if lowered == "menu":
            return AgentReply(
                text="What would you like?",
                buttons=[("coffee", "☕ Coffee"), ("tea", "🍵 Tea"), ("water", "💧 Water")],
            )
        if lowered in ("times", "list"):
            return AgentReply(
                text="When shall we meet?",
                list_button="Pick a time",
                buttons=[
                    Choice(f"slot-{h}", f"{h}:00", "free" if h != 12 else "lunch, but possible")
                    for h in range(9, 15)
                ],
            )
        if lowered in ("where", "where are you?", "location"):
            return AgentReply(
                text="Here I am:",
                location=Location(
                    latitude=52.5163,
                    longitude=13.3777,
                    name="Brandenburger Tor",
                    address="Pariser Platz, 10117 Berlin",
                ),
            )
        if lowered in ("contact", "card"):
            return AgentReply(
                text="Here is who to call:",
                contacts=[
                    Contact(
                        "Ada Lovelace", phones=("+44 20 7946 0000",), emails=("ada@example.com",)
                    )
                ],
            )
        if lowered == "link":
            return AgentReply(
                text="The documentation is one tap away.",
                link_button=LinkButton("Open the docs", "https://github.com/"),
            )
        if lowered in ("thanks", "thank you", "thx"):
            return AgentReply(text="You're welcome!", reaction="❤️")
        return None
