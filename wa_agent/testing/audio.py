"""A small, valid voice note: Ogg pages carrying Opus silence, built without any codec.

WhatsApp voice notes are OGG files with the Opus codec (``audio/ogg; codecs=opus``). Tests,
the simulator and the demo need one that real players and decoders accept, so
:func:`silent_voice_note` writes a correct Ogg stream (``OpusHead`` and ``OpusTags`` header
pages, CRC-checked pages of 20 ms silent Opus frames) of the requested length.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["silent_voice_note"]

_SAMPLE_RATE: Final = 48_000
_PRE_SKIP: Final = 312
_FRAME_SAMPLES: Final = 960  # 20 ms at 48 kHz
#: A 20 ms mono CELT frame of silence (TOC 0xF8: config 31, one frame), what encoders emit.
_SILENT_FRAME: Final = b"\xf8\xff\xfe"
_SERIAL: Final = 0x5741_4147  # "WAAG"


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x8000_0000 else crc << 1
        table.append(crc & 0xFFFF_FFFF)
    return table


_CRC = _crc_table()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF_FFFF) ^ _CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _page(packets: list[bytes], *, sequence: int, granule: int, flags: int) -> bytes:
    lacing = bytearray()
    for packet in packets:
        size = len(packet)
        lacing.extend([255] * (size // 255))
        lacing.append(size % 255)
    header = struct.pack(
        "<4sBBqIIIB", b"OggS", 0, flags, granule, _SERIAL, sequence, 0, len(lacing)
    )
    page = header + bytes(lacing) + b"".join(packets)
    crc = _ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def silent_voice_note(seconds: float = 1.0) -> bytes:
    """An OGG/Opus voice note of ``seconds`` of silence (mono, 48 kHz), a few hundred bytes
    per second: what a simulated user sends as a voice message."""
    if seconds <= 0:
        raise ValueError("a voice note lasts more than 0 seconds")
    frames = max(1, round(seconds * _SAMPLE_RATE / _FRAME_SAMPLES))
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, 1, _PRE_SKIP, _SAMPLE_RATE, 0, 0)
    vendor = b"wa_agent"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [
        _page([head], sequence=0, granule=0, flags=0x02),
        _page([tags], sequence=1, granule=0, flags=0x00),
    ]
    sequence = 2
    done = 0
    per_page = 50  # one second of frames per page
    while done < frames:
        count = min(per_page, frames - done)
        done += count
        last = done == frames
        pages.append(
            _page(
                [_SILENT_FRAME] * count,
                sequence=sequence,
                granule=_PRE_SKIP + done * _FRAME_SAMPLES,
                flags=0x04 if last else 0x00,
            )
        )
        sequence += 1
    return b"".join(pages)
