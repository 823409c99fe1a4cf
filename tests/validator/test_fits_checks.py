"""Every rule of the validator on instrument-like files: image HDUs, sky planes, WCS, field, compression."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from services.validator import Report, Target, validate_path
from services.validator.footprint import separation_deg
from tests.fitsgen import tan_wcs
from tests.validator import instruments

ROOT = Path(__file__).resolve().parents[2]


def codes(report: Report) -> list[str]:
    return [e.code for e in report.errors]


@pytest.fixture(scope="module")
def hawki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return instruments.hawki_pawprint(tmp_path_factory.mktemp("hawki") / "HAWKI.2024-03-01T01:02:03.456.fits")


@pytest.fixture(scope="module")
def vircam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return instruments.vircam_pawprint(tmp_path_factory.mktemp("vircam") / "VCAM.fits")


# --- paw-prints: per-extension field checks, chip gaps --------------------------------------------


def test_hawki_target_on_each_chip(hawki: Path) -> None:
    for chip, centre in instruments.hawki_chip_centres().items():
        report = validate_path(hawki, Target(centre))
        assert report.ok, report.errors
        assert [h.contains_target for h in report.hdus] == [None] + [i == chip for i in range(1, 5)]
        assert [h.contains_boa for h in report.hdus] == [None] * 5
    assert report.hdus[0].skip_reason == "no data (header only)"
    assert [h.extname for h in report.hdus[1:]] == [f"CHIP{i}.INT1" for i in range(1, 5)]
    assert (report.filter, report.filter_source) == ("NB2090", "ESO INS FILT2 NAME")
    assert report.object_name == "NGC 1234"


def test_hawki_target_in_the_gap(hawki: Path) -> None:
    centres = instruments.hawki_chip_centres()
    # Between chips 1 and 2 (south half), 5 arcsec into the 15 arcsec gap from chip 1's west edge.
    ra, dec = centres[1]
    half = instruments.HAWKI_CHIP * instruments.HAWKI_SCALE / 2
    pos = instruments.offset_position(ra, dec, -(half + 5.0), 0.0)
    report = validate_path(hawki, Target(pos))
    assert codes(report) == ["TARGET_IN_CHIP_GAP"]
    err = report.errors[0]
    assert err.hdu is None
    assert "5.0 arcsec west of HDU 1 (CHIP1.INT1)" in err.message
    assert not any(h.contains_target for h in report.hdus)


def test_hawki_outside_says_how_far_and_where(hawki: Path) -> None:
    centres = instruments.hawki_chip_centres()
    half = instruments.HAWKI_CHIP * instruments.HAWKI_SCALE / 2
    ra, dec = centres[4]  # upper left: north-east
    pos = instruments.offset_position(ra, dec, 0.0, half + 60.0)
    report = validate_path(hawki, Target(pos))
    assert codes(report) == ["TARGET_OUTSIDE_FIELD"]
    assert "60.0 arcsec north of HDU 4 (CHIP4.INT1)" in report.errors[0].message
    far = validate_path(hawki, Target((330.0, 40.0)))
    assert codes(far) == ["TARGET_OUTSIDE_FIELD"]
    # Nearly opposite on the sky: a great-circle distance in degrees (the tangent plane has none).
    assert re.search(r" 1[67]\d\.\d deg ", far.errors[0].message), far.errors[0].message


def test_hawki_boa_star(hawki: Path) -> None:
    centres = instruments.hawki_chip_centres()
    ok = validate_path(hawki, Target(centres[1], boa=centres[3]))
    assert ok.ok and [h.contains_boa for h in ok.hdus] == [None, False, False, True, False]
    gap = validate_path(hawki, Target(centres[1], boa=(150.0, -30.0)))
    assert codes(gap) == ["BOA_IN_CHIP_GAP"] and "BOA reference star" in gap.errors[0].message
    out = validate_path(hawki, Target(centres[1], boa=(151.0, -30.0)))
    assert codes(out) == ["BOA_OUTSIDE_FIELD"]
    both = validate_path(hawki, Target((150.0, -30.0), boa=(151.0, -30.0)))
    assert codes(both) == ["TARGET_IN_CHIP_GAP", "BOA_OUTSIDE_FIELD"]


def test_vircam_sixteen_detectors(vircam: Path) -> None:
    for det in (1, 6, 11, 16):
        report = validate_path(vircam, Target(instruments.vircam_detector_centre(vircam, det)))
        assert report.ok, report.errors
        assert [h.index for h in report.hdus if h.contains_target] == [det]
    assert len(report.hdus) == 17 and all(h.displayable for h in report.hdus[1:])
    assert report.hdus[1].pixel_scale_arcsec == pytest.approx(instruments.VIRCAM_SCALE, rel=1e-3)
    assert (report.filter, report.filter_source) == ("Ks", "ESO INS FILT1 NAME")
    # The optical axis lies in the big gap at the middle of the detector mosaic.
    assert codes(validate_path(vircam, Target((150.0, -30.0)))) == ["TARGET_IN_CHIP_GAP"]
    # Between detectors 1 and 2 in x (gaps are 90% of a detector wide).
    a = instruments.vircam_detector_centre(vircam, 1)
    b = instruments.vircam_detector_centre(vircam, 2)
    mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    assert codes(validate_path(vircam, Target(mid))) == ["TARGET_IN_CHIP_GAP"]


def test_vircam_footprints_follow_the_zpn_distortion(vircam: Path) -> None:
    report = validate_path(vircam, Target(instruments.vircam_detector_centre(vircam, 1)))
    with fits.open(vircam) as hdul:
        for hdu in report.hdus[1:]:
            w = WCS(hdul[hdu.index].header)
            expected = w.calc_footprint(center=False)
            for corner in hdu.footprint:
                nearest = min(separation_deg(corner, (float(r), float(d))) for r, d in expected)
                assert nearest * 3600 < 0.01


def test_processed_vircam_uses_filter(tmp_path: Path) -> None:
    path = instruments.vircam_pawprint(tmp_path / "v.fits", processed=True)
    report = validate_path(path, Target(instruments.vircam_detector_centre(path, 3)))
    assert report.ok and (report.filter, report.filter_source) == ("Ks", "FILTER")


# --- planes that are not pictures of the sky --------------------------------------------------------


def test_phase3_adp_skips_err_and_conf(tmp_path: Path) -> None:
    report = validate_path(instruments.phase3_adp(tmp_path / "ADP.fits"), Target((150.0, 2.0)))
    assert report.ok, report.errors
    assert [h.displayable for h in report.hdus] == [False, True, False, False]
    assert report.hdus[2].skip_reason == "error plane (HDUCLAS2 = 'ERROR', HDUCLAS3 = 'RMSE')"
    assert report.hdus[3].skip_reason == "confidence map (EXTNAME = 'CONF')"
    assert report.hdus[2].contains_target is None
    assert (report.filter, report.filter_source) == ("r_SDSS", "FILTER")


def test_pipeline_product_skips_bpm(tmp_path: Path) -> None:
    report = validate_path(instruments.product_with_bpm(tmp_path / "p.fits"), Target((150.0, 2.0)))
    assert report.ok, report.errors
    assert [h.displayable for h in report.hdus] == [True, False]
    assert report.hdus[1].skip_reason == "bad-pixel mask (EXTNAME = 'BPM')"
    assert (report.filter, report.filter_source) == ("Ks", "ESO INS FILT1 NAME")


@pytest.mark.parametrize(
    ("extname", "kind"),
    [
        ("ERR", "error plane"),
        ("ERROR", "error plane"),
        ("STAT", "error plane"),
        ("VAR", "variance plane"),
        ("IVAR", "variance plane"),
        ("WEIGHT", "weight map"),
        ("WHT", "weight map"),
        ("CONF", "confidence map"),
        ("EXP", "exposure map"),
        ("DQ", "data-quality plane"),
        ("QUAL", "data-quality plane"),
        ("MASK", "bad-pixel mask"),
        ("BPM", "bad-pixel mask"),
        ("SCI_ERR2", "error plane"),
    ],
)
def test_extname_planes(tmp_path: Path, extname: str, kind: str) -> None:
    path = instruments.mef(tmp_path / "m.fits", [instruments.sky_ext(), instruments.sky_ext(extname=extname)])
    report = validate_path(path, Target((150.0, 2.0)), bandpass="R")
    assert report.ok
    assert report.hdus[2].skip_reason == f"{kind} (EXTNAME = '{extname}')"
    assert not report.hdus[2].displayable and report.hdus[1].displayable


@pytest.mark.parametrize("catg", ["MASTER_BPM", "CONFIDENCE_MAP", "SCIENCE_ERROR", "OBJ_MASK"])
def test_pro_catg_of_a_mask_product(tmp_path: Path, catg: str) -> None:
    path = instruments.single(tmp_path / "m.fits", {"ESO PRO CATG": catg, "ESO INS FILT1 NAME": "J"}, "HAWKI")
    report = validate_path(path, Target((150.0, 2.0)))
    assert codes(report) == ["NO_IMAGE_HDU"]
    assert f"ESO PRO CATG = '{catg}'" in report.hdus[0].skip_reason  # type: ignore[operator]
    assert "ESO PRO CATG" in report.errors[0].message


def test_phase3_ancillary_file(tmp_path: Path) -> None:
    path = instruments.single(tmp_path / "w.fits", {"PRODCATG": "ANCILLARY.WEIGHTMAP", "FILTER": "Ks"})
    report = validate_path(path, Target((150.0, 2.0)))
    assert [e.code for e in report.errors] == ["NO_IMAGE_HDU"]
    assert report.hdus[0].skip_reason == "ancillary product (PRODCATG = 'ANCILLARY.WEIGHTMAP')"
    science = instruments.single(tmp_path / "s.fits", {"PRODCATG": "SCIENCE.IMAGE", "FILTER": "Ks"})
    assert validate_path(science, Target((150.0, 2.0))).ok


def test_sky_names_are_not_planes(tmp_path: Path) -> None:
    names = ["CHIP1.INT1", "DET1.CHIP1", "SCI", "DATA", "IMAGE", "CCD_1", "WFC1", "CONTEXT"]
    path = instruments.mef(tmp_path / "m.fits", [instruments.sky_ext(extname=n) for n in names])
    report = validate_path(path, Target((150.0, 2.0)), bandpass="R")
    assert all(h.displayable for h in report.hdus[1:]), [h.skip_reason for h in report.hdus]


# --- what counts as an image -------------------------------------------------------------------------


def test_tables_cubes_and_degenerate_planes(tmp_path: Path) -> None:
    header, w = instruments.image_header(150.0, 2.0, 1.0, (64, 64))
    w3 = WCS(naxis=3)
    w3.wcs.ctype = ["RA---TAN", "DEC--TAN", "WAVE"]
    w3.wcs.crval = [150.0, 2.0, 5e-7]
    w3.wcs.crpix = [32.5, 32.5, 1]
    w3.wcs.cdelt = [-1 / 3600, 1 / 3600, 1e-9]
    plane = fits.ImageHDU(np.ones((1, 64, 64), np.float32), w3.to_header())
    cube = fits.ImageHDU(np.ones((5, 64, 64), np.float32), w3.to_header())
    table = fits.BinTableHDU.from_columns([fits.Column(name="ra", format="D", array=[1.0, 2.0])])
    line = fits.ImageHDU(np.ones(64, np.float32))
    empty = fits.ImageHDU(np.zeros((0, 64), np.float32), header)
    path = instruments.mef(
        tmp_path / "m.fits", [table, cube, plane, line, empty], fits.Header({"FILTER": "V"})
    )
    report = validate_path(path, Target((150.0, 2.0)))
    assert report.ok, report.errors
    kinds = [(h.index, h.displayable, h.kind) for h in report.hdus]
    assert kinds == [
        (0, False, "empty"),
        (1, False, "table"),
        (2, False, "cube"),
        (3, True, "image"),
        (4, False, "1-D"),
        (5, False, "empty"),
    ]
    assert report.hdus[1].skip_reason == "not an image (XTENSION = 'BINTABLE')"
    assert report.hdus[2].skip_reason == "a cube of 3 axes (64 x 64 x 5), not a 2-D image"
    assert report.hdus[3].shape == [64, 64, 1] and report.hdus[3].contains_target
    without = instruments.mef(tmp_path / "n.fits", [table, cube, line], fits.Header({"FILTER": "V"}))
    report = validate_path(without, Target((150.0, 2.0)))
    assert codes(report) == ["NO_IMAGE_HDU"]
    assert "HDU 2: a cube" in report.errors[0].message


# --- WCS ------------------------------------------------------------------------------------------


def _with_wcs(path: Path, cards: dict[str, Any], size: int = 64, data: np.ndarray | None = None) -> Path:
    header = fits.Header({"FILTER": "R"})
    for key, value in cards.items():
        header[key] = value
    pixels = np.ones((size, size), np.float32) if data is None else data
    fits.PrimaryHDU(pixels, header).writeto(path, overwrite=True)
    return path


TAN = {
    "CTYPE1": "RA---TAN",
    "CTYPE2": "DEC--TAN",
    "CRVAL1": 150.0,
    "CRVAL2": 2.0,
    "CRPIX1": 32.5,
    "CRPIX2": 32.5,
    "CD1_1": -1 / 3600,
    "CD1_2": 0.0,
    "CD2_1": 0.0,
    "CD2_2": 1 / 3600,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"CD1_1": 0.0, "CD2_2": 0.0}, "singular"),
        ({"CD1_1": 1e-4, "CD1_2": 2e-4, "CD2_1": 1e-4, "CD2_2": 2e-4}, "singular"),
        ({"CRVAL1": float("nan")}, "CRVAL1 = NaN is not a finite number"),
        ({"CTYPE1": "RA---XYZ"}, "it cannot be read"),
        ({"CTYPE1": "PIXEL", "CTYPE2": "PIXEL"}, "no pair of celestial axes"),
        ({"CTYPE1": "RA---TAN", "CTYPE2": "WAVE"}, ""),
        ({"CD1_1": -1e-10, "CD2_2": 1e-10}, "pixel scale"),
        ({"CD1_1": -2.0, "CD2_2": 2.0}, "pixel scale"),
        ({"CTYPE1": None, "CTYPE2": None}, "no WCS keywords"),
        # A distortion that folds the image over itself: the corners map back to other pixels.
        (
            {"CTYPE1": "RA---TPV", "CTYPE2": "DEC--TPV", "PV1_1": 1.0, "PV1_4": 200.0, "PV2_1": 1.0},
            "do not round-trip",
        ),
    ],
)
def test_invalid_wcs(tmp_path: Path, change: dict[str, Any], reason: str) -> None:
    cards = {k: v for k, v in {**TAN, **change}.items() if v is not None}
    path = tmp_path / "w.fits"
    # astropy refuses to write NaN; write the card by hand.
    nan = {k for k, v in cards.items() if isinstance(v, float) and np.isnan(v)}
    _with_wcs(path, {k: (0.0 if k in nan else v) for k, v in cards.items()})
    if nan:
        raw = bytearray(path.read_bytes())
        for key in nan:
            at = raw.find(key.ljust(8).encode() + b"= ")
            raw[at : at + 80] = f"{key:<8}= {'NaN':>20}".ljust(80).encode()
        path.write_bytes(bytes(raw))
    report = validate_path(path, Target((150.0, 2.0)))
    assert codes(report) == ["INVALID_WCS"]
    assert report.errors[0].hdu == 0 and reason in report.errors[0].message
    assert report.hdus[0].skip_reason is not None and report.hdus[0].skip_reason.startswith("invalid WCS")
    assert not report.hdus[0].displayable


def test_one_chip_with_a_bad_wcs_is_named(tmp_path: Path) -> None:
    bad = instruments.sky_ext(150.0, 2.0, extname="CHIP2")
    bad.header["CD1_1"] = 0.0
    bad.header["CD2_2"] = 0.0
    bad.header.remove("PC1_1", ignore_missing=True)
    path = instruments.mef(
        tmp_path / "m.fits", [instruments.sky_ext(extname="CHIP1"), bad], fits.Header({"FILTER": "R"})
    )
    report = validate_path(path, Target((150.0, 2.0)))
    assert codes(report) == ["INVALID_WCS"]
    assert report.errors[0].hdu == 2 and report.errors[0].message.startswith("HDU 2 (CHIP2): invalid WCS")
    assert report.hdus[1].contains_target


def test_sip_distortion(tmp_path: Path) -> None:
    w = tan_wcs(150.0, 2.0, 0.5, (128, 128))
    header = w.to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"], header["B_ORDER"] = 2, 2
    header["A_2_0"], header["A_0_2"], header["B_1_1"] = 2e-4, 1e-4, 3e-4
    header["FILTER"] = "i"
    path = tmp_path / "sip.fits"
    fits.PrimaryHDU(np.ones((128, 128), np.float32), header).writeto(path)
    aw = WCS(fits.getheader(path))
    assert aw.sip is not None
    corner = aw.all_pix2world([[128.5, 128.5]], 1)[0]
    near = aw.all_pix2world([[127.0, 127.0]], 1)[0]
    report = validate_path(path, Target((float(near[0]), float(near[1]))))
    assert report.ok, report.errors
    assert separation_deg(report.hdus[0].footprint[2], (float(corner[0]), float(corner[1]))) * 3600 < 1e-3
    linear = tan_wcs(150.0, 2.0, 0.5, (128, 128)).wcs_pix2world([[128.5, 128.5]], 1)[0]
    assert separation_deg((float(linear[0]), float(linear[1])), report.hdus[0].footprint[2]) * 3600 > 0.3


def test_tpv_distortion(tmp_path: Path) -> None:
    cards = {**TAN, "CTYPE1": "RA---TPV", "CTYPE2": "DEC--TPV"}
    cards.update({"PV1_0": 0.0, "PV1_1": 1.0, "PV1_4": 0.02, "PV2_0": 0.0, "PV2_1": 1.0, "PV2_6": -0.03})
    path = _with_wcs(tmp_path / "tpv.fits", cards)
    report = validate_path(path, Target((150.0, 2.0)))
    assert report.ok, report.errors
    expected = WCS(fits.getheader(path)).all_pix2world([[0.5, 0.5]], 1)[0]
    assert separation_deg(report.hdus[0].footprint[0], (float(expected[0]), float(expected[1]))) * 3600 < 1e-3


def test_galactic_wcs_footprint_is_icrs(tmp_path: Path) -> None:
    c = SkyCoord(150.0, 2.0, unit="deg").galactic
    cards = {**TAN, "CTYPE1": "GLON-TAN", "CTYPE2": "GLAT-TAN", "CRVAL1": c.l.deg, "CRVAL2": c.b.deg}
    path = _with_wcs(tmp_path / "gal.fits", cards)
    report = validate_path(path, Target((150.0, 2.0)))
    assert report.ok, report.errors
    w = WCS(fits.getheader(path))
    lon, lat = w.all_pix2world([[0.5, 0.5]], 1)[0]
    icrs = SkyCoord(lon, lat, unit="deg", frame="galactic").icrs
    assert separation_deg(report.hdus[0].footprint[0], (icrs.ra.deg, icrs.dec.deg)) * 3600 < 1e-3


def test_fk4_b1950_is_converted(tmp_path: Path) -> None:
    fk4 = SkyCoord(150.0, 2.0, unit="deg").transform_to("fk4")
    cards = {**TAN, "CRVAL1": fk4.ra.deg, "CRVAL2": fk4.dec.deg, "RADESYS": "FK4", "EQUINOX": 1950.0}
    report = validate_path(_with_wcs(tmp_path / "fk4.fits", cards), Target((150.0, 2.0)))
    assert report.ok, report.errors
    centre = np.mean(np.array(report.hdus[0].footprint), axis=0)
    assert separation_deg((float(centre[0]), float(centre[1])), (150.0, 2.0)) * 3600 < 1.0


def test_footprint_corners_and_scale(tmp_path: Path) -> None:
    path = _with_wcs(tmp_path / "t.fits", {**TAN, "CD1_1": -0.2 / 3600, "CD2_2": 0.2 / 3600}, size=64)
    report = validate_path(path, Target((150.0, 2.0)))
    hdu = report.hdus[0]
    assert hdu.pixel_scale_arcsec == pytest.approx(0.2)
    expected = WCS(fits.getheader(path)).calc_footprint(center=False)
    assert len(hdu.footprint) == 4
    for corner in expected:
        assert (
            min(separation_deg(c, (float(corner[0]), float(corner[1]))) for c in hdu.footprint) * 3600 < 1e-4
        )


def test_position_across_ra_zero(tmp_path: Path) -> None:
    path = _with_wcs(
        tmp_path / "z.fits",
        {**TAN, "CRVAL1": 0.001, "CRVAL2": -10.0, "CD1_1": -10 / 3600, "CD2_2": 10 / 3600},
    )
    assert validate_path(path, Target((359.95, -10.0))).ok
    assert validate_path(path, Target((0.05, -10.0))).ok
    assert codes(validate_path(path, Target((359.5, -10.0)))) == ["TARGET_OUTSIDE_FIELD"]


def test_near_the_pole(tmp_path: Path) -> None:
    path = _with_wcs(
        tmp_path / "p.fits", {**TAN, "CRVAL1": 0.0, "CRVAL2": 89.99, "CD1_1": -10 / 3600, "CD2_2": 10 / 3600}
    )
    assert validate_path(path, Target((180.0, 90.0))).ok
    assert validate_path(path, Target((123.0, 89.995))).ok
    assert codes(validate_path(path, Target((0.0, 89.7)))) == ["TARGET_OUTSIDE_FIELD"]


# --- pixels: a position on blank pixels is not on the image -----------------------------------------------


def _half_blank(path: Path) -> Path:
    data = np.ones((64, 64), np.float32)
    data[:, 32:] = np.nan  # west half (larger x) has no data
    return _with_wcs(path, TAN, data=data)


def test_target_on_blank_pixels(tmp_path: Path) -> None:
    path = _half_blank(tmp_path / "b.fits")
    east = instruments.offset_position(150.0, 2.0, 20.0, 0.0)
    west = instruments.offset_position(150.0, 2.0, -20.0, 0.0)
    assert validate_path(path, Target(east)).ok
    for variant in (path, instruments.gzipped(path)):
        report = validate_path(variant, Target(east, boa=west))
        assert codes(report) == ["BOA_OUTSIDE_FIELD"]
        assert "blank pixels" in report.errors[0].message
        assert report.hdus[0].contains_boa is False and report.hdus[0].contains_target is True


def test_target_on_blank_pixels_of_a_tile_compressed_image(tmp_path: Path) -> None:
    """fpack: only the tiles around the position are decompressed, and blank is blank there too."""
    path = instruments.fpacked(_half_blank(tmp_path / "b.fits"), tmp_path / "b.fits.fz", "GZIP_2")
    east = instruments.offset_position(150.0, 2.0, 20.0, 0.0)
    west = instruments.offset_position(150.0, 2.0, -20.0, 0.0)
    assert validate_path(path, Target(east)).ok
    report = validate_path(path, Target(east, boa=west))
    assert codes(report) == ["BOA_OUTSIDE_FIELD"] and "blank pixels" in report.errors[0].message
    assert report.hdus[1].tile_compressed and report.hdus[1].contains_target is True


def test_blank_value_of_integer_images(tmp_path: Path) -> None:
    data = np.full((64, 64), -32768, np.int16)
    data[:, :20] = 100
    path = _with_wcs(tmp_path / "i.fits", {**TAN, "BLANK": -32768}, data=data)
    west = instruments.offset_position(150.0, 2.0, -20.0, 0.0)
    assert codes(validate_path(path, Target(west))) == ["TARGET_OUTSIDE_FIELD"]
    assert validate_path(path, Target(instruments.offset_position(150.0, 2.0, 25.0, 0.0))).ok


def test_a_few_blank_pixels_at_the_target_do_not_matter(tmp_path: Path) -> None:
    data = np.ones((64, 64), np.float32)
    data[30:35, 30:35] = np.nan  # a saturated star masked by the pipeline
    path = _with_wcs(tmp_path / "s.fits", TAN, data=data)
    assert validate_path(path, Target((150.0, 2.0))).ok


# --- compression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["gzip", "compress", "fpack", "fpack+gzip", "fpack-gzip2"])
def test_compressed_variants_report_like_the_plain_file(hawki: Path, tmp_path: Path, variant: str) -> None:
    centre = instruments.hawki_chip_centres()[2]
    plain = validate_path(hawki, Target(centre))
    if variant == "gzip":
        path = instruments.gzipped(hawki)
    elif variant == "compress":
        path = instruments.unix_compressed(hawki)
    elif variant.startswith("fpack"):
        algo = "GZIP_2" if variant == "fpack-gzip2" else "RICE_1"
        path = instruments.fpacked(hawki, tmp_path / "h.fits.fz", algo)
        if variant == "fpack+gzip":
            path = instruments.gzipped(path)
    report = validate_path(path, Target(centre))
    assert report.ok, report.errors
    assert report.compression == {"compress": "compress", "fpack": "none", "fpack-gzip2": "none"}.get(
        variant, "gzip"
    )
    shown = [(h.extname, h.shape, h.footprint, h.contains_target) for h in report.hdus if h.displayable]
    assert shown == [
        (h.extname, h.shape, h.footprint, h.contains_target) for h in plain.hdus if h.displayable
    ]
    assert all(h.tile_compressed for h in report.hdus if h.displayable) == variant.startswith("fpack")
    assert report.filter == "NB2090"


# --- the check command ------------------------------------------------------------------------------


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.validator", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_command(hawki: Path, tmp_path: Path) -> None:
    centre = instruments.hawki_chip_centres()[1]
    ok = run_check(str(hawki), "--target", str(centre[0]), str(centre[1]))
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert body["ok"] is True and body["errors"] == []
    assert body["filter"] == "NB2090" and body["filter_source"] == "ESO INS FILT2 NAME"
    chip1 = body["hdus"][1]
    assert {
        "index",
        "extname",
        "shape",
        "displayable",
        "skip_reason",
        "pixel_scale_arcsec",
        "footprint",
        "contains_target",
        "contains_boa",
    } <= set(chip1)
    assert chip1["index"] == 1 and chip1["extname"] == "CHIP1.INT1" and chip1["shape"] == [256, 256]
    assert chip1["contains_target"] is True and chip1["contains_boa"] is None
    assert len(chip1["footprint"]) == 4 and len(chip1["footprint"][0]) == 2
    assert body["hdus"][0]["displayable"] is False and body["hdus"][0]["skip_reason"]

    gap = run_check(str(hawki), "--target", "150", "-30", "--boa", str(centre[0]), str(centre[1]))
    assert gap.returncode == 1
    body = json.loads(gap.stdout)
    assert body["ok"] is False
    assert body["errors"][0]["code"] == "TARGET_IN_CHIP_GAP" and body["errors"][0]["hdu"] is None
    assert body["hdus"][1]["contains_boa"] is True

    broken = tmp_path / "broken.fits"
    broken.write_bytes(hawki.read_bytes()[:5000])
    cut = run_check(str(broken), "--target", "150", "-30")
    assert cut.returncode == 1 and json.loads(cut.stdout)["errors"][0]["code"] == "TRUNCATED"
    assert "Traceback" not in cut.stderr

    nofilter = instruments.single(tmp_path / "nf.fits", {})
    assert run_check(str(nofilter), "--target", "150", "2").returncode == 1
    with_bandpass = run_check(str(nofilter), "--target", "150", "2", "--bandpass", "Ks")
    assert with_bandpass.returncode == 0 and json.loads(with_bandpass.stdout)["filter_source"] == "bandpass"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["FILE"],
        ["FILE", "--target", "150"],
        ["FILE", "--target", "a", "b"],
        ["FILE", "--target", "150", "95"],
        ["FILE", "--target", "nan", "2"],
        ["FILE", "--target", "150", "2", "--boa", "1"],
        ["/no/such/file.fits", "--target", "150", "2"],
    ],
)
def test_check_usage_errors(hawki: Path, args: list[str]) -> None:
    result = run_check(*[str(hawki) if a == "FILE" else a for a in args])
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "cards",
    [
        TAN,
        {**TAN, "CTYPE1": "RA---ZPN", "CTYPE2": "DEC--ZPN", "PV2_1": 1.0, "PV2_3": 44.0},
        {**TAN, "CTYPE1": "RA---TPV", "CTYPE2": "DEC--TPV", "PV1_1": 1.0, "PV1_4": 0.02, "PV2_1": 1.0},
        {**TAN, "CTYPE1": "GLON-SIN", "CTYPE2": "GLAT-SIN"},
        {k: v for k, v in TAN.items() if not k.startswith("CD")}
        | {"CDELT1": -1 / 3600, "CDELT2": 1 / 3600, "CROTA2": 30.0},
        {k: v for k, v in TAN.items() if not k.startswith("CD")}
        | {"CDELT1": -1 / 3600, "CDELT2": 1 / 3600, "PC1_1": 0.8, "PC1_2": 0.6, "PC2_1": -0.6, "PC2_2": 0.8},
        {
            **TAN,
            "CUNIT1": "deg",
            "CUNIT2": "deg",
            "RADESYS": "FK5",
            "EQUINOX": 2000.0,
            "DATE-OBS": "2024-01-01",
        },
    ],
)
def test_direct_wcslib_reading_matches_astropy(cards: dict[str, Any]) -> None:
    """The fast path (Wcsprm straight from the cards) gives what astropy's WCS constructor gives."""
    from services.validator import footprint

    header = fits.Header({"NAXIS": 2, "NAXIS1": 64, "NAXIS2": 64, **cards})
    text = header.tostring()
    assert not footprint._needs_astropy(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = footprint._make_wcs(text, [64, 64])
        slow = WCS(header)
    grid = np.array([[x, y] for x in (0.5, 20.0, 64.5) for y in (0.5, 33.0, 64.5)])
    np.testing.assert_allclose(fast.all_pix2world(grid, 1), slow.all_pix2world(grid, 1), rtol=0, atol=1e-10)
