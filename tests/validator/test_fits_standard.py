"""The FITS 4.0 rules on mandatory keywords (sections 4.4.1 and 7): a value or a place the standard
forbids is refused with NONSTANDARD_HEADER; a free-format value, as some ESO and Gemini writers
produce, is accepted with a warning."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from bgimages.common.v1 import common_pb2
from services.validator import Target, validate_path
from tests.validator.hostile_corpus import TARGET, card, empty_primary, header, image_cards, pixels

ROOT = Path(__file__).resolve().parents[2]


def primary(change: Callable[[list[str]], None]) -> bytes:
    """A good single-HDU image whose primary cards `change` edits in place."""
    cards = image_cards(64)
    change(cards)
    return header(cards) + pixels(64)


def extension(change: Callable[[list[str]], None], xtension: str = "IMAGE") -> bytes:
    """An empty primary, then a good image extension (or a small BINTABLE) whose cards `change` edits."""
    if xtension == "IMAGE":
        cards = image_cards(64, primary=False)
        data = pixels(64)
    else:
        cards = [
            card("XTENSION", "BINTABLE"),
            card("BITPIX", 8),
            card("NAXIS", 2),
            card("NAXIS1", 8),
            card("NAXIS2", 10),
            card("PCOUNT", 0),
            card("GCOUNT", 1),
            card("TFIELDS", 1),
            card("TFORM1", "D"),
        ]
        data = bytes(2880)
    change(cards)
    return empty_primary() + header(cards) + data


def swap(i: int, j: int) -> Callable[[list[str]], None]:
    def edit(cards: list[str]) -> None:
        cards[i], cards[j] = cards[j], cards[i]

    return edit


def drop(i: int) -> Callable[[list[str]], None]:
    def edit(cards: list[str]) -> None:
        del cards[i]

    return edit


def put(i: int, new: str) -> Callable[[list[str]], None]:
    def edit(cards: list[str]) -> None:
        cards[i] = new

    return edit


# (name, file, HDU, words the message must hold: the keyword, what FITS 4.0 requires)
FORBIDDEN: list[tuple[str, Callable[[], bytes], int, list[str]]] = [
    (
        "simple_false",
        lambda: primary(put(0, card("SIMPLE", False))),
        0,
        ["SIMPLE = F", "requires SIMPLE = T"],
    ),
    ("simple_not_logical", lambda: primary(put(0, card("SIMPLE", 1))), 0, ["SIMPLE = 1", "logical value T"]),
    ("simple_not_first", lambda: primary(swap(0, 1)), 0, ["SIMPLE is card 2", "first card"]),
    (
        "bitpix_12",
        lambda: primary(put(1, card("BITPIX", 12))),
        0,
        ["BITPIX = 12", "8, 16, 32, 64, -32 and -64"],
    ),
    (
        "bitpix_after_naxis",
        lambda: primary(swap(1, 2)),
        0,
        ["BITPIX is out of place", "as card 2", "'NAXIS'"],
    ),
    ("naxis_1000", lambda: primary(put(2, card("NAXIS", 1000))), 0, ["NAXIS = 1000", "from 0 to 999"]),
    ("naxis2_before_naxis1", lambda: primary(swap(3, 4)), 0, ["NAXIS1 is out of place", "as card 4"]),
    ("negative_naxis2", lambda: primary(put(4, card("NAXIS2", -64))), 0, ["NAXIS2 = -64", "non-negative"]),
    ("naxis1_text", lambda: primary(put(3, card("NAXIS1", "64"))), 0, ["NAXIS1 = '64", "an integer"]),
    (
        "extend_5",
        lambda: primary(lambda c: c.insert(5, card("EXTEND", 5))),
        0,
        ["EXTEND = 5", "logical value (T or F)"],
    ),
    (
        "image_pcount_1",
        lambda: extension(put(5, card("PCOUNT", 1))),
        1,
        ["PCOUNT = 1, GCOUNT = 1 in an IMAGE extension", "PCOUNT = 0 and GCOUNT = 1"],
    ),
    (
        "image_gcount_2",
        lambda: extension(put(6, card("GCOUNT", 2))),
        1,
        ["PCOUNT = 0, GCOUNT = 2 in an IMAGE extension", "PCOUNT = 0 and GCOUNT = 1"],
    ),
    (
        "xtension_not_first",
        lambda: extension(swap(0, 1)),
        1,
        ["XTENSION is card 2", "'BITPIX'", "first card"],
    ),
    ("gcount_before_pcount", lambda: extension(swap(5, 6)), 1, ["PCOUNT is out of place", "as card 6"]),
    (
        "extname_before_gcount",
        lambda: extension(lambda c: c.insert(6, card("EXTNAME", "SCI"))),
        1,
        ["GCOUNT is out of place", "'EXTNAME'"],
    ),
    (
        "bintable_gcount_2",
        lambda: extension(put(6, card("GCOUNT", 2)), "BINTABLE"),
        1,
        ["GCOUNT = 2 in a BINTABLE extension", "PCOUNT >= 0 and GCOUNT = 1"],
    ),
    (
        "bintable_bitpix_16",
        lambda: extension(put(1, card("BITPIX", 16)), "BINTABLE"),
        1,
        ["BITPIX = 16, NAXIS = 2 in a BINTABLE extension", "BITPIX = 8 and NAXIS = 2"],
    ),
    ("simple_no_value", lambda: primary(put(0, "SIMPLE   T")), 0, ["SIMPLE has no value", "'= '"]),
]


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize(("name", "make", "hdu", "words"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_forbidden_value_or_place_is_refused(
    tmp_path: Path,
    name: str,
    make: Callable[[], bytes],
    hdu: int,
    words: list[str],
    compression: str,
) -> None:
    data = make()
    path = tmp_path / f"{name}.fits"
    path.write_bytes(gzip.compress(data) if compression == "gzip" else data)
    report = validate_path(path, Target(TARGET))
    assert not report.ok
    assert [(e.code, e.hdu) for e in report.errors] == [("NONSTANDARD_HEADER", hdu)]
    message = report.errors[0].message
    assert message.startswith(f"HDU {hdu}: ") and "FITS 4.0" in message
    for word in words:
        assert word in message, message


def test_missing_mandatory_keyword_stays_bad_header(tmp_path: Path) -> None:
    """Presence is BAD_HEADER as before; NONSTANDARD_HEADER is for a keyword there but wrong."""
    path = tmp_path / "no_gcount.fits"
    path.write_bytes(extension(drop(6)))
    report = validate_path(path, Target(TARGET))
    assert [(e.code, e.hdu) for e in report.errors] == [("BAD_HEADER", 1)]
    assert "GCOUNT is missing" in report.errors[0].message


def test_a_primary_without_simple_anywhere_is_not_fits(tmp_path: Path) -> None:
    path = tmp_path / "no_simple.fits"
    path.write_bytes(primary(put(0, card("COMMENT"))))
    assert [e.code for e in validate_path(path, Target(TARGET)).errors] == ["NOT_FITS"]


# ---- free format: accepted, with a warning ---------------------------------------------------------


def free(key: str, value: str, comment: str = "") -> str:
    """A card in free format: the value right after "= ", as some ESO and Gemini writers put it."""
    return f"{key:<8}= {value}" + (f" / {comment}" if comment else "")


def test_free_format_simple_and_bitpix_pass_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "free.fits"
    path.write_bytes(
        primary(
            lambda c: c.__setitem__(slice(0, 2), [free("SIMPLE", "T", "conforms"), free("BITPIX", "-32")])
        )
    )
    report = validate_path(path, Target(TARGET))
    assert report.ok, report.errors
    assert [(w.code, w.hdu) for w in report.warnings] == [("NONSTANDARD_HEADER", 0)]
    message = report.warnings[0].message
    assert message.startswith("HDU 0: SIMPLE, BITPIX have their values in free format")
    assert "fixed format" in message and "Accepted" in message
    proto = report.to_proto()
    assert proto.ok and [(w.code, w.hdu) for w in proto.warnings] == [(common_pb2.NONSTANDARD_HEADER, 0)]


def test_check_command_prints_the_warnings(tmp_path: Path) -> None:
    """`check` exits 0 for an accepted file and lists the warnings beside the keys it always had."""
    path = tmp_path / "free.fits"
    path.write_bytes(primary(put(1, free("BITPIX", "-32"))))
    proc = subprocess.run(
        [sys.executable, "-m", "services.validator", "check", str(path), "--target", *map(str, TARGET)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = json.loads(proc.stdout)
    assert {"ok", "filter", "filter_source", "errors", "hdus", "compression", "object_name"} <= body.keys()
    assert body["ok"] is True and body["errors"] == []
    assert [(w["code"], w["hdu"]) for w in body["warnings"]] == [("NONSTANDARD_HEADER", 0)]
    assert "BITPIX has its value in free format" in body["warnings"][0]["message"]


def test_free_format_extensions_are_warned_about_once(tmp_path: Path) -> None:
    """A Gemini-like MEF written in free format: one warning naming the HDUs, the file accepted."""
    cards = [free("SIMPLE", "T"), free("BITPIX", "16"), free("NAXIS", "0"), card("EXTEND", True)]
    parts = [header(cards)]
    for n in (1, 2):
        ext = image_cards(64, primary=False, CRVAL1=TARGET[0] + (n - 1.5) * 64 / 3600)
        ext[0] = "XTENSION= 'IMAGE'"
        ext[3] = free("NAXIS1", "64")
        ext.insert(7, card("EXTNAME", f"SCI{n}"))
        parts += [header(ext), pixels(64)]
    path = tmp_path / "gemini_like.fits"
    path.write_bytes(b"".join(parts))
    report = validate_path(path, Target(TARGET))
    assert report.ok, report.errors
    assert [(w.code, w.hdu) for w in report.warnings] == [
        ("NONSTANDARD_HEADER", 0),
        ("NONSTANDARD_HEADER", None),
    ]
    assert report.warnings[0].message.startswith(
        "HDU 0: SIMPLE, BITPIX, NAXIS have their values in free format"
    )
    assert report.warnings[1].message.startswith(
        "HDUs 1-2: XTENSION, NAXIS1 have their values in free format"
    )


def test_a_warning_does_not_hide_a_refusal(tmp_path: Path) -> None:
    """A free-format header that also breaks a rule: refused, the warning still listed."""
    cards = [free("SIMPLE", "T"), card("BITPIX", 8), card("NAXIS", 0), card("EXTEND", True)]
    path = tmp_path / "free_then_bad.fits"
    path.write_bytes(header(cards) + extension(put(6, card("GCOUNT", 2)))[2880:])
    report = validate_path(path, Target(TARGET))
    assert [(e.code, e.hdu) for e in report.errors] == [("NONSTANDARD_HEADER", 1)]
    assert [(w.code, w.hdu) for w in report.warnings] == [("NONSTANDARD_HEADER", 0)]


def test_files_astropy_writes_have_no_warnings(tmp_path: Path) -> None:
    """Fixed format with comments, EXTEND, a table and a tile-compressed image: nothing to warn about."""
    with fits.open(io.BytesIO(primary(lambda c: None))) as hdul:
        image = hdul[0]
        table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3.0))])
        path = tmp_path / "astropy.fits"
        fits.HDUList(
            [
                fits.PrimaryHDU(header=fits.Header([("FILTER", "R")])),
                fits.ImageHDU(image.data, image.header),
                table,
            ]
        ).writeto(path)
        packed = tmp_path / "packed.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image.data, image.header)]).writeto(packed)
    for target in (path, packed):
        report = validate_path(target, Target(TARGET))
        assert report.ok, report.errors
        assert report.warnings == []
