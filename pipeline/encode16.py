"""16-bit RGB(A) PNG and TIFF encoders, which Pillow lacks (it writes 8 bits per channel for RGB).

Bytes in, bytes out: imaging.py feeds rows of uint16 pixels (in bands, never a float copy of a
whole print-size image) and writes the result atomically. Each file carries the sRGB ICC
profile, the resolution in dots per inch and the job's parameters as text, as the 8-bit outputs
do. PNG: the standard 16-bit truecolour form (filter 0, zlib). TIFF: baseline RGB, 16 bits per
sample, one Deflate-compressed strip (compression 8, read by Pillow, libtiff, Photoshop, GIMP).
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterable

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _compressed(bands: Iterable[np.ndarray], big_endian: bool, png_filter: bool) -> bytes:
    """zlib stream of the rows of `bands` ((rows, W, C) uint16 each, C 3 or 4), one band at a time."""
    packer, parts = zlib.compressobj(6), []
    for band in bands:
        raw = band.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(band.shape[0], -1)
        if png_filter:   # each PNG row starts with its filter type: 0, none
            raw = np.concatenate([np.zeros((raw.shape[0], 1), np.uint8), raw], axis=1)
        parts.append(packer.compress(raw.tobytes()))
    parts.append(packer.flush())
    return b"".join(parts)


def png16(bands: Iterable[np.ndarray], width: int, height: int, dpi: int | None, icc: bytes, text: str,
          channels: int = 3) -> bytes:
    colour_type = 6 if channels == 4 else 2   # truecolour with alpha, or without
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    head += _chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(icc))
    if dpi:
        per_metre = round(dpi / 0.0254)
        head += _chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
    head += _chunk(b"tEXt", b"nst-batch\0" + text.encode("latin-1"))
    body = _chunk(b"IDAT", _compressed(bands, big_endian=True, png_filter=True))
    return b"\x89PNG\r\n\x1a\n" + head + body + _chunk(b"IEND", b"")


_SHORT, _LONG, _RATIONAL, _ASCII, _UNDEFINED = 3, 4, 5, 2, 7
_SIZES = {_SHORT: 2, _LONG: 4, _RATIONAL: 8, _ASCII: 1, _UNDEFINED: 1}


def tiff16(bands: Iterable[np.ndarray], width: int, height: int, dpi: int | None, icc: bytes, text: str,
           channels: int = 3, description_tag: int = 270) -> bytes:
    strip = _compressed(bands, big_endian=False, png_filter=False)
    resolution = struct.pack("<II", dpi or 72, 1)
    # (tag, type, count, value bytes); StripOffsets is patched once the layout is known.
    entries = [(256, _LONG, 1, struct.pack("<I", width)), (257, _LONG, 1, struct.pack("<I", height)),
               (258, _SHORT, channels, struct.pack("<" + "H" * channels, *[16] * channels)), (259, _SHORT, 1, struct.pack("<H", 8)),
               (262, _SHORT, 1, struct.pack("<H", 2)),
               (description_tag, _ASCII, len(text) + 1, text.encode("latin-1") + b"\0"),
               (273, _LONG, 1, b"\0\0\0\0"), (277, _SHORT, 1, struct.pack("<H", channels)),
               (278, _LONG, 1, struct.pack("<I", height)), (279, _LONG, 1, struct.pack("<I", len(strip))),
               (282, _RATIONAL, 1, resolution), (283, _RATIONAL, 1, resolution),
               (284, _SHORT, 1, struct.pack("<H", 1)), (296, _SHORT, 1, struct.pack("<H", 2 if dpi else 1)),
               (34675, _UNDEFINED, len(icc), icc)]
    if channels == 4:   # ExtraSamples: the fourth is unassociated (straight) alpha
        entries.append((338, _SHORT, 1, struct.pack("<H", 2)))
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size                      # values over 4 bytes follow the IFD
    extra, fields = b"", []
    for tag, kind, count, value in entries:
        if len(value) > 4:
            fields.append((tag, kind, count, struct.pack("<I", extra_at + len(extra))))
            extra += value + (b"\0" if len(value) % 2 else b"")   # word-aligned, as TIFF asks
        else:
            fields.append((tag, kind, count, value.ljust(4, b"\0")))
    strip_at = extra_at + len(extra)
    fields = [(t, k, c, struct.pack("<I", strip_at) if t == 273 else v) for t, k, c, v in fields]
    ifd = struct.pack("<H", len(fields)) + b"".join(struct.pack("<HHI", t, k, c) + v for t, k, c, v in fields)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + extra + strip
