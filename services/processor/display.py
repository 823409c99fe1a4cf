"""Grey levels for display: the pixel cut and 8-bit PNG encoding, and bare
FITS encoding of a float image (tiles, Allsky)."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import deflate
import numpy as np

# Robust percentiles of the pixel values that map to black and white.
CUT_PERCENTILES = (0.5, 99.5)
# Pixels sampled for the cut; a regular subsample, enough for percentiles.
CUT_SAMPLE = 1 << 20
PNG_COMPRESS_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class Cut:
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class Statistics:
    cut: Cut
    data_min: float
    data_max: float


def statistics(data: np.ndarray) -> Statistics:
    """The display cut (robust percentiles) and the data range of an image."""
    ny, nx = data.shape
    step = max(1, int(np.sqrt(ny * nx / CUT_SAMPLE)))
    sample = np.asarray(data[::step, ::step], dtype=np.float32).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return Statistics(Cut(0.0, 1.0), 0.0, 0.0)
    low, high = (float(v) for v in np.percentile(sample, CUT_PERCENTILES))
    if not high > low:
        high = low + 1.0
    finite_min, finite_max = np.inf, -np.inf
    # The full range, band by band (the image may be a memory map).
    band = max(1, (1 << 23) // max(1, nx))
    for y0 in range(0, ny, band):
        chunk = np.asarray(data[y0 : y0 + band], dtype=np.float32).ravel()
        lo, hi = np.fmin.reduce(chunk), np.fmax.reduce(chunk)  # NaN ignored
        if np.isfinite(lo):
            finite_min = min(finite_min, float(lo))
        if np.isfinite(hi):
            finite_max = max(finite_max, float(hi))
    return Statistics(Cut(low, high), finite_min, finite_max)


def to_grey(data: np.ndarray, cut: Cut) -> np.ndarray:
    """uint8 grey levels 1..255 between the cut, 0 where blank."""
    scale = np.float32(254.0 / (cut.high - cut.low))
    levels = np.subtract(data, np.float32(cut.low), dtype=np.float32)
    levels *= scale
    levels += np.float32(1.5)
    np.clip(levels, 1, 255, out=levels)
    blank = np.isnan(levels)
    if blank.any():
        levels[blank] = 0
    return levels.astype(np.uint8)


def png_bytes(grey: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG, level 0 transparent (blank), rows top first.

    Written directly (filter "none", libdeflate at its fastest level):
    several times faster than Pillow's encoder on noisy sky tiles.
    """
    h, w = grey.shape
    rows = np.zeros((h, w + 1), np.uint8)  # a filter-type byte (0) per row
    rows[:, 1:] = grey
    # Sky noise at display contrast hardly compresses: when a sample of rows
    # does not shrink by a tenth, store the rows (20x faster than deflating).
    level = PNG_COMPRESS_LEVEL
    sample = np.ascontiguousarray(rows[:: max(1, h // 16)])
    if sample.size >= 4096 and len(deflate.zlib_compress(sample.data, level)) > 0.9 * sample.size:
        level = 0
    idat = bytes(deflate.zlib_compress(rows.data, level))
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)),
            _chunk(b"tRNS", b"\x00\x00"),
            _chunk(b"IDAT", idat),
            _chunk(b"IEND", b""),
        ]
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file_bytes(grey: np.ndarray) -> bytes:
    """The same through Pillow (a check of the fast encoder in tests)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "PNG", transparency=0)
    return buf.getvalue()


def _card(key: str, value: object, comment: str = "") -> str:
    if isinstance(value, bool):
        text = "T" if value else "F"
        card = f"{key:<8}= {text:>20}"
    elif isinstance(value, int):
        card = f"{key:<8}= {value:>20d}"
    elif isinstance(value, float):
        card = f"{key:<8}= {value:>20.12G}"
    else:
        escaped = str(value).replace("'", "''")
        card = f"{key:<8}= '{escaped:<8}'"
    if comment:
        card += f" / {comment}"
    return card[:80].ljust(80)


def fits_bytes(data: np.ndarray, cards: dict[str, object] | None = None) -> bytearray:
    """A single-HDU FITS file, BITPIX -32, NaN blank, built in one buffer.

    `data` is in FITS order (row 0 is the bottom row). The big-endian
    conversion writes straight into the output buffer: no extra copy.
    """
    h, w = data.shape
    lines = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", -32, "IEEE single precision"),
        _card("NAXIS", 2),
        _card("NAXIS1", int(w)),
        _card("NAXIS2", int(h)),
    ]
    for key, value in (cards or {}).items():
        lines.append(_card(key, value))
    lines.append("END".ljust(80))
    header = "".join(lines).encode("ascii")
    header_len = -(-len(header) // 2880) * 2880
    data_len = h * w * 4
    total = header_len + -(-data_len // 2880) * 2880
    buf = bytearray(total)
    buf[: len(header)] = header
    buf[len(header) : header_len] = b" " * (header_len - len(header))
    view = np.frombuffer(buf, dtype=">f4", count=h * w, offset=header_len).reshape(h, w)
    view[...] = data
    return buf
