"""Turning an agent's reply into WhatsApp messages, and sending them.

A reply becomes a list of *parts*, plain JSON-able dicts (``{"type": "text", "text": …}``,
``{"type": "image", "id": …, "caption": …}``, ``{"type": "buttons", …}``…): text converted
from Markdown and split at WhatsApp's 4096-character limit, media uploaded first so that a
part can be sent again from its media id after a restart (the parts are saved in the
durable inbox), and the rich fields (reaction, choices, location, contacts, link button,
voice note) placed and shaped by :mod:`wa_agent._rich` (text plus choices is one
interactive message). Every send, for a user's message, a greeting or a heartbeat, goes
through :meth:`Delivery.send_part`, which also tells the listeners. A reply into a WhatsApp
group keeps only what groups accept (text and media).

**Local files.** An agent's reply may name media as bytes, a :class:`~pathlib.Path`, a
link, a media id, or a :class:`~wa_agent.Media` holding one of those. A *string* is never
read as a path on its own: a reply built from a model's output (or a prompt injection)
must not be able to send ``/proc/self/environ``. A string that is not a link or a media id
is read from disk only when the operator named a ``media_dir`` and the path resolves inside
it; a ``Path`` object is code's explicit choice and is read as given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._rich import RICH_TYPES, describe_part, merge_parts, send_rich_part
from ..agents import AgentReply, Media
from ..exceptions import MediaError, WhatsAppAPIError

if TYPE_CHECKING:
    from ..sender import Sender
    from ..stores.base import SessionStore
    from .observers import OutboundSink, Stats

__all__ = ["Delivery", "UnsafeMediaPath", "service_window_open"]

logger = logging.getLogger("wa_agent.interface")

_MIME_BY_EXT = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".3gp": "video/3gpp",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".amr": "audio/amr",
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_NO_CAPTION = frozenset({"sticker", "audio"})  # WhatsApp shows no caption on these
#: What a reply into a group may hold (Meta's group messaging: text, media, templates).
GROUP_TYPES = frozenset({"text", "image", "video", "audio", "document", "sticker", "template"})


class UnsafeMediaPath(ValueError):
    """A reply named a local file by a string outside the operator's ``media_dir``."""


def guess_mime(name: str) -> str | None:
    return _MIME_BY_EXT.get(Path(name).suffix.lower())


class Delivery:
    """Builds reply parts and sends them for one interface (see the module docstring)."""

    def __init__(
        self,
        graph: Callable[[], Sender],
        *,
        listeners: OutboundSink,
        stats: Stats,
        apology: str,
        media_dir: Path | None = None,
    ) -> None:
        self._graph = graph
        self.listeners = listeners
        self.stats = stats
        self.apology = apology
        self.media_dir = media_dir.resolve() if media_dir is not None else None

    # -- building -----------------------------------------------------------------------
    async def parts(self, reply: AgentReply) -> list[dict[str, Any]]:
        """The parts to send for ``reply``. Media that cannot be sent (missing file,
        unknown type, refused path, rejected upload) is skipped with an ERROR; a reply of
        nothing but such media becomes the apology. A transient upload failure raises (the
        message is retried later)."""
        from ..text import markdown_to_whatsapp, split_text

        parts: list[dict[str, Any]] = []
        if reply.text and reply.text.strip():
            for chunk in split_text(markdown_to_whatsapp(reply.text)):
                parts.append({"type": "text", "text": chunk})
        skipped = 0
        audio = (reply.audio,) if reply.audio is not None else ()
        for kind, items in (("image", reply.images), ("document", reply.files), ("audio", audio)):
            for item in items:
                try:
                    parts.append(await self.media_part(kind, item))
                except WhatsAppAPIError as exc:
                    if exc.retryable:
                        raise  # transient (5xx, transport): the message is retried later
                    skipped += 1
                    logger.exception("a %s the agent returned could not be sent; skipped", kind)
                except (OSError, ValueError, TypeError, MediaError):
                    skipped += 1
                    logger.exception("a %s the agent returned could not be sent; skipped", kind)
        if skipped:
            self.stats.agent_errors += 1
        parts = merge_parts(reply, parts)
        if not parts:
            if skipped:
                return [{"type": "text", "text": self.apology}]
            logger.info("agent gave an empty reply; nothing sent")
        return parts

    def local_path(self, text: str) -> Path:
        """The file a reply's string names, if it lies inside ``media_dir``; otherwise
        :class:`UnsafeMediaPath`."""
        root = self.media_dir
        if root is None:
            raise UnsafeMediaPath(
                "a reply named a local file by a string; strings are only sent as links or "
                "media ids. Return a pathlib.Path (or Media(data=Path(...))) built by your "
                "code, or set media_dir= to allow files from one directory"
            )
        path = (root / text).resolve()
        if not path.is_relative_to(root):
            raise UnsafeMediaPath(f"a reply named a file outside media_dir ({root})")
        return path

    async def media_part(
        self, default_kind: str, item: Media | bytes | Path | str
    ) -> dict[str, Any]:
        """Upload local media now so the part can be resent from its id after a restart.

        Raises ``OSError``/``ValueError``/``MediaError`` for media that cannot be sent
        (missing file, refused path, unknown or unsupported type, too large).
        """
        from .._media import kind_for_mime, sniff_mime

        media = item if isinstance(item, Media) else Media(data=item)
        mime = media.mime_type
        filename = media.filename
        data: Any = media.data
        if (
            isinstance(data, str)
            and not data.startswith(("http://", "https://"))
            and not data.isdigit()
        ):
            data = self.local_path(data)
        if isinstance(data, Path):
            filename = filename or data.name
            mime = mime or guess_mime(data.name)
            data = await asyncio.to_thread(data.read_bytes)
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if isinstance(data, bytes):
            mime = mime or sniff_mime(data) or (guess_mime(filename) if filename else None)
            if mime is None:
                raise ValueError(
                    f"cannot tell the type of a {default_kind} of {len(data)} "
                    "bytes: return Media(data, mime_type=...)"
                )
        elif not isinstance(data, str):
            raise TypeError(
                f"reply media must be bytes, a path, a link or a media id, not "
                f"{type(data).__name__}"
            )
        kind = media.kind or (kind_for_mime(mime) if mime else None) or default_kind
        part: dict[str, Any] = {"type": kind, "caption": media.caption, "filename": filename}
        if isinstance(data, bytes):
            assert mime is not None
            part["id"] = await self._graph().upload_media(data, mime, filename=filename)
            part["size"] = len(data)
            part["mime_type"] = mime
        elif data.startswith(("http://", "https://")):
            part["link"] = data
        else:
            part["id"] = data
        return part

    # -- sending ------------------------------------------------------------------------
    async def send_part(
        self,
        to: str,
        part: dict[str, Any],
        *,
        reply_to: str | None = None,
        answering: str | None = None,
    ) -> list[str]:
        """Send one part to ``to`` (quoting ``reply_to``); the wamids Meta gave it.
        ``answering`` is the user's message the reply answers (a reaction's target)."""
        graph = self._graph()
        kind = part["type"]
        if kind in RICH_TYPES:
            wamid = await send_rich_part(graph, to, part, reply_to=reply_to, answering=answering)
            if wamid is None:
                return []
            if kind == "audio":
                self.listeners.outbound(
                    to,
                    "",
                    wamid=wamid,
                    kind="audio",
                    media_info={
                        "type": "audio",
                        "size": part.get("size"),
                        "caption": None,
                        "filename": part.get("filename"),
                        "voice": bool(part.get("voice")),
                    },
                )
            else:
                self.listeners.outbound(to, describe_part(part), wamid=wamid)
            return [wamid]
        if kind == "text":
            wamids = await graph.send_text(to, part["text"], reply_to=reply_to)
            self.listeners.outbound(to, part["text"], wamid=wamids[-1] if wamids else None)
            return wamids
        if kind == "template":
            wamid = await graph.send_template(
                to, part["name"], part.get("language", "en_US"), part.get("components")
            )
            self.listeners.outbound(to, f"[template {part['name']}]", wamid=wamid)
            return [wamid]
        send = getattr(graph, f"send_{kind}", None) or graph.send_document
        kwargs: dict[str, Any] = {"reply_to": reply_to}
        if kind not in _NO_CAPTION:
            kwargs["caption"] = part.get("caption")
        if kind == "document":
            kwargs["filename"] = part.get("filename")
        media: Any = part.get("id") or part.get("link")
        wamid = await send(to, media, **kwargs)
        self.listeners.outbound(
            to,
            part.get("caption") or "",
            wamid=wamid,
            kind=kind,
            media_info={
                "type": kind,
                "size": part.get("size"),
                "caption": part.get("caption"),
                "filename": part.get("filename"),
            },
        )
        return [wamid]

    async def send_all(self, to: str, parts: list[dict[str, Any]]) -> list[str]:
        """Send every part in order (a heartbeat: no quoting, no progress, nothing to
        react to)."""
        wamids: list[str] = []
        for part in parts:
            wamids.extend(await self.send_part(to, part))
        return wamids


async def service_window_open(store: SessionStore, interface: str, contact: str) -> bool:
    """Whether free-form messages may be sent to ``contact`` now: their last message, as
    the store recorded it, is less than 24 hours old (else only a template goes out)."""
    from ..heartbeat import within_service_window

    return within_service_window(await store.last_inbound(interface, contact))


def for_group(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts a WhatsApp group accepts: interactive messages, locations and contact
    cards become readable text (``[location: …]``); a reaction is dropped."""
    kept: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] in GROUP_TYPES:
            kept.append(part)
        elif part["type"] == "reaction":
            logger.debug("a reaction is not sent into a group (not supported there)")
        else:
            kept.append({"type": "text", "text": describe_part(part)})
    return kept
