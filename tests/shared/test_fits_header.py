"""The header walk: offsets and sizes as astropy computes them, header-only reads, compressed streams."""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from services.shared.fits_header import FitsProblem, Header, Limits, parse_value, walk
from tests.validator import instruments


class CountingReader(io.RawIOBase):
    """A file that counts the bytes read from it, as the store's ranged reader would fetch them."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed with the reader
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.bytes_read += len(data)
        self.reads += 1
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


def mixed_mef(path: Path) -> Path:
    """Images of every BITPIX, a table, a 3-D plane, an empty extension."""
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="x", format="D", array=np.arange(5.0)),
            fits.Column(name="s", format="PJ()", array=[[1, 2]] * 5),
        ]
    )
    exts: list[Any] = [
        fits.ImageHDU(np.zeros((7, 5), np.uint8)),
        fits.ImageHDU(np.zeros((3, 11), np.int16)),
        fits.ImageHDU(np.zeros((9, 4), np.int32)),
        fits.ImageHDU(np.zeros((2, 3), np.int64)),
        table,
        fits.ImageHDU(np.zeros((1, 6, 6), np.float32)),
        fits.ImageHDU(),
        fits.ImageHDU(np.zeros((13, 17), np.float64)),
    ]
    fits.HDUList([fits.PrimaryHDU(np.ones((4, 4), np.float32)), *exts]).writeto(path)
    return path


def test_offsets_and_sizes_match_astropy(tmp_path: Path) -> None:
    path = mixed_mef(tmp_path / "mixed.fits")
    with open(path, "rb") as f:
        scan = walk(f, Limits())
    with fits.open(path) as hdul:
        infos = [hdu.fileinfo() for hdu in hdul]
        assert len(scan.hdus) == len(hdul)
        for hdu, info, ap in zip(scan.hdus, infos, hdul, strict=True):
            assert hdu.header_offset == info["hdrLoc"]
            assert hdu.data_offset == info["datLoc"]
            assert hdu.data_size == info["datSpan"] - (-hdu.data_size % 2880) or hdu.data_size == 0
            assert hdu.axes == [ap.header[f"NAXIS{i}"] for i in range(1, ap.header["NAXIS"] + 1)]
            assert hdu.bitpix == ap.header["BITPIX"]
    assert scan.hdus[5].xtension == "BINTABLE" and scan.hdus[5].pcount > 0
    assert scan.fits_size == path.stat().st_size and not scan.trailing_bytes


def test_reads_headers_not_data(tmp_path: Path) -> None:
    """A 16 MB MEF is checked by reading its headers and a few pixel rows: well under 1% of it."""
    exts = [instruments.sky_ext(150.0 + 0.3 * i, 2.0, size=1024, scale=1.0) for i in range(4)]
    path = instruments.mef(tmp_path / "mef.fits", exts, fits.Header({"FILTER": "R"}))
    from services.validator.fits_checks import Target, validate_file

    reader = CountingReader(path)
    with io.BufferedReader(reader, 2880) as f:
        report = validate_file(f, Target((150.3, 2.0)))
    assert report.ok, report.errors
    size = path.stat().st_size
    assert size > 16_000_000
    assert reader.bytes_read < size / 100, (reader.bytes_read, size)


def test_parse_values() -> None:
    assert parse_value(" 'O''Brien  '  / name") == "O'Brien"
    assert parse_value("                   T / flag") is True
    assert parse_value("                   F") is False
    assert parse_value("                  42 / answer") == 42
    assert parse_value("             1.5D-03") == pytest.approx(1.5e-3)
    assert parse_value("   -2.5E+02 / x") == -250.0
    assert parse_value("          / nothing") is None
    assert parse_value(" 'unterminated") == "unterminated"


def test_header_index_hierarch_continue_and_first_wins() -> None:
    cards = [
        "SIMPLE  =                    T",
        "HIERARCH ESO INS FILT1 NAME = 'Ks      ' / filter",
        "HIERARCH ESO   DET  CHIP NO =            3",
        "LONGSTR = 'abc&'",
        "CONTINUE  'def&'",
        "CONTINUE  'ghi'",
        "FILTER  = 'first'",
        "FILTER  = 'second'",
        "COMMENT = not a value",
    ]
    h = Header("".join(c.ljust(80) for c in cards).encode())
    assert h.get("ESO INS FILT1 NAME") == "Ks"
    assert h.get("ESO DET CHIP NO") == 3
    assert h.get("LONGSTR") == "abcdefghi"
    assert h.get("FILTER") == "first"
    assert h.get("COMMENT") is None and h.get("MISSING", "x") == "x"
    assert "FILTER" in h and "NOPE" not in h


@pytest.mark.parametrize("wrap", ["gzip", "compress"])
def test_compressed_streams_walk_like_the_plain_file(tmp_path: Path, wrap: str) -> None:
    path = mixed_mef(tmp_path / "mixed.fits")
    packed = instruments.gzipped(path) if wrap == "gzip" else instruments.unix_compressed(path)
    with open(path, "rb") as f:
        plain = walk(f, Limits())
    with open(packed, "rb") as f:
        scan = walk(f, Limits())
    assert scan.compression == wrap
    assert [(h.data_offset, h.data_size, h.axes) for h in scan.hdus] == [
        (h.data_offset, h.data_size, h.axes) for h in plain.hdus
    ]
    assert scan.fits_size == path.stat().st_size and scan.file_size == packed.stat().st_size


def test_stream_captures_the_ranges_asked_for(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype=">f4").reshape(64, 64)
    path = tmp_path / "ramp.fits"
    fits.PrimaryHDU(data).writeto(path)
    asked = [(4 * (10 * 64 + 3), 8), (4 * (50 * 64), 4)]
    for target in (path, instruments.gzipped(path)):
        with open(target, "rb") as f:
            scan = walk(f, Limits(), lambda hdu: asked)
        got = scan.hdus[0].captured
        assert np.frombuffer(got[asked[0]], ">f4").tolist() == [643.0, 644.0]
        assert np.frombuffer(got[asked[1]], ">f4").tolist() == [3200.0]


def test_decompressed_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(np.zeros((512, 512), np.float32)).writeto(path)
    packed = instruments.gzipped(path)
    with open(packed, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits(max_decompressed_bytes=200_000))
    assert err.value.code == "TOO_LARGE"
    with open(packed, "rb") as f:
        assert walk(f, Limits(max_decompressed_bytes=2_000_000)).hdus[0].data_size == 512 * 512 * 4


def test_truncated_and_corrupt_streams(tmp_path: Path) -> None:
    path = tmp_path / "img.fits"
    rng = np.random.default_rng(3)
    fits.PrimaryHDU(rng.normal(0, 1, (200, 200)).astype(np.float32)).writeto(path)
    packed = gzip.compress(path.read_bytes())
    cut = tmp_path / "cut.fits.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with open(cut, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits())
    assert err.value.code == "TRUNCATED"
    bad = bytearray(packed)
    for i in range(len(bad) // 3, len(bad) // 3 + 64):
        bad[i] ^= 0x5A
    broken = tmp_path / "broken.fits.gz"
    broken.write_bytes(bytes(bad))
    with open(broken, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits())
    assert err.value.code in ("BAD_COMPRESSION", "TRUNCATED")
    crc = bytearray(packed)
    crc[-6] ^= 0xFF  # the CRC of an otherwise intact stream
    bad_crc = tmp_path / "crc.fits.gz"
    bad_crc.write_bytes(bytes(crc))
    with open(bad_crc, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits())
    assert err.value.code == "BAD_COMPRESSION"


def test_other_compressions_are_named(tmp_path: Path) -> None:
    path = tmp_path / "x.fits.bz2"
    path.write_bytes(bz2.compress(b"SIMPLE  =" + b" " * 2871))
    with open(path, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits())
    assert err.value.code == "UNSUPPORTED_COMPRESSION" and "bzip2" in err.value.message


@pytest.mark.parametrize("wrap", ["plain", "gzip"])
def test_too_many_cards_in_one_header_or_in_all(tmp_path: Path, wrap: str) -> None:
    """Both card limits stop the walk with TOO_MANY_CARDS (not TOO_MANY_HDUS), naming the limit."""
    primary = fits.Header([(f"KEY{i:05d}", i) for i in range(500)])
    exts = [fits.ImageHDU(header=fits.Header([(f"KEY{i:05d}", i) for i in range(300)])) for _ in range(3)]
    path = tmp_path / "cards.fits"
    fits.HDUList([fits.PrimaryHDU(header=primary), *exts]).writeto(path)
    target = path if wrap == "plain" else instruments.gzipped(path)
    with open(target, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits(max_header_cards=400))
    assert (err.value.code, err.value.hdu) == ("TOO_MANY_CARDS", 0)
    assert "more than 400 cards" in err.value.message
    with open(target, "rb") as f, pytest.raises(FitsProblem) as err:
        walk(f, Limits(max_header_cards=600, max_total_header_cards=1000))
    assert (err.value.code, err.value.hdu) == ("TOO_MANY_CARDS", 2)
    assert "more than 1000 cards in all" in err.value.message
    with open(target, "rb") as f:
        assert len(walk(f, Limits(max_header_cards=600, max_total_header_cards=2000)).hdus) == 4
