"""The check before sending: the validator's verdict on a file's headers alone (as the page and
the client read them, data skipped) is the full check's, for every check that headers decide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from bgimages_client._fits_headers import FileHeaders, read_headers

from services.shared.errors import Code, ServiceError
from services.shared.fits_header import Limits
from services.validator.fits_checks import Target, validate_path
from services.validator.header_check import HeaderFile, Segment, check_headers
from services.validator.report import Report
from tests.validator import hostile_corpus, instruments
from tests.validator.hostile_corpus import CORPUS_LIMITS, TARGET

MAX_HEADER_BYTES = 16 << 20


def headers_of(path: Path) -> FileHeaders:
    with path.open("rb") as f:
        return read_headers(f, path.stat().st_size, MAX_HEADER_BYTES, 1000)


def check_file(path: Path, where: Target, limits: Limits | None = None) -> Report:
    """What the route answers for the file: its headers as the client reads them, checked."""
    fh = headers_of(path)
    segments = [Segment(s.offset, s.header, s.data_bytes) for s in fh.segments]
    return check_headers(segments, fh.size, where, "", limits)


def findings(report: Report) -> list[tuple[str, int | None, str]]:
    return [(e.code, e.hdu, e.message) for e in report.errors]


def verdict(report: Report) -> dict[str, Any]:
    """The report, less what only pixels decide."""
    out = report.to_dict()
    out.pop("after_upload")
    return out


HEADER_ONLY = [
    c
    for c in hostile_corpus.cases()
    if c.name not in ("empty", "million_cards")
    and not c.name.startswith(("gzip", "truncated_gz", "Z_"))
    and "_Z" not in c.name
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = hostile_corpus.build(tmp_path_factory.mktemp("corpus"))
    return {case.name: path for case, path in built}


@pytest.mark.parametrize("case", HEADER_ONLY, ids=lambda c: c.name)
def test_every_broken_file_gets_the_full_checks_findings(
    case: hostile_corpus.Case, corpus: dict[str, Path]
) -> None:
    path = corpus[case.name]
    if headers_of(path).compressed:
        pytest.skip("compressed as a whole: checked after upload")
    full = validate_path(path, Target(TARGET), "", CORPUS_LIMITS)
    before = check_file(path, Target(TARGET), CORPUS_LIMITS)
    assert findings(before) == findings(full)
    assert before.errors[0].code == case.code


@pytest.fixture(scope="module")
def hawki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return instruments.hawki_pawprint(tmp_path_factory.mktemp("hawki") / "HAWKI.fits")


def test_a_paw_print_with_the_target_in_a_gap_is_refused_before_sending(hawki: Path) -> None:
    ra, dec = instruments.hawki_chip_centres()[1]
    half = instruments.HAWKI_CHIP * instruments.HAWKI_SCALE / 2
    in_gap = instruments.offset_position(ra, dec, -(half + 5.0), 0.0)
    full = validate_path(hawki, Target(in_gap))
    before = check_file(hawki, Target(in_gap))
    assert [e.code for e in before.errors] == ["TARGET_IN_CHIP_GAP"]
    assert verdict(before) == verdict(full)
    assert before.after_upload == []  # nothing to look at in the pixels: no chip holds it


def test_a_good_paw_print_passes_and_leaves_the_pixels_for_later(hawki: Path) -> None:
    for chip, centre in instruments.hawki_chip_centres().items():
        before = check_file(hawki, Target(centre))
        assert before.ok and verdict(before) == verdict(validate_path(hawki, Target(centre)))
        assert [(a.codes, a.hdu) for a in before.after_upload] == [([Code.TARGET_OUTSIDE_FIELD], chip)]
        assert "checked after upload" in before.after_upload[0].message


@pytest.mark.parametrize(
    "make",
    [
        lambda p: instruments.vircam_pawprint(p, processed=True),
        instruments.phase3_adp,
        instruments.product_with_bpm,
        lambda p: instruments.mef(p, [instruments.sky_ext(), instruments.sky_ext(extname="ERR")]),
        lambda p: instruments.single(p, {"PRODCATG": "ANCILLARY.WEIGHTMAP", "FILTER": "Ks"}),
        lambda p: instruments.single(p, {"FILTER": "Ks"}, "HAWKI"),
        lambda p: instruments.single(p, {}, "HAWKI"),  # no filter
    ],
    ids=["vircam", "phase3", "bpm", "err-plane", "ancillary", "single", "no-filter"],
)
def test_instrument_files_get_the_same_report(make: Any, tmp_path: Path) -> None:
    path = make(tmp_path / "f.fits")
    for where in (Target((150.0, 2.0)), Target((150.0, 2.0), boa=(150.01, 2.01)), Target((151.0, 2.0))):
        assert verdict(check_file(path, where)) == verdict(validate_path(path, where))


def test_fpack_headers_are_in_the_clear(hawki: Path, tmp_path: Path) -> None:
    packed = instruments.fpacked(hawki, tmp_path / "h.fits.fz")
    ra, dec = instruments.hawki_chip_centres()[2]
    outside = instruments.offset_position(ra, dec, 0.0, 600.0)
    for where, code in ((Target((ra, dec)), None), (Target(outside), "TARGET_OUTSIDE_FIELD")):
        before = check_file(packed, where)
        assert verdict(before) == verdict(validate_path(packed, where))
        assert [e.code for e in before.errors] == ([code] if code else [])


def test_blank_pixels_are_checked_after_upload(tmp_path: Path) -> None:
    """A target on NaN pixels: the headers cannot tell, the full check refuses it."""
    data = np.ones((64, 64), np.float32)
    data[:, 32:] = np.nan
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0})
    header.update({"CRPIX1": 32.5, "CRPIX2": 32.5, "CDELT1": -1 / 3600, "CDELT2": 1 / 3600, "FILTER": "R"})
    path = tmp_path / "b.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    west = instruments.offset_position(150.0, 2.0, -20.0, 0.0)
    assert [e.code for e in validate_path(path, Target(west)).errors] == ["TARGET_OUTSIDE_FIELD"]
    before = check_file(path, Target(west))
    assert before.ok
    assert [a.codes for a in before.after_upload] == [[Code.TARGET_OUTSIDE_FIELD]]


def test_compressed_files_are_checked_after_upload(hawki: Path) -> None:
    gz = instruments.gzipped(hawki)
    fh = headers_of(gz)
    assert fh.compressed == "gzip" and fh.segments == []
    report = check_headers([Segment(0, gz.read_bytes()[:2880], 0)], fh.size, Target((150.0, 2.0)))
    assert report.ok and report.compression == "gzip"
    assert "checked after upload" in report.after_upload[0].message


def test_a_client_that_skips_wrong_is_told_so(hawki: Path) -> None:
    fh = headers_of(hawki)
    segments = [Segment(s.offset, s.header, s.data_bytes) for s in fh.segments]
    last = segments[-1]
    lied = [*segments[:-1], Segment(last.offset, last.header, last.data_bytes - 2880)]
    with pytest.raises(ServiceError) as err:
        check_headers(lied, fh.size, Target((150.0, 2.0)))
    assert err.value.code == Code.INVALID_ARGUMENT and "header 4" in err.value.message
    overlapping = [
        *segments[:2],
        Segment(segments[2].offset, segments[2].header, segments[2].data_bytes + 2880),
    ]
    with pytest.raises(ServiceError) as err:
        check_headers(overlapping + segments[3:], fh.size, Target((150.0, 2.0)))
    assert err.value.code == Code.INVALID_ARGUMENT and "header 3" in err.value.message
    with pytest.raises(ServiceError) as err:
        check_headers(segments[:1] + segments[2:], fh.size, Target((150.0, 2.0)))  # one left out
    assert err.value.code == Code.INVALID_ARGUMENT


def test_the_headers_are_all_that_is_read(hawki: Path) -> None:
    """The client reads header blocks only: a few KB of a file of data."""
    fh = headers_of(hawki)
    assert len(fh.segments) == 5
    assert fh.header_bytes == sum(len(s.header) for s in fh.segments) < fh.size / 10
    f = HeaderFile([Segment(s.offset, s.header, s.data_bytes) for s in fh.segments], fh.size)
    f.seek(fh.segments[1].offset)
    assert f.read(8) == b"XTENSION"
    f.seek(fh.segments[1].offset + len(fh.segments[1].header))
    assert f.read(64) == bytes(64)  # data: holes
