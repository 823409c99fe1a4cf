"""Reading a FITS file's headers alone, for the check before sending: each HDU's header
blocks, its data skipped by the size its header declares (no pixel read).

The page does the same in the browser (`static/fits_headers.js`). The gateway's validator
checks the headers it gets against its own reading of them, so a mistake here is refused,
never trusted; the upload is validated in full all the same.
"""

from __future__ import annotations

import dataclasses
import re
from typing import IO

BLOCK = 2880
CARD = 80
GZIP_MAGIC = b"\x1f\x8b"
COMPRESS_MAGIC = b"\x1f\x9d"
_INT = re.compile(r"^[+-]?[0-9]+$")


@dataclasses.dataclass(frozen=True)
class HeaderSegment:
    offset: int
    header: bytes
    data_bytes: int


@dataclasses.dataclass(frozen=True)
class FileHeaders:
    """What the check before sending needs of a file: its size and its headers, in file order.
    `compressed` names a whole-file compression (gzip, compress), whose headers are not in the
    clear: such a file is checked after upload."""

    size: int
    segments: list[HeaderSegment]
    compressed: str = ""

    @property
    def header_bytes(self) -> int:
        return sum(len(s.header) for s in self.segments)


class TooLarge(Exception):
    """The headers are more than the check before sending takes (the file is checked after upload)."""


def _text(header: bytes, key: str) -> str | None:
    """A keyword's value as written (before any comment), or None when absent."""
    prefix = key.encode().ljust(8) + b"="
    for i in range(0, len(header), CARD):
        if header[i : i + 9] == prefix:
            return header[i + 10 : i + CARD].decode("ascii", "replace").split("/", 1)[0].strip()
    return None


def _value(header: bytes, key: str) -> int | None:
    """An integer keyword's value, or None (absent or not an integer: the validator says why)."""
    text = _text(header, key)
    return int(text) if text is not None and _INT.match(text) else None


def data_bytes(header: bytes, primary: bool) -> int:
    """The data size a header declares (FITS 4.0 §4.4.1), without padding."""
    bitpix, naxis = _value(header, "BITPIX"), _value(header, "NAXIS")
    if bitpix is None or naxis is None or naxis <= 0:
        return 0
    axes = [_value(header, f"NAXIS{n}") or 0 for n in range(1, naxis + 1)]
    pcount = 0 if primary else _value(header, "PCOUNT") or 0
    gcount = 1 if primary else _value(header, "GCOUNT") or 1
    if primary and axes and axes[0] == 0 and _text(header, "GROUPS") == "T":  # random groups
        axes = axes[1:]
        pcount, gcount = _value(header, "PCOUNT") or 0, _value(header, "GCOUNT") or 1
    n = 1
    for a in axes:
        if a < 0:
            return 0
        n *= a
    return max(0, abs(bitpix) // 8 * gcount * (pcount + n))  # negative sizes: the validator says why


def read_headers(f: IO[bytes], size: int, max_bytes: int, max_hdus: int) -> FileHeaders:
    """Each HDU's header blocks (through the END card's block) and the data they declare."""
    head = f.read(2)
    if head in (GZIP_MAGIC, COMPRESS_MAGIC):
        return FileHeaders(size, [], "gzip" if head == GZIP_MAGIC else "compress")
    segments: list[HeaderSegment] = []
    offset, total = 0, 0
    while offset < size and len(segments) <= max_hdus:
        f.seek(offset)
        blocks = bytearray()
        while True:
            block = f.read(BLOCK)
            blocks += block
            total += len(block)
            if total > max_bytes:
                raise TooLarge(f"the headers are more than {max_bytes} bytes")
            if len(block) < BLOCK or _ends(block) or not _is_text(block):
                break  # the header's end; or not a header: the validator says why
            if not segments and not blocks.startswith(b"SIMPLE"):
                break  # not FITS
        if segments and not blocks.startswith(b"XTENSION"):
            # What follows the last HDU (padding, or junk): sent as it is, for the validator to judge.
            segments.append(HeaderSegment(offset, bytes(blocks[:BLOCK]), 0))
            break
        declared = data_bytes(bytes(blocks), primary=not segments) if _ends(blocks[-BLOCK:]) else 0
        segments.append(HeaderSegment(offset, bytes(blocks), declared))
        if len(blocks) % BLOCK or not _ends(blocks[-BLOCK:]):
            break  # the file ends inside the header, or it is not FITS: the validator says which
        offset += len(blocks) + -(-declared // BLOCK) * BLOCK
    return FileHeaders(size, segments)


def _is_text(block: bytes) -> bool:
    """Whether a block is header text (printable ASCII only), as the walk requires."""
    return not block.translate(None, _PRINTABLE)


_PRINTABLE = bytes(range(0x20, 0x7F))


def _ends(block: bytes | bytearray) -> bool:
    """Whether a block holds the END card (at a card's start)."""
    return any(block[i : i + CARD] == b"END" + b" " * 77 for i in range(0, len(block) - CARD + 1, CARD))
