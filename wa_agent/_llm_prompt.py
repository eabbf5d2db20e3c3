"""What an :class:`~wa_agent.llm.LLMAgent` asks the model, built from an
:class:`~wa_agent.agents.AgentRequest`, and its wire form for each API.

* :func:`system_prompt`: the agent's system prompt, or a default one;
* :func:`conversation`: the history's turns, then the new message: its text with the
  host's notes, and its media as parts the API takes (images, PDFs, text documents) or,
  for media it cannot take, a text description (:func:`describe_attachment`); a greeting
  or a heartbeat is a prompt of its own;
* :func:`anthropic_content` / :func:`openai_content`: one message's parts in the shape of
  the Anthropic Messages API and of OpenAI Chat Completions.

No I/O: the agent sends what these build (``wa_agent.llm``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .agents import AgentRequest, Attachment, Turn

__all__ = [
    "Msg",
    "Part",
    "anthropic_content",
    "conversation",
    "describe_attachment",
    "openai_content",
    "system_prompt",
]

_DEFAULT_SYSTEM: Final = (
    "You are {who}, chatting with a person on WhatsApp. Answer helpfully and concisely, "
    "as in a chat: short paragraphs, plain text, light Markdown at most. Media you cannot "
    "see or hear arrives as a bracketed description such as [voice note, audio/ogg, 12 KB]; "
    "if the user expects you to understand it, say that you cannot open it and ask them to "
    "write it out."
)
_HEARTBEAT_PREFIX: Final = (
    "[Scheduled heartbeat: the user did not write this. Your answer is sent to them as a "
    "proactive message.]\n"
)
_GREETING_PREFIX: Final = (
    "[The user just reset the conversation. Write your first message to them: a greeting. "
    "Base it on the following.]\n"
)
_GREETING_DEFAULT: Final = (
    "[The user just reset the conversation. Greet them briefly and say you are ready for a "
    "fresh start.]"
)
_CONVERSATION_START: Final = "[The conversation starts with a message from you.]"
_EMPTY_MESSAGE: Final = "[empty message]"

# What each API takes inline (images by MIME type; WhatsApp sends JPEG/PNG, stickers WebP).
_ANTHROPIC_IMAGES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_OPENAI_IMAGES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_MAX_IMAGE_BYTES: Final = {"anthropic": 5 * 1024 * 1024, "openai": 20 * 1024 * 1024}
_MAX_PDF_BYTES: Final = 32 * 1024 * 1024
_MAX_TEXT_CHARS: Final = 100_000
_TEXT_MIME_EXTRA: Final = frozenset({"application/json", "application/xml", "application/csv"})


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True, slots=True)
class Text:
    """Text of a message."""

    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image the API takes inline."""

    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Pdf:
    """A PDF the API takes inline."""

    data: bytes
    filename: str | None


@dataclass(frozen=True, slots=True)
class TextDocument:
    """A text document (plain text, CSV, JSON...), given to the model as text."""

    text: str
    filename: str | None


Part = Text | Image | Pdf | TextDocument


@dataclass(slots=True)
class Msg:
    """One message of the conversation: a role and its parts."""

    role: Literal["user", "assistant"]
    parts: list[Part]


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def describe_attachment(attachment: Attachment, *, with_caption: bool = True) -> str:
    """A one-line text stand-in for media the model cannot take.

    ``[voice note, audio/ogg, 12 KB]``; with a file name and caption:
    ``[document "a.docx", application/msword, 1.2 MB, caption: "for Monday"]``. (The
    duration of audio or video is unknown without decoding it, so the size is given.)
    """
    label = "voice note" if attachment.voice else attachment.kind or "file"
    bits = [label]
    if attachment.filename:
        bits[0] = f'{label} "{attachment.filename}"'
    bits.append(attachment.mime_type or "unknown type")
    bits.append(_human_size(len(attachment.data)))
    if with_caption and attachment.caption:
        bits.append(f'caption: "{attachment.caption}"')
    return "[" + ", ".join(bits) + "]"


def _base_mime(mime_type: str | None) -> str:
    return (mime_type or "").split(";", 1)[0].strip().lower()


def _is_text_mime(mime: str) -> bool:
    return mime.startswith("text/") or mime in _TEXT_MIME_EXTRA


# --------------------------------------------------------------------------- the prompt


def system_prompt(system: str | None, name: str | None, request: AgentRequest) -> str:
    """``system`` when given, else the default prompt naming the agent (``name``) and the
    user's WhatsApp name."""
    if system is not None:
        return system
    who = name or "a helpful assistant"
    prompt = _DEFAULT_SYSTEM.format(who=who)
    if request.profile_name:
        prompt += f" The user's WhatsApp name is {request.profile_name}."
    return prompt


_OPERATOR_PREFIX = "[a human operator wrote, while the conversation was handed to them] "


def conversation(
    request: AgentRequest, *, provider: str, greeting: str | None, heartbeat_message: str
) -> list[Msg]:
    """The messages to send: the history's turns (a repeated role merged into one message;
    a greeting has none), then the new message, always starting with the user."""
    msgs: list[Msg] = []
    history: Sequence[Turn] = () if request.purpose == "greeting" else request.history
    for turn in history:
        if turn.text and turn.text.strip():
            if turn.role == "operator":  # the model answers for the business: as its own,
                # marked so that it knows a person said it
                _append(msgs, Msg("assistant", [Text(_OPERATOR_PREFIX + turn.text)]))
            else:
                _append(msgs, Msg(turn.role, [Text(turn.text)]))
    _append(msgs, Msg("user", _current_parts(request, provider, greeting, heartbeat_message)))
    if msgs[0].role != "user":
        msgs.insert(0, Msg("user", [Text(_CONVERSATION_START)]))
    return msgs


def _current_parts(
    request: AgentRequest, provider: str, greeting: str | None, heartbeat_message: str
) -> list[Part]:
    if request.purpose == "greeting":
        if greeting:
            return [Text(_GREETING_PREFIX + greeting)]
        return [Text(_GREETING_DEFAULT)]
    if request.purpose == "heartbeat":
        return [Text(_HEARTBEAT_PREFIX + (request.text or heartbeat_message))]
    parts: list[Part] = []
    # What the host could not give the model (a failed download...), marked as such.
    notes: list[str] = [f"[note from the host: {note}]" for note in request.notes]
    for att in request.attachments:
        part = _media_part(att, request, provider)
        if part is None:
            notes.append(describe_attachment(att, with_caption=att.caption != request.text))
            continue
        parts.append(part)
        if att.caption and att.caption != request.text:
            notes.append(f"[caption: {att.caption}]")
    text = "\n".join([*notes, request.text] if request.text else notes)
    if text.strip():
        parts.append(Text(text))
    elif not parts:
        parts.append(Text(_EMPTY_MESSAGE))
    return parts


def _media_part(att: Attachment, request: AgentRequest, provider: str) -> Part | None:
    """The content part for ``att``, or ``None`` when it must be described in text."""
    mime = _base_mime(att.mime_type)
    kind = att.kind
    if kind in ("image", "sticker") and mime.startswith("image/"):
        if kind == "sticker":
            media = request.message.media if request.message is not None else None
            if media is not None and media.animated:
                return None  # animated WebP: neither API takes it
        allowed = _ANTHROPIC_IMAGES if provider == "anthropic" else _OPENAI_IMAGES
        limit = _MAX_IMAGE_BYTES["anthropic" if provider == "anthropic" else "openai"]
        if mime in allowed and 0 < len(att.data) <= limit:
            return Image(mime, att.data)
        return None
    if kind == "document" or kind == "file":
        if mime == "application/pdf" and provider != "openai-compatible":
            if 0 < len(att.data) <= _MAX_PDF_BYTES:
                return Pdf(att.data, att.filename)
            return None
        if _is_text_mime(mime):
            text = att.data.decode("utf-8", errors="replace")
            if len(text) > _MAX_TEXT_CHARS:
                text = text[:_MAX_TEXT_CHARS] + "\n[... truncated]"
            return TextDocument(text, att.filename)
    return None


def _append(msgs: list[Msg], msg: Msg) -> None:
    """Append ``msg``, merging it into the previous message when the role repeats."""
    if msgs and msgs[-1].role == msg.role:
        prev = msgs[-1].parts
        for part in msg.parts:
            if prev and isinstance(prev[-1], Text) and isinstance(part, Text):
                prev[-1] = Text(prev[-1].text + "\n\n" + part.text)
            else:
                prev.append(part)
    else:
        msgs.append(Msg(msg.role, list(msg.parts)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- wire forms


def anthropic_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    """A message's ``content`` for the Anthropic Messages API (a string for plain text)."""
    if len(parts) == 1 and isinstance(parts[0], Text):
        return parts[0].text
    blocks: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            blocks.append({"type": "text", "text": p.text})
        elif isinstance(p, Image):
            blocks.append(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": p.mime_type, "data": _b64(p.data)},
                }
            )
        elif isinstance(p, Pdf):
            block: dict[str, Any] = {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": _b64(p.data)},
            }
            if p.filename:
                block["title"] = p.filename
            blocks.append(block)
        else:
            block = {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": p.text},
            }
            if p.filename:
                block["title"] = p.filename
            blocks.append(block)
    return blocks


def openai_content(parts: list[Part], role: str) -> str | list[dict[str, Any]]:
    """A message's ``content`` for OpenAI Chat Completions (a string for plain text and
    for the assistant's turns)."""
    if role == "assistant" or (len(parts) == 1 and isinstance(parts[0], Text)):
        return "\n\n".join(p.text for p in parts if isinstance(p, Text))
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, Image):
            out.append(
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:{p.mime_type};base64,{_b64(p.data)}"},
                }
            )
        elif isinstance(p, Pdf):
            out.append(
                {
                    "type": "file",
                    "file": {
                        "filename": p.filename or "document.pdf",
                        "file_data": f"data:application/pdf;base64,{_b64(p.data)}",
                    },
                }
            )
        else:
            name = f' "{p.filename}"' if p.filename else ""
            out.append({"type": "text", "text": f"[document{name}]\n{p.text}"})
    return out
