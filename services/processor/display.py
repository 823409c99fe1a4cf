"""Grey levels for display: the pixel cut and 8-bit PNG encoding, and bare
FITS encoding of a float image (tiles, Allsky): float32, or 16-bit integers
with BSCALE/BZERO and BLANK (`Quantisation`)."""

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


# 16-bit tiles: stored values -32767..32767, -32768 the BLANK (NaN).
LEVELS = 65534
BLANK16 = -32768
# Quantisation steps per cut width at the least: the step is then at most a
# hundredth of the cut, a 19th of the sky noise of an image whose cut spans
# +-2.6 sigma (0.5 and 99.5 percentiles): its rounding noise (step / sqrt 12)
# is 1.5% of the sky noise and adds 0.02% to its variance.
STEPS_PER_CUT = 100
# When the data range needs a coarser step, a window of LEVELS steps (655
# cut widths) starting this many cut widths below the cut keeps the sky and
# all but the brightest star peaks; values beyond it are clipped to its ends
# (a clipped peak would move a star's centroid by hundredths of a pixel).
WINDOW_BELOW = 5


@dataclasses.dataclass(frozen=True)
class Quantisation:
    """physical = bzero + bscale * stored, for every 16-bit tile of a HiPS."""

    bscale: float
    bzero: float

    @property
    def low(self) -> float:
        return self.bzero - 32767 * self.bscale

    @property
    def high(self) -> float:
        return self.bzero + 32767 * self.bscale


def quantisation(stats: Statistics) -> Quantisation:
    """The 16-bit scaling of an image: its whole data range when that is
    within LEVELS / STEPS_PER_CUT cut widths, else a window of that width from
    WINDOW_BELOW cut widths under the cut (clipping only far outside it).

    BSCALE and BZERO are rounded to the 12 digits their cards hold, so that a
    reader's physical values are the ones encoded; BZERO is a float32 too
    (tiles are encoded in float32 arithmetic)."""
    low, high = stats.cut.low, stats.cut.high
    width = high - low if high > low else 1.0
    lo, hi = stats.data_min, stats.data_max
    if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
        lo, hi = low, high
    span = LEVELS / STEPS_PER_CUT * width
    if hi - lo > span:
        lo = max(lo, low - WINDOW_BELOW * width)
        hi = lo + span
    if not hi > lo:
        hi = lo + width
    bscale = float(f"{(hi - lo) / LEVELS:.12G}")
    bzero = float(f"{float(np.float32((lo + hi) / 2)):.12G}")
    return Quantisation(bscale, bzero)


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


def fits_bytes(
    data: np.ndarray, cards: dict[str, object] | None = None, quantised: Quantisation | None = None
) -> bytearray:
    """A single-HDU FITS file built in one buffer: BITPIX -32 with NaN blank,
    or, with `quantised`, BITPIX 16 with BSCALE/BZERO and BLANK for NaN.

    `data` is in FITS order (row 0 is the bottom row). The big-endian
    conversion writes straight into the output buffer: no extra copy.
    """
    h, w = data.shape
    lines = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card(
            "BITPIX", 16 if quantised else -32, "16-bit integers" if quantised else "IEEE single precision"
        ),
        _card("NAXIS", 2),
        _card("NAXIS1", int(w)),
        _card("NAXIS2", int(h)),
    ]
    if quantised is not None:
        lines += [
            _card("BSCALE", quantised.bscale, "physical = BZERO + BSCALE * stored"),
            _card("BZERO", quantised.bzero),
            _card("BLANK", BLANK16, "no data"),
        ]
    for key, value in (cards or {}).items():
        lines.append(_card(key, value))
    lines.append("END".ljust(80))
    header = "".join(lines).encode("ascii")
    header_len = -(-len(header) // 2880) * 2880
    item = 2 if quantised else 4
    data_len = h * w * item
    total = header_len + -(-data_len // 2880) * 2880
    buf = bytearray(total)
    buf[: len(header)] = header
    buf[len(header) : header_len] = b" " * (header_len - len(header))
    view = np.frombuffer(buf, dtype=">i2" if quantised else ">f4", count=h * w, offset=header_len)
    view = view.reshape(h, w)
    if quantised is None:
        view[...] = data
    else:
        view[...] = _stored16(data, quantised)
    return buf


def _stored16(data: np.ndarray, q: Quantisation) -> np.ndarray:
    """Rounded stored values (float32 holding integers), BLANK where NaN."""
    levels = np.subtract(data, np.float32(q.bzero), dtype=np.float32)
    levels *= np.float32(1.0 / q.bscale)
    np.rint(levels, out=levels)
    np.clip(levels, -32767, 32767, out=levels)
    blank = np.isnan(levels)
    if blank.any():
        levels[blank] = BLANK16
    return levels
