"""The one FITS header reader: walks a file's headers by offset, computing each HDU's data size
and skipping its data. The validator checks uploads with it; the processor reads the layout of
the files the validator accepted with it, so both see the same file.

Standard library only: the processor's command-line mosaic imports it before starting SWarp.

Plain files (and objects in the store, through their ranged reader) are read
by seeking: only the header blocks and the few pixel rows a check asks for
are fetched. A gzip or Unix-compress (.Z) file is piped once, front to back,
through `gzip -dc` (which reads both formats as a stream), with bounded
memory and a cap on the decompressed size; nothing is decompressed in
memory as a whole.

Every malformation becomes a `FitsProblem` with a stable code
(common.v1.ErrorCode names), never an unhandled exception. The mandatory
keywords are held to FITS 4.0 (their places and values); a free-format value
where the standard asks for fixed format is only noted (`free_format`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

from bgimages.common.v1.codes import Code  # the catalogue alone (standard library only)

BLOCK = 2880
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
CARD = 80
CARDS_PER_BLOCK = BLOCK // CARD

GZIP_MAGIC = b"\x1f\x8b"
COMPRESS_MAGIC = b"\x1f\x9d"
# Whole-file formats we recognise but do not read: a clear answer beats NOT_FITS.
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x1f\xa0": "LZH (pack)",
    b"\x1f\x1e": "pack",
    b"7z\xbc\xaf": "7z",
}
VALID_BITPIX = {8, 16, 32, 64, -32, -64}

# Keyword field, value indicator. HIERARCH cards carry a long keyword before "=".
_CARD_RE = re.compile(r"^(?:HIERARCH +([^=\n]*?) *|([A-Z0-9_-]{1,8}) *)= ?([^\n]*)$", re.M | re.I)
# The keywords every HDU is asked for (structure, classification): found by one targeted scan,
# several times faster than indexing every card of a 200-card header.
CORE_KEYS = [
    "SIMPLE",
    "EXTEND",
    "BITPIX",
    "NAXIS",
    "PCOUNT",
    "GCOUNT",
    "GROUPS",
    "XTENSION",
    "EXTNAME",
    "EXTVER",
    "HDUCLAS1",
    "HDUCLAS2",
    "HDUCLAS3",
    "ZIMAGE",
    "ZCMPTYPE",
    "ZBITPIX",
    "ZNAXIS",
    "BLANK",
    "BANDPASS",
    "FILTER",
    "INSTRUME",
    "OBJECT",
]
_CORE_SET = frozenset(
    [*CORE_KEYS, *(f"NAXIS{n}" for n in range(1, 1000)), *(f"ZNAXIS{n}" for n in range(1, 100))]
)
# The primary WCS's keywords (no alternate letters), as astropy, SCAMP, ESO and Gemini pipelines write them.
WCS_KEYS = frozenset(
    [
        "WCSAXES",
        "LONPOLE",
        "LATPOLE",
        "RADESYS",
        "RADECSYS",
        "EQUINOX",
        "EPOCH",
        "MJD-OBS",
        "DATE-OBS",
        "A_ORDER",
        "B_ORDER",
        "AP_ORDER",
        "BP_ORDER",
        "A_DMAX",
        "B_DMAX",
        *(f"{k}{i}" for k in ("CTYPE", "CRVAL", "CRPIX", "CDELT", "CUNIT", "CROTA") for i in range(1, 10)),
        *(f"{k}{i}_{j}" for k in ("CD", "PC") for i in range(1, 10) for j in range(1, 10)),
        *(f"{k}{i}_{m}" for k in ("PV", "PS") for i in range(1, 10) for m in range(0, 100)),
        *(f"{k}_{p}_{q}" for k in ("A", "B", "AP", "BP") for p in range(10) for q in range(10)),
    ]
)
_CORE, _WCS = 1, 2
# Keyword field (padded to 8) -> what the one pass over a header does with the card.
_KEY_KIND = {**{k.ljust(8): _WCS for k in WCS_KEYS}, **{k.ljust(8): _CORE for k in _CORE_SET}}
_STRING_RE = re.compile(r"'((?:[^']|'')*)'")
_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")


class FitsProblem(Exception):
    """A file that cannot be read as FITS, with a stable code and the HDU concerned."""

    def __init__(self, code: Code, message: str, hdu: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hdu = hdu


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the reader accepts before it stops with TOO_MANY_HDUS, TOO_MANY_CARDS or TOO_LARGE."""

    max_hdus: int = 1000
    max_header_cards: int = 100_000
    max_total_header_cards: int = 1_000_000
    max_decompressed_bytes: int = 8 << 30


def parse_value(raw: str) -> str | bool | int | float | None:
    """The value of a card's value field (the text after "= "), comment dropped."""
    text = raw.lstrip()
    if text.startswith("'"):
        m = _STRING_RE.match(text)
        if m is None:  # unterminated string: take what is there
            return text[1:].rstrip()
        return m.group(1).replace("''", "'").rstrip()
    text = text.split("/", 1)[0].strip()
    if not text:
        return None
    if text == "T":
        return True
    if text == "F":
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        return text


class Header:
    """One HDU's header: the card images (up to END) and a keyword index built on demand."""

    def __init__(self, data: bytes) -> None:
        self.text = data.decode("ascii")
        self.ncards = len(self.text) // CARD
        self._lines: str | None = None
        self._index: dict[str, str] | None = None
        self._core: dict[str, str] | None = None
        self._wcs_cards = ""

    @property
    def lines(self) -> str:
        """The cards joined by newlines, for line-anchored regular expressions."""
        if self._lines is None:
            t = self.text
            self._lines = "\n".join([t[i : i + CARD] for i in range(0, len(t), CARD)])
        return self._lines

    def _build_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for hier, key, value in _CARD_RE.findall(self.lines):
            name = " ".join(hier.split()).upper() if hier else key.upper()
            if name and name not in ("COMMENT", "HISTORY") and name not in index:
                index[name] = value
        return index

    def _build_core(self) -> dict[str, str]:
        """The core keywords' raw values and the WCS cards, in one pass over the cards."""
        core: dict[str, str] = {}
        wcs: list[str] = []
        t = self.text
        for i in range(0, len(t), CARD):
            kind = _KEY_KIND.get(t[i : i + 8])
            if kind is not None and t[i + 8 : i + 9] == "=":
                if kind == _WCS:
                    wcs.append(t[i : i + CARD])
                else:
                    key = t[i : i + 8].rstrip()
                    if key not in core:
                        core[key] = t[i + 9 : i + CARD]
        pos = t.find("PRO CATG")
        while pos >= 0:
            i = pos - pos % CARD
            name, eq, value = t[i + 8 : i + CARD].partition("=")
            if t[i : i + 8] == "HIERARCH" and eq and " ".join(name.split()) == "ESO PRO CATG":
                core["ESO PRO CATG"] = value
                break
            pos = t.find("PRO CATG", pos + 1)
        self._wcs_cards = "".join(wcs)
        return core

    @property
    def wcs_cards(self) -> str:
        """The primary WCS's cards (80 characters each, in order)."""
        if self._core is None:
            self._core = self._build_core()
        return self._wcs_cards

    def raw(self, key: str) -> str | None:
        """The first card's value field as written (the bytes after "="), or None."""
        if key in _CORE_SET or key == "ESO PRO CATG":
            if self._core is None:
                self._core = self._build_core()
            return self._core.get(key)
        if self._index is None:
            self._index = self._build_index()
        return self._index.get(key)

    def __contains__(self, key: str) -> bool:
        return self.raw(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The first card's value for `key` (HIERARCH keys without "HIERARCH", single spaces)."""
        raw = self.raw(key)
        if raw is None:
            return default
        value = parse_value(raw)
        if isinstance(value, str) and value.endswith("&"):
            value = self._continued(key, value)
        return default if value is None else value

    def _continued(self, key: str, first: str) -> str:
        """A long string value split over CONTINUE cards."""
        lines = self.lines.split("\n")
        for i, line in enumerate(lines):
            m = _CARD_RE.match(line)
            if m and " ".join((m.group(1) or m.group(2) or "").split()).upper() == key:
                value, j = first[:-1], i + 1
                while j < len(lines) and lines[j].startswith("CONTINUE") and value is not None:
                    part = parse_value(lines[j][8:])
                    if not isinstance(part, str):
                        break
                    if part.endswith("&"):
                        value += part[:-1]
                        j += 1
                    else:
                        value += part
                        break
                return value
        return first


@dataclasses.dataclass
class HduHeader:
    """One HDU as the walk found it."""

    index: int
    header_offset: int
    data_offset: int
    data_size: int  # bytes of data, without padding
    header: Header
    xtension: str  # "" for the primary
    bitpix: int
    axes: list[int]  # NAXIS1 first
    pcount: int
    gcount: int
    # Mandatory keywords whose values are in free format (FITS 4.0 asks for fixed format).
    free_format: tuple[str, ...] = ()
    # Pixel byte ranges (offset within the data, length) a check asked for, with their bytes.
    captured: dict[tuple[int, int], bytes] = dataclasses.field(default_factory=dict)

    @property
    def padded_size(self) -> int:
        return -(-self.data_size // BLOCK) * BLOCK


# Called with each HDU once its header is read: returns the data byte ranges to capture.
OnHeader = Callable[[HduHeader], Sequence[tuple[int, int]]]


@dataclasses.dataclass
class Scan:
    """The result of a walk: the HDUs read, how the file was compressed, and sizes."""

    hdus: list[HduHeader]
    compression: str  # "none", "gzip", "compress"
    file_size: int
    fits_size: int  # bytes of FITS (decompressed)
    trailing_bytes: bool = False  # bytes after the last HDU that are not an extension


def _int_keyword(header: Header, key: str, index: int, default: int) -> int:
    """An optional integer keyword (a primary's PCOUNT, GCOUNT): its value, or the default."""
    value = header.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _nonstandard(index, f"{key} = {value!r}: FITS 4.0 requires an integer")
    return value


def _human(n: float) -> str:
    if n >= 1e21:
        return f"{n:.3g} bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n * 1000:.1f} EB"


# ---- FITS 4.0 mandatory keywords (sections 4.4.1 and 7) -----------------------------------------
# Each header opens with its mandatory keywords, in this order; their values are in fixed format
# (4.2: logical T/F in byte 30, integers right-justified to byte 30, a string's quote in byte 11).
# What FITS forbids (a value, a place) is NONSTANDARD_HEADER; a missing keyword stays BAD_HEADER.
# A free-format value is only warned about: some ESO and Gemini writers produce them.
_PRIMARY_ORDER = "SIMPLE, BITPIX, NAXIS, NAXIS1 ... NAXISn"
_EXTENSION_ORDER = "XTENSION, BITPIX, NAXIS, NAXIS1 ... NAXISn, PCOUNT, GCOUNT"


def _nonstandard(index: int, what: str) -> FitsProblem:
    return FitsProblem(Code.NONSTANDARD_HEADER, f"HDU {index}: {what}", index)


def _value_text(field: str) -> str:
    """A value as written (a string with its quotes), from the bytes after "=", for messages."""
    raw = field.strip()
    if raw.startswith("'"):
        m = _STRING_RE.match(raw)
        return m.group(0) if m else raw
    return raw.split("/", 1)[0].strip() or "(no value)"


def _mandatory_card(header: Header, index: int, position: int, key: str) -> str:
    """The card in `position` (0-based), which FITS 4.0 reserves for `key`."""
    card = header.text[position * CARD : (position + 1) * CARD]
    if card[:8] == f"{key:<8}":
        if card[8:9] == "=":
            return card
        raise _nonstandard(index, f"{key} has no value: FITS 4.0 requires '= ' in bytes 9-10, then the value")
    if key not in header:
        raise FitsProblem(Code.BAD_HEADER, f"HDU {index}: mandatory keyword {key} is missing", index)
    there = f"{card[:8].rstrip()!r}" if card.strip() else ("a blank card" if card else "the END card")
    opening, kind = (_PRIMARY_ORDER, "primary") if index == 0 else (_EXTENSION_ORDER, "extension")
    raise _nonstandard(
        index,
        f"{key} is out of place: FITS 4.0 requires a{'n' if index else ''} {kind} header to open with "
        f"{opening}, in this order, so {key} as card {position + 1}, where this header has {there}",
    )


def _integer_card(header: Header, index: int, position: int, key: str, free: list[str]) -> int:
    card = _mandatory_card(header, index, position, key)
    value = parse_value(card[9:])
    if isinstance(value, bool) or not isinstance(value, int):
        raise _nonstandard(index, f"{key} = {_value_text(card[9:])}: FITS 4.0 requires an integer")
    # Fixed format: right-justified in bytes 11-30, nothing but a space or a comment after.
    if not (card[9] == " " and card[29].isdigit() and card[30:31] in ("", " ", "/")):
        free.append(key)
    return value


def _primary_first_card(header: Header, free: list[str]) -> None:
    card = header.text[:CARD]
    if card[:8] != "SIMPLE  " and "SIMPLE" not in header:
        raise FitsProblem(Code.NOT_FITS, "the file does not start with a FITS primary header (SIMPLE)")
    card = _mandatory_card(header, 0, 0, "SIMPLE")
    value = parse_value(card[9:])
    if value is False:
        raise _nonstandard(
            0,
            "SIMPLE = F: the file says it does not conform to the FITS standard; "
            "FITS 4.0 requires SIMPLE = T",
        )
    if value is not True:
        raise _nonstandard(0, f"SIMPLE = {_value_text(card[9:])}: FITS 4.0 requires the logical value T")
    if not (card[9] == " " and card[29] == "T" and not card[10:29].strip()):
        free.append("SIMPLE")


def _extension_first_card(header: Header, index: int, free: list[str]) -> str:
    card = _mandatory_card(header, index, 0, "XTENSION")
    value = parse_value(card[9:])
    if not isinstance(value, str) or not value.strip():
        raise _nonstandard(
            index,
            f"XTENSION = {_value_text(card[9:])}: "
            "FITS 4.0 requires a character string naming the extension type",
        )
    # Fixed format: the quote in byte 11, the string padded to 8 characters.
    if not (card[9:11] == " '" and len(_value_text(card[9:])) >= 10):
        free.append("XTENSION")
    return value.strip().upper()


def _check_counts(xtension: str, index: int, bitpix: int, naxis: int, pcount: int, gcount: int) -> None:
    """The values FITS 4.0 (section 7) requires of the standard extensions' structure keywords."""
    if xtension == "IMAGE" and (pcount, gcount) != (0, 1):
        raise _nonstandard(
            index,
            f"PCOUNT = {pcount}, GCOUNT = {gcount} in an IMAGE extension: "
            "FITS 4.0 requires PCOUNT = 0 and GCOUNT = 1",
        )
    if xtension in ("TABLE", "BINTABLE"):
        if (bitpix, naxis) != (8, 2):
            raise _nonstandard(
                index,
                f"BITPIX = {bitpix}, NAXIS = {naxis} in a {xtension} extension: "
                "FITS 4.0 requires BITPIX = 8 and NAXIS = 2",
            )
        if gcount != 1 or pcount < 0 or (xtension == "TABLE" and pcount != 0):
            required = "PCOUNT = 0" if xtension == "TABLE" else "PCOUNT >= 0"
            raise _nonstandard(
                index,
                f"PCOUNT = {pcount}, GCOUNT = {gcount} in a {xtension} extension: "
                f"FITS 4.0 requires {required} and GCOUNT = 1",
            )
    if pcount < 0 or gcount < 0:
        raise _nonstandard(
            index, f"PCOUNT = {pcount}, GCOUNT = {gcount}: FITS 4.0 requires non-negative integers"
        )


def describe_structure(header: Header, index: int, offset: int, data_offset: int) -> HduHeader:
    """Reads the mandatory keywords (in their places, with the values FITS 4.0 allows) and computes
    the size of the data that follows."""
    free: list[str] = []
    if index == 0:
        _primary_first_card(header, free)
        xtension = ""
    else:
        xtension = _extension_first_card(header, index, free)
    bitpix = _integer_card(header, index, 1, "BITPIX", free)
    if bitpix not in VALID_BITPIX:
        raise _nonstandard(index, f"BITPIX = {bitpix}: FITS 4.0 allows only 8, 16, 32, 64, -32 and -64")
    naxis = _integer_card(header, index, 2, "NAXIS", free)
    if not 0 <= naxis <= 999:
        raise _nonstandard(index, f"NAXIS = {naxis}: FITS 4.0 requires an integer from 0 to 999")
    axes = []
    for n in range(1, naxis + 1):
        length = _integer_card(header, index, 2 + n, f"NAXIS{n}", free)
        if length < 0:
            raise _nonstandard(index, f"NAXIS{n} = {length}: FITS 4.0 requires a non-negative integer")
        axes.append(length)
    if index == 0:
        # PCOUNT and GCOUNT belong to random groups; EXTEND, when present, is logical.
        pcount = _int_keyword(header, "PCOUNT", index, 0)
        gcount = _int_keyword(header, "GCOUNT", index, 1)
        extend = header.raw("EXTEND")
        if extend is not None and not isinstance(parse_value(extend), bool):
            raise _nonstandard(
                0, f"EXTEND = {_value_text(extend)}: FITS 4.0 requires a logical value (T or F)"
            )
    else:
        pcount = _integer_card(header, index, 3 + naxis, "PCOUNT", free)
        gcount = _integer_card(header, index, 4 + naxis, "GCOUNT", free)
    _check_counts(xtension, index, bitpix, naxis, pcount, gcount)
    if naxis == 0:
        nbits = 0
    else:
        groups = index == 0 and header.get("GROUPS") is True and axes[0] == 0
        counted = axes[1:] if groups else axes
        nbits = abs(bitpix) * gcount * (pcount + math.prod(counted))
    return HduHeader(
        index=index,
        header_offset=offset,
        data_offset=data_offset,
        data_size=nbits // 8,
        header=header,
        xtension=xtension,
        bitpix=bitpix,
        axes=axes,
        pcount=pcount,
        gcount=gcount,
        free_format=tuple(free),
    )


class _HeaderBudget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total_cards = 0

    def check_block(self, index: int, cards_in_header: int) -> None:
        if cards_in_header > self.limits.max_header_cards:
            raise FitsProblem(
                Code.TOO_MANY_CARDS,
                f"HDU {index}: the header has more than {self.limits.max_header_cards} cards",
                index,
            )
        if self.total_cards + cards_in_header > self.limits.max_total_header_cards:
            raise FitsProblem(
                Code.TOO_MANY_CARDS,
                f"the headers hold more than {self.limits.max_total_header_cards} cards in all",
                index,
            )


def _end_card(block: bytes) -> int:
    """The card number of END within a block, or -1."""
    pos = 0
    while True:
        pos = block.find(b"END", pos)
        if pos < 0:
            return -1
        if pos % CARD == 0 and block[pos : pos + 8] == b"END     ":
            return pos // CARD
        pos += 1


_PRINTABLE = bytes(range(0x20, 0x7F))


def _card_at(block: bytes, key: bytes) -> int:
    """The number of the first card of a header block that starts with `key`, or -1 (also when
    bytes before it are not printable ASCII: then the block is not a header)."""
    pos = block.find(key)
    while pos >= 0 and pos % CARD:
        pos = block.find(key, pos + 1)
    if pos < 0 or block[:pos].translate(None, _PRINTABLE):
        return -1
    return pos // CARD


def _misplaced_first(block: bytes, index: int) -> FitsProblem | None:
    """A header block whose first card is not SIMPLE (primary) or XTENSION (extension) but that
    has that card further down: a header FITS forbids, not junk."""
    key = "SIMPLE" if index == 0 else "XTENSION"
    at = _card_at(block, f"{key:<8}=".encode())
    if at <= 0:
        return None
    first = block[:8].decode("ascii").rstrip()
    return _nonstandard(
        index,
        f"{key} is card {at + 1}, after {first!r}: FITS 4.0 requires {key} as the first card of "
        f"a{'n' if index else ''} {'extension' if index else 'primary'} header",
    )


def _check_block(block: bytes, index: int, cards_before: int) -> None:
    if not block.translate(None, _PRINTABLE):
        return  # only printable ASCII (the common case, checked at C speed)
    m = _NOT_PRINTABLE.search(block)
    if m is not None:
        card = cards_before + m.start() // CARD + 1
        raise FitsProblem(
            Code.BAD_HEADER,
            f"HDU {index}: header card {card} holds a byte that is not printable ASCII "
            f"(0x{block[m.start()]:02x}): a malformed card, or binary data where the header "
            "should have ended (no END card)",
            index,
        )


def _read_header(
    read: Callable[[int], bytes], index: int, budget: _HeaderBudget, ahead: int = 1
) -> tuple[Header, int]:
    """Reads header blocks until END; returns the header (cards up to END) and its size in bytes.

    `ahead` blocks are read at a time (a seekable file reads past the header harmlessly).
    """
    parts: list[bytes] = []
    nblocks = 0
    while True:
        chunk = read(BLOCK * ahead)
        for start in range(0, len(chunk) - BLOCK + 1, BLOCK):
            block = chunk[start : start + BLOCK]
            if index == 0 and nblocks == 0 and not block.startswith(b"SIMPLE"):
                misplaced = _misplaced_first(block, 0)
                if misplaced is not None:
                    raise misplaced
                raise FitsProblem(Code.NOT_FITS, "the file is not FITS: it does not start with SIMPLE")
            end = _end_card(block)
            head = block if end < 0 else block[: end * CARD]
            _check_block(head, index, nblocks * CARDS_PER_BLOCK)
            parts.append(head)
            nblocks += 1
            budget.check_block(index, nblocks * CARDS_PER_BLOCK)
            if end >= 0:
                budget.total_cards += nblocks * CARDS_PER_BLOCK
                return Header(b"".join(parts)), nblocks * BLOCK
        if len(chunk) < BLOCK * ahead:
            raise FitsProblem(
                Code.TRUNCATED,
                f"HDU {index}: the file ends inside the header, before its END card",
                index,
            )


def _looks_like_extension(block: bytes) -> bool:
    return block.startswith(b"XTENSION=")


def detect_compression(head: bytes) -> str:
    """ "none", "gzip" or "compress" from the first bytes (a block); raises for what we do not read."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(COMPRESS_MAGIC):
        return "compress"
    for magic, name in _OTHER_COMPRESSION.items():
        if head.startswith(magic):
            raise FitsProblem(
                Code.UNSUPPORTED_COMPRESSION,
                f"the file is {name}-compressed; upload FITS, gzip (.fits.gz), Unix compress (.fits.Z) "
                "or tile-compressed (fpack) FITS",
            )
    if head.startswith(b"SIMPLE") or _card_at(head[:BLOCK], b"SIMPLE  =") > 0:
        return "none"  # a SIMPLE card further down is refused by the header walk
    if not head:
        raise FitsProblem(Code.NOT_FITS, "the file is empty")
    raise FitsProblem(Code.NOT_FITS, "the file is not FITS: it does not start with SIMPLE")


def _check_hdu_count(index: int, limits: Limits) -> None:
    if index >= limits.max_hdus:
        raise FitsProblem(Code.TOO_MANY_HDUS, f"the file has more than {limits.max_hdus} HDUs", index)


def _ranges_ok(hdu: HduHeader, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted({(o, n) for o, n in ranges if o >= 0 and n > 0 and o + n <= hdu.data_size})


def walk_seekable(f: IO[bytes], limits: Limits, on_header: OnHeader | None = None) -> Scan:
    """Walks a plain FITS file by seeking over the data of each HDU."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    budget = _HeaderBudget(limits)
    hdus: list[HduHeader] = []
    offset = 0
    trailing = False
    while offset < size:
        index = len(hdus)
        f.seek(offset)
        if index > 0:
            probe = f.read(9)
            if not _looks_like_extension(probe):
                misplaced = _misplaced_first(probe + f.read(BLOCK - 9), index)
                if misplaced is not None:
                    raise misplaced
                trailing = True  # padding or junk after the last HDU, as astropy tolerates
                break
            f.seek(offset)
        _check_hdu_count(index, limits)
        header, header_size = _read_header(f.read, index, budget, ahead=8)
        hdu = describe_structure(header, index, offset, offset + header_size)
        end = hdu.data_offset + hdu.data_size
        if end > size:
            raise FitsProblem(
                Code.TRUNCATED,
                f"HDU {index}: the header declares {_human(hdu.data_size)} of data "
                f"but the file ends {_human(end - size)} short of it",
                index,
            )
        hdus.append(hdu)
        if on_header is not None:
            for o, n in _ranges_ok(hdu, on_header(hdu)):
                f.seek(hdu.data_offset + o)
                hdu.captured[(o, n)] = f.read(n)
        offset = hdu.data_offset + hdu.padded_size
    return Scan(hdus=hdus, compression="none", file_size=size, fits_size=size, trailing_bytes=trailing)


class _Decompressor:
    """`gzip -dc` as a stream: a thread feeds the compressed bytes in, we read FITS out."""

    def __init__(self, source: IO[bytes], cap: int, chunk: int = 1 << 20) -> None:
        gzip = shutil.which("gzip")
        if gzip is None:  # pragma: no cover - gzip is part of every Debian base system
            raise FitsProblem(Code.UNSUPPORTED_COMPRESSION, "gzip is not installed on the validator")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [gzip, "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
        )
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, AttributeError, ValueError):
                # Larger pipes: fewer context switches between gzip, the feeder and us (Linux only).
                fcntl.fcntl(pipe, F_SETPIPE_SZ, 1 << 20)  # type: ignore[arg-type]
        self._scratch = bytearray(1 << 20)
        self.cap = cap
        self.count = 0
        self._source = source
        self._chunk = chunk
        self._feed_error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, name="gzip-feed", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while True:
                data = self._source.read(self._chunk)
                if not data:
                    break
                stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):
            pass  # we stopped reading early and killed gzip
        except BaseException as exc:  # a store error: reported when the stream ends early
            self._feed_error = exc
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the stream)."""
        stdout = self.proc.stdout
        assert stdout is not None
        if self.count + n > self.cap:
            n = self.cap - self.count + 1  # one byte over tells us the cap was passed
        parts: list[bytes] = []
        got = 0
        while got < n:
            piece = stdout.read(min(n - got, 1 << 20))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        self.count += got
        if self.count > self.cap:
            raise FitsProblem(
                Code.TOO_LARGE, f"the file decompresses to more than {_human(self.cap)}, the limit"
            )
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Reads and drops n bytes (into one scratch buffer); returns how many there were."""
        stdout = self.proc.stdout
        assert stdout is not None
        view = memoryview(self._scratch)
        done = 0
        while done < n:
            want = min(n - done, len(view))
            if self.count + want > self.cap:
                want = self.cap - self.count + 1
            got = stdout.readinto(view[:want])  # type: ignore[attr-defined]
            if not got:
                break
            done += got
            self.count += got
            if self.count > self.cap:
                raise FitsProblem(
                    Code.TOO_LARGE, f"the file decompresses to more than {_human(self.cap)}, the limit"
                )
        return done

    def finish(self) -> tuple[int, str]:
        """Waits for gzip to end (killing it if it still runs); returns its status and message."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdout is not None
                # Drain at most a little: a well-formed stream is already at its end here.
                rest = self.proc.stdout.read(BLOCK)
                if rest:
                    self.proc.kill()
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            rc = self.proc.wait()
        self._feeder.join(timeout=30)
        self._stderr.seek(0)
        message = self._stderr.read(2000).decode("utf-8", "replace").strip()
        self._stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc, message

    def raise_source_error(self) -> None:
        """Re-raises what reading the compressed source failed with (a store error, not a bad file)."""
        if self._feed_error is not None:
            raise self._feed_error

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.finish()


def walk_stream(
    source: IO[bytes], compression: str, file_size: int, limits: Limits, on_header: OnHeader | None = None
) -> Scan:
    """Walks a gzip or .Z compressed FITS file once, front to back, through `gzip -dc`."""
    dec = _Decompressor(source, limits.max_decompressed_bytes)
    budget = _HeaderBudget(limits)
    hdus: list[HduHeader] = []
    offset = 0
    trailing = False
    pending: bytes = b""

    def read(n: int) -> bytes:
        nonlocal pending
        if pending:
            data, pending = pending[:n], pending[n:]
            if len(data) < n:
                data += dec.read(n - len(data))
            return data
        return dec.read(n)

    try:
        while True:
            index = len(hdus)
            if index > 0:
                probe = read(BLOCK)
                if not probe:
                    break
                if not _looks_like_extension(probe):
                    misplaced = _misplaced_first(probe, index)
                    if misplaced is not None:
                        raise misplaced
                    trailing = True
                    break
                pending = probe
            _check_hdu_count(index, limits)
            header, header_size = _read_header(read, index, budget)
            hdu = describe_structure(header, index, offset, offset + header_size)
            if hdu.data_offset + hdu.data_size > limits.max_decompressed_bytes:
                raise FitsProblem(
                    Code.TOO_LARGE,
                    f"HDU {index}: the header declares {_human(hdu.data_size)} of data; the file would "
                    f"decompress to more than {_human(limits.max_decompressed_bytes)}, the limit",
                    index,
                )
            hdus.append(hdu)
            wanted = _ranges_ok(hdu, on_header(hdu)) if on_header is not None else []
            pos = 0
            for o, n in wanted:
                if o < pos:  # overlapping ranges: capture from what is already past
                    continue
                if dec.skip(o - pos) < o - pos:
                    break
                data = read(n)
                if len(data) < n:
                    break
                hdu.captured[(o, n)] = data
                pos = o + n
            got = pos + dec.skip(hdu.data_size - pos)
            if got < hdu.data_size:
                raise FitsProblem(
                    Code.TRUNCATED,
                    f"HDU {index}: the header declares {_human(hdu.data_size)} of data "
                    f"but the stream ends {_human(hdu.data_size - got)} short of it",
                    index,
                )
            # Padding: a missing final padding is tolerated, as astropy does.
            dec.skip(hdu.padded_size - hdu.data_size)
            offset = hdu.data_offset + hdu.padded_size
    except FitsProblem as problem:
        if problem.code != Code.TRUNCATED:
            dec.abort()
            raise
        # The stream ended early: gzip says whether it was cut or corrupt, unless reading the source failed.
        rc, message = dec.finish()
        dec.raise_source_error()
        if rc not in (0, 2):
            raise _stream_problem(rc, message, problem.hdu) from None
        raise
    except BaseException:
        dec.abort()
        raise
    rc, message = dec.finish()
    dec.raise_source_error()
    if rc not in (0, 2) and not trailing:
        raise _stream_problem(rc, message, None)
    return Scan(
        hdus=hdus, compression=compression, file_size=file_size, fits_size=offset, trailing_bytes=trailing
    )


def _stream_problem(rc: int, message: str, hdu: int | None) -> FitsProblem:
    text = message.replace("stdin: ", "").strip() or f"gzip exited with status {rc}"
    if "unexpected end of file" in text:
        return FitsProblem(Code.TRUNCATED, f"the compressed stream is truncated ({text})", hdu)
    return FitsProblem(Code.BAD_COMPRESSION, f"the compressed stream is corrupt ({text})", hdu)


def walk(f: IO[bytes], limits: Limits, on_header: OnHeader | None = None) -> Scan:
    """Walks any supported file: plain FITS by seeking, gzip and .Z as one stream."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    head = f.read(BLOCK)
    f.seek(0)
    compression = detect_compression(head)
    if compression == "none":
        return walk_seekable(f, limits, on_header)
    return walk_stream(f, compression, size, limits, on_header)
