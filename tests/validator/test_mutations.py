"""Hypothesis mutates valid files (bytes, cards, lengths): every answer is a report with stable codes,
in bounded time, never an exception."""

from __future__ import annotations

import gzip
import io
import os
import time

import numpy as np
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgimages.common.v1 import common_pb2
from services.validator import Target, validate_file
from tests.validator import hostile_corpus, instruments
from tests.validator.hostile_corpus import CORPUS_LIMITS, TARGET

CODES = set(common_pb2.ErrorCode.keys())


def _mef() -> bytes:
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(4.0))])
    out = io.BytesIO()
    fits.HDUList(
        [
            fits.PrimaryHDU(header=fits.Header({"FILTER": "R", "OBJECT": "m"})),
            instruments.sky_ext(*TARGET, size=32, extname="CHIP1"),
            instruments.sky_ext(TARGET[0] + 0.01, TARGET[1], size=32, extname="CHIP2"),
            instruments.sky_ext(*TARGET, size=32, extname="ERR"),
            table,
        ]
    ).writeto(out)
    return out.getvalue()


def _fpack() -> bytes:
    with fits.open(io.BytesIO(hostile_corpus.valid(32))) as hdul:
        header = hdul[0].header.copy()
        for key in ("SIMPLE", "EXTEND"):
            header.remove(key, ignore_missing=True)
        out = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(hdul[0].data, header)]).writeto(out)
    return out.getvalue()


BASES = {
    "single": hostile_corpus.valid(32),
    "mef": _mef(),
    "gzip": gzip.compress(hostile_corpus.valid(32)),
    "fpack": _fpack(),
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(BASES)))
    data = bytearray(BASES[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "card", "truncate", "insert", "delete", "duplicate"]))
        if not data:
            break
        # Most of the interest is in the headers: bias positions to the first blocks.
        limit = len(data) if draw(st.booleans()) else min(len(data), 2880 * 3)
        pos = draw(st.integers(0, max(0, limit - 1)))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "card":
            start = pos - pos % 80
            text = draw(
                st.sampled_from(
                    [
                        "NAXIS1",
                        "NAXIS2",
                        "BITPIX",
                        "NAXIS",
                        "PCOUNT",
                        "CD1_1",
                        "CRVAL2",
                        "CTYPE1",
                        "END",
                        "XTENSION",
                        "ZNAXIS1",
                        "EXTNAME",
                        "FILTER",
                    ]
                )
            )
            value = draw(
                st.sampled_from(
                    [
                        "-1",
                        "0",
                        "7",
                        "99999999999",
                        "'x'",
                        "NaN",
                        "T",
                        "",
                        "1E300",
                        "'RA---TAN'",
                        "'ERR'",
                        "2.5",
                    ]
                )
            )
            data[start : start + 80] = f"{text:<8}= {value:>20}".ljust(80).encode()
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=200))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 3000))]
        else:
            block = pos - pos % 2880
            data[block:block] = data[block : block + 2880]
    return name, bytes(data)


@settings(
    max_examples=int(os.environ.get("VALIDATOR_MUTATIONS", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_files_get_reports_not_exceptions(case: tuple[str, bytes]) -> None:
    name, data = case
    t0 = time.perf_counter()
    report = validate_file(io.BytesIO(data), Target(TARGET), limits=CORPUS_LIMITS)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f"{name}: {elapsed:.1f} s"
    assert all(e.code in CODES and e.message for e in report.errors), report.errors
    assert report.ok == (not report.errors)
    for hdu in report.hdus:
        if hdu.displayable:
            assert len(hdu.footprint) == 4 and hdu.pixel_scale_arcsec > 0
    # Stable: the same bytes give the same codes.
    again = validate_file(io.BytesIO(data), Target(TARGET), limits=CORPUS_LIMITS)
    assert [(e.code, e.hdu) for e in again.errors] == [(e.code, e.hdu) for e in report.errors]
    report.to_proto()


def test_the_unmutated_bases_pass() -> None:
    for name, data in BASES.items():
        report = validate_file(io.BytesIO(data), Target(TARGET), limits=CORPUS_LIMITS)
        assert report.ok, (name, report.errors)
