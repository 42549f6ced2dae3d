"""A tiny valid dataset (PNG images with captions) for the demo and the tests: real files that
pass the same validation a user's dataset does."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, shade: int = 128) -> bytes:
    """A complete RGB PNG: signature, IHDR, IDAT (zlib rows), IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixel = bytes([shade % 256, (shade * 3) % 256, (shade * 7) % 256])
    rows = b"".join(b"\x00" + pixel * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def write_sample_dataset(folder: Path, count: int = 4, trigger: str = "[trigger]") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"img_{i:03d}.png").write_bytes(png(64 + 8 * i, 64, shade=40 * i + 20))
        (folder / f"img_{i:03d}.txt").write_text(f"a photo of {trigger}, sample {i}\n")
    return folder
