"""Cloud API media rules (reference/cloud_api.md §9), shared by the Sender and the emulator."""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "MEDIA_KINDS",
    "MEDIA_MIME_TYPES",
    "MEDIA_SIZE_LIMITS",
    "MediaKind",
    "base_mime",
    "kind_for_mime",
    "sniff_mime",
]

MediaKind = Literal["image", "video", "audio", "document", "sticker"]
MEDIA_KINDS: Final[tuple[MediaKind, ...]] = ("image", "video", "audio", "document", "sticker")

_KB = 1024
_MB = 1024 * 1024

#: Largest file the Cloud API takes per kind (stickers: the animated limit; static is 100 KB).
MEDIA_SIZE_LIMITS: Final[dict[str, int]] = {
    "audio": 16 * _MB,
    "document": 100 * _MB,
    "image": 5 * _MB,
    "sticker": 500 * _KB,
    "video": 16 * _MB,
}

#: Supported MIME types per kind (parameters such as ``; codecs=opus`` are ignored).
MEDIA_MIME_TYPES: Final[dict[str, frozenset[str]]] = {
    "audio": frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}),
    "document": frozenset(
        {
            "text/plain",
            "application/pdf",
            "application/msword",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.ms-excel",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-powerpoint",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        }
    ),
    "image": frozenset({"image/jpeg", "image/png"}),
    "sticker": frozenset({"image/webp"}),
    "video": frozenset({"video/mp4", "video/3gpp"}),
}


def base_mime(mime_type: str) -> str:
    """``"Audio/OGG; codecs=opus"`` → ``"audio/ogg"``."""
    return mime_type.split(";", 1)[0].strip().lower()


def kind_for_mime(mime_type: str) -> MediaKind | None:
    """The media kind a supported MIME type belongs to, or ``None`` if unsupported."""
    base = base_mime(mime_type)
    for kind in MEDIA_KINDS:
        if base in MEDIA_MIME_TYPES[kind]:
            return kind
    return None


def sniff_mime(data: bytes) -> str | None:
    """Guess the MIME type of common media from its first bytes (``None`` if unknown)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"OggS"):
        return "audio/ogg"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if data.startswith(b"#!AMR"):
        return "audio/amr"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand.startswith(b"3gp"):
            return "video/3gpp"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    return None
