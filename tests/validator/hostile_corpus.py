"""A corpus of broken and hostile FITS files, each with the stable error code the validator must give.

Run as a script to write the corpus into a folder (and a MANIFEST.json of the
expected codes): `python -m tests.validator.hostile_corpus OUT_DIR`.
The validation limits the corpus assumes are `CORPUS_LIMITS` (a small
decompression cap, so the bombs stay cheap to make and to refuse).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import json
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ncompress
import numpy as np

from services.shared.fits_header import Limits

CORPUS_LIMITS = Limits(
    max_hdus=1000, max_header_cards=100_000, max_total_header_cards=1_000_000, max_decompressed_bytes=64 << 20
)
TARGET = (150.0, 2.0)
BLOCK = 2880


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    code: str  # the first (and only) error code expected
    make: Callable[[Path], None]
    why: str


def card(key: str, value: object = None, comment: str = "") -> str:
    """One 80-character card; value written in FITS fixed format."""
    if value is None:
        text = key.ljust(80)
    elif isinstance(value, bool):
        text = f"{key:<8}= {'T' if value else 'F':>20}"
    elif isinstance(value, int | float):
        text = f"{key:<8}= {value!r:>20}"
    elif isinstance(value, str) and value.startswith("RAW:"):
        text = f"{key:<8}= {value[4:]:>20}"
    else:
        quoted = "'" + str(value).replace("'", "''").ljust(8) + "'"
        text = f"{key:<8}= {quoted:<20}"
    if comment:
        text += " / " + comment
    return text.ljust(80)[:80]


def header(cards: list[str], end: bool = True) -> bytes:
    text = "".join(c.ljust(80)[:80] for c in cards) + ("END".ljust(80) if end else "")
    raw = text.encode("latin-1")
    return raw + b" " * (-len(raw) % BLOCK)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def wcs_cards(size: int = 64, **override: object) -> list[str]:
    values: dict[str, object] = {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": TARGET[0],
        "CRVAL2": TARGET[1],
        "CRPIX1": (size + 1) / 2,
        "CRPIX2": (size + 1) / 2,
        "CD1_1": -1 / 3600,
        "CD1_2": 0.0,
        "CD2_1": 0.0,
        "CD2_2": 1 / 3600,
        "RADESYS": "ICRS",
    }
    values.update(override)
    return [card(k, v) for k, v in values.items() if v is not None]


def image_cards(size: int = 64, bitpix: int = -32, primary: bool = True, **wcs: Any) -> list[str]:
    first = [card("SIMPLE", True)] if primary else [card("XTENSION", "IMAGE")]
    cards = [*first, card("BITPIX", bitpix), card("NAXIS", 2), card("NAXIS1", size), card("NAXIS2", size)]
    if not primary:
        cards += [card("PCOUNT", 0), card("GCOUNT", 1)]
    return cards + [card("FILTER", "R")] + wcs_cards(size, **wcs)


def pixels(size: int = 64, bitpix: int = -32) -> bytes:
    dtype = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix]
    rng = np.random.default_rng(size)
    return pad(rng.normal(100, 5, (size, size)).astype(dtype).tobytes())


def valid(size: int = 64, **wcs: Any) -> bytes:
    return header(image_cards(size, **wcs)) + pixels(size)


def empty_primary() -> bytes:
    return header([card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0), card("EXTEND", True)])


def _write(data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def _lazy(fn: Callable[[], bytes]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(fn())

    return write


def _gzip_stream(pieces: Iterator[bytes]) -> bytes:
    """gzip of the concatenated pieces, compressed as they come (the whole is never in memory)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()
    for piece in pieces:
        out.write(co.compress(piece))
    out.write(co.flush())
    return out.getvalue()


def _zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    zero = bytes(chunk)
    while total > 0:
        yield zero[: min(chunk, total)]
        total -= chunk


def gzip_bomb_declared() -> bytes:
    """A 16 GB image declared in a header, zeros following: refused on the header alone."""
    return _gzip_stream(iter([header(image_cards(65536)), *_zeros(4 << 20)]))


def gzip_bomb_streamed() -> bytes:
    """Many 8 MB extensions of zeros (128 MB in a ~130 KB file): the decompression cap stops it."""

    def pieces() -> Iterator[bytes]:
        yield empty_primary()
        for i in range(16):
            cards = image_cards(2048, primary=False)
            cards.insert(7, card("EXTNAME", f"Z{i}"))  # after GCOUNT, as FITS requires
            yield header(cards)
            yield from _zeros(-(-2048 * 2048 * 4 // BLOCK) * BLOCK)

    return _gzip_stream(pieces())


def many_tiny_hdus(n: int = 5000) -> bytes:
    ext = header(
        [card("XTENSION", "IMAGE"), card("BITPIX", 8), card("NAXIS", 0), card("PCOUNT", 0), card("GCOUNT", 1)]
    )
    return valid() + ext * n


def million_cards() -> bytes:
    filler = "".join(card(f"K{i % 1000000:07d}", i) for i in range(1000))
    body = filler * 1000  # a million cards, 80 MB
    first = "".join(image_cards(64))
    raw = (first + body + "END".ljust(80)).encode("ascii")
    return raw + b" " * (-len(raw) % BLOCK) + pixels(64)


def _replace_card(data: bytes, key: str, new: str) -> bytes:
    raw = bytearray(data)
    at = raw.find(key.ljust(8).encode() + b"=")
    assert at >= 0 and at % 80 == 0, key
    raw[at : at + 80] = new.ljust(80)[:80].encode("latin-1")
    return bytes(raw)


def _table_only() -> bytes:
    cols = [
        card("XTENSION", "BINTABLE"),
        card("BITPIX", 8),
        card("NAXIS", 2),
        card("NAXIS1", 8),
        card("NAXIS2", 10),
        card("PCOUNT", 0),
        card("GCOUNT", 1),
        card("TFIELDS", 1),
        card("TTYPE1", "X"),
        card("TFORM1", "D"),
    ]
    return empty_primary() + header(cols) + pad(bytes(80))


def _lying_foreign() -> bytes:
    table = _replace_card(_table_only(), "XTENSION", card("XTENSION", "FOREIGN"))
    return _replace_card(table, "GCOUNT", card("GCOUNT", 10**9))


def _tile(zcmptype: str = "RICE_1", znaxis: object = 2, size: int = 64, rows: int = 64) -> bytes:
    cards = [
        card("XTENSION", "BINTABLE"),
        card("BITPIX", 8),
        card("NAXIS", 2),
        card("NAXIS1", 8),
        card("NAXIS2", rows),
        card("PCOUNT", 0),
        card("GCOUNT", 1),
        card("TFIELDS", 1),
        card("TTYPE1", "COMPRESSED_DATA"),
        card("TFORM1", "1PB(0)"),
        card("ZIMAGE", True),
        card("ZBITPIX", -32),
        card("ZNAXIS", znaxis),
        card("ZNAXIS1", size),
        card("ZNAXIS2", size),
        card("ZCMPTYPE", zcmptype),
        card("FILTER", "R"),
        *wcs_cards(size),
    ]
    return empty_primary() + header(cards) + pad(bytes(8 * rows))


def _cube_only() -> bytes:
    cards = image_cards(16)
    cards[2] = card("NAXIS", 3)
    cards.insert(5, card("NAXIS3", 4))
    return header(cards) + pad(bytes(16 * 16 * 4 * 4))


def _err_only() -> bytes:
    ext = image_cards(64, primary=False)
    ext.insert(7, card("EXTNAME", "ERR"))
    return empty_primary() + header(ext) + pixels(64)


def _truncated_extension_header() -> bytes:
    ext = header(image_cards(64, primary=False))
    return valid() + ext[:1500]


def cases() -> list[Case]:
    v = valid()
    hdr_len = len(header(image_cards(64)))
    c: list[Case] = [
        # Not FITS at all.
        Case("empty", "NOT_FITS", _write(b""), "a zero-byte upload"),
        Case("random_bytes", "NOT_FITS", _write(np.random.default_rng(1).bytes(10_000)), "noise"),
        Case("text_file", "NOT_FITS", _write(b"hello, this is not an image\n" * 200), "a text file"),
        Case("png", "NOT_FITS", _write(b"\x89PNG\r\n\x1a\n" + bytes(5000)), "a PNG signature"),
        Case("simple_lowercase", "NOT_FITS", _write(v.replace(b"SIMPLE", b"simple", 1)), "no SIMPLE card"),
        Case("gzip_of_gzip", "NOT_FITS", _write(gzip.compress(gzip.compress(v))), "FITS gzipped twice"),
        Case("gzip_of_text", "NOT_FITS", _write(gzip.compress(b"not fits\n" * 1000)), "gzip of a text file"),
        # Truncation.
        Case("truncated_in_header", "TRUNCATED", _write(v[:1000]), "cut inside the first header block"),
        Case(
            "truncated_at_block",
            "TRUNCATED",
            _write(header([*image_cards(64), *[card("COMMENT", None)] * 40])[:BLOCK]),
            "cut after a whole header block, before END",
        ),
        Case("truncated_in_data", "TRUNCATED", _write(v[: hdr_len + 5000]), "cut inside the data"),
        Case(
            "truncated_extension_header",
            "TRUNCATED",
            _lazy(_truncated_extension_header),
            "a second HDU cut in its header",
        ),
        Case("truncated_gzip", "TRUNCATED", _write(gzip.compress(v)[:3000]), "a gzip stream cut short"),
        Case("truncated_Z", "TRUNCATED", _write(ncompress.compress(v)[:3000]), "a .Z stream cut short"),
        Case(
            "lying_naxis_terabytes",
            "TRUNCATED",
            _write(header(image_cards(1_000_000, bitpix=-64)) + bytes(BLOCK)),
            "8 TB declared in a 6 KB file",
        ),
        Case(
            "lying_naxis_huge_int",
            "TRUNCATED",
            _write(_replace_card(v, "NAXIS1", card("NAXIS1", "RAW:99999999999999999999"))),
            "an axis longer than any integer type",
        ),
        Case(
            "lying_gcount_foreign",
            "TRUNCATED",
            _lazy(_lying_foreign),
            "an extension of a type we do not know claiming a billion groups",
        ),
        # Malformed headers.
        Case(
            "no_end_card", "BAD_HEADER", _write(header(image_cards(64), end=False) + pixels()), "END missing"
        ),
        Case(
            "end_misaligned",
            "BAD_HEADER",
            _write(header([*image_cards(64), "   END"], end=False) + pixels()),
            "END not at the start of a card",
        ),
        Case(
            "bitpix_missing",
            "BAD_HEADER",
            _write(_replace_card(v, "BITPIX", card("COMMENT", None))),
            "no BITPIX",
        ),
        Case("naxis_missing", "BAD_HEADER", _write(_replace_card(v, "NAXIS", card("COMMENT"))), "no NAXIS"),
        Case(
            "naxis2_missing", "BAD_HEADER", _write(_replace_card(v, "NAXIS2", card("COMMENT"))), "no NAXIS2"
        ),
        Case(
            "non_ascii_header",
            "BAD_HEADER",
            _write(_replace_card(v, "FILTER", card("FILTER", "R", "Ångström filter"))),
            "Latin-1 bytes in a comment",
        ),
        Case("nul_in_header", "BAD_HEADER", _write(v[:400] + b"\0" * 80 + v[480:]), "NUL bytes in a card"),
        # Mandatory keywords with values FITS 4.0 forbids (every rule: tests/validator/test_fits_standard.py).
        Case(
            "bitpix_7",
            "NONSTANDARD_HEADER",
            _write(_replace_card(v, "BITPIX", card("BITPIX", 7))),
            "BITPIX 7",
        ),
        Case(
            "bitpix_text",
            "NONSTANDARD_HEADER",
            _write(_replace_card(v, "BITPIX", card("BITPIX", "abc"))),
            "BITPIX 'abc'",
        ),
        Case(
            "naxis_1000",
            "NONSTANDARD_HEADER",
            _write(_replace_card(v, "NAXIS", card("NAXIS", 1000))),
            "NAXIS 1000",
        ),
        Case(
            "negative_axis",
            "NONSTANDARD_HEADER",
            _write(_replace_card(v, "NAXIS1", card("NAXIS1", -64))),
            "NAXIS1 -64",
        ),
        Case(
            "float_axis",
            "NONSTANDARD_HEADER",
            _write(_replace_card(v, "NAXIS1", card("NAXIS1", 64.5))),
            "NAXIS1 64.5",
        ),
        Case(
            "negative_pcount",
            "NONSTANDARD_HEADER",
            _write(_replace_card(_table_only(), "PCOUNT", card("PCOUNT", -5))),
            "PCOUNT -5",
        ),
        Case(
            "xtension_empty",
            "NONSTANDARD_HEADER",
            _write(_replace_card(_table_only(), "XTENSION", card("XTENSION", ""))),
            "XTENSION without a value",
        ),
        Case(
            "lying_gcount",
            "NONSTANDARD_HEADER",
            _write(_replace_card(_table_only(), "GCOUNT", card("GCOUNT", 10**9))),
            "a table claiming a billion groups (a BINTABLE has GCOUNT = 1)",
        ),
        Case("tile_bad_znaxis", "BAD_HEADER", _lazy(lambda: _tile(znaxis="two")), "ZNAXIS 'two'"),
        Case("tile_rows_lie", "BAD_HEADER", _lazy(lambda: _tile(rows=3)), "3 tile rows for 64 tiles"),
        Case(
            "tile_declared_huge",
            "TOO_LARGE",
            _lazy(lambda: _tile(size=200_000, rows=200_000)),
            "a 160 GB image in a 1.6 MB tile-compressed file",
        ),
        # Limits.
        Case("many_tiny_hdus", "TOO_MANY_HDUS", _lazy(many_tiny_hdus), "5000 empty extensions"),
        Case("million_cards", "TOO_MANY_CARDS", _lazy(million_cards), "a header of a million cards (80 MB)"),
        Case("gzip_bomb_declared", "TOO_LARGE", _lazy(gzip_bomb_declared), "16 GB declared in a gzip file"),
        Case("gzip_bomb_streamed", "TOO_LARGE", _lazy(gzip_bomb_streamed), "128 MB of zeros in 130 KB"),
        Case(
            "Z_declared_huge",
            "TOO_LARGE",
            _write(ncompress.compress(header(image_cards(200_000, bitpix=-64)) + bytes(BLOCK))),
            "320 GB declared in a .Z file",
        ),
        # Compression we do not read, or a corrupt stream.
        Case("bzip2", "UNSUPPORTED_COMPRESSION", _write(bz2.compress(v)), "bzip2"),
        Case("zip", "UNSUPPORTED_COMPRESSION", _lazy(lambda: _zip(v)), "a zip archive"),
        Case("xz_magic", "UNSUPPORTED_COMPRESSION", _write(b"\xfd7zXZ\x00" + bytes(100)), "xz"),
        Case(
            "tile_unknown_algorithm",
            "UNSUPPORTED_COMPRESSION",
            _lazy(lambda: _tile("LZMA_9")),
            "ZCMPTYPE LZMA_9",
        ),
        Case("gzip_bad_crc", "BAD_COMPRESSION", _lazy(lambda: _bad_crc(gzip.compress(v))), "a wrong CRC"),
        Case(
            "gzip_bad_deflate", "BAD_COMPRESSION", _lazy(lambda: _bad_deflate(v)), "a corrupt deflate block"
        ),
        # No image of the sky.
        Case("zero_axis", "NO_IMAGE_HDU", _write(_replace_card(v, "NAXIS1", card("NAXIS1", 0))), "NAXIS1 0"),
        Case("table_only", "NO_IMAGE_HDU", _lazy(_table_only), "a binary table and nothing else"),
        Case("cube_only", "NO_IMAGE_HDU", _lazy(_cube_only), "a true cube"),
        Case("error_plane_only", "NO_IMAGE_HDU", _lazy(_err_only), "only an ERR extension"),
        Case("header_only", "NO_IMAGE_HDU", _lazy(empty_primary), "a primary header with no data"),
        # Unusable WCS.
        Case("cd_zeros", "INVALID_WCS", _write(valid(CD1_1=0.0, CD2_2=0.0)), "a CD matrix of zeros"),
        Case("nan_crval", "INVALID_WCS", _write(valid(CRVAL1="RAW:NaN")), "CRVAL1 NaN"),
        Case("inf_crpix", "INVALID_WCS", _write(valid(CRPIX2="RAW:Infinity")), "CRPIX2 infinite"),
        Case(
            "unknown_ctype",
            "INVALID_WCS",
            _write(valid(CTYPE1="RA---QQQ", CTYPE2="DEC--QQQ")),
            "projection QQQ",
        ),
        Case("linear_ctype", "INVALID_WCS", _write(valid(CTYPE1="FOO", CTYPE2="BAR")), "no celestial axes"),
        Case("two_latitudes", "INVALID_WCS", _write(valid(CTYPE1="DEC--TAN")), "DEC on both axes"),
        Case(
            "no_wcs",
            "INVALID_WCS",
            _write(valid(CTYPE1=None, CTYPE2=None, CRVAL1=None, CRVAL2=None, CD1_1=None, CD2_2=None)),
            "no WCS at all",
        ),
        Case("tiny_scale", "INVALID_WCS", _write(valid(CD1_1=-1e-12, CD2_2=1e-12)), "1e-12 degree pixels"),
        Case("crval2_200", "INVALID_WCS", _write(valid(CRVAL2=200.0)), "declination 200"),
        Case("cd_text", "INVALID_WCS", _write(valid(CD1_1="abc")), "CD1_1 'abc'"),
        Case(
            "sip_order_huge",
            "INVALID_WCS",
            _write(valid(CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", A_ORDER=100000, B_ORDER=100000)),
            "SIP order 100000 (10^10 coefficients)",
        ),
        Case("wcsaxes_huge", "INVALID_WCS", _write(valid(WCSAXES=999)), "WCSAXES 999"),
    ]
    return c


def _zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("image.fits", data)
    return out.getvalue()


def _bad_crc(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[-8] ^= 0xFF
    return bytes(raw)


def _bad_deflate(data: bytes) -> bytes:
    """A stored (uncompressed) deflate block whose length check (NLEN) is wrong."""
    body = data[:1000]
    block = b"\x01" + len(body).to_bytes(2, "little") + (len(body) ^ 0x1234).to_bytes(2, "little") + body
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return head + block + zlib.crc32(body).to_bytes(4, "little") + len(body).to_bytes(4, "little")


def build(folder: Path) -> list[tuple[Case, Path]]:
    """Writes every case into folder; returns (case, path) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case in cases():
        path = folder / f"{case.name}.fits"
        case.make(path)
        out.append((case, path))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.validator.hostile_corpus OUT_DIR", file=sys.stderr)
        return 2
    built = build(Path(argv[0]))
    manifest = {p.name: {"code": c.code, "why": c.why} for c, p in built}
    (Path(argv[0]) / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(built)} files in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
