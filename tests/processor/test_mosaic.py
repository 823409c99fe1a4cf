"""SWarp mosaics of paw-prints: stars where the input WCS puts them (SIP
chips too), blank gaps, carried keywords, SWarp's own failure messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from services.processor import mosaic
from services.shared.errors import ServiceError
from tests.processor.skyfiles import DEC, RA, centroid, paw_print

CHIP = 240
SCALE = 0.4


def chip_stars(wcss: list[WCS], per_chip: int = 4) -> list[tuple[float, float, float]]:
    """Stars well inside each chip, at sub-pixel positions, as (ra, dec, flux)."""
    stars = []
    rng = np.random.default_rng(3)
    for w in wcss:
        for _ in range(per_chip):
            x, y = rng.uniform(30, CHIP - 30, 2)
            ra, dec = w.all_pix2world([[x, y]], 0)[0]
            stars.append((float(ra), float(dec), 3000.0))
    return stars


def star_errors(path: Path, stars: list[tuple[float, float, float]]) -> list[float]:
    with fits.open(path) as hdul:
        data = hdul[0].data.astype(float)
        wcs = WCS(hdul[0].header)
    errors = []
    for ra, dec, _ in stars:
        x, y = wcs.all_world2pix([[ra, dec]], 0)[0]
        cx, cy = centroid(data, x, y)
        errors.append(float(np.hypot(cx - x, cy - y)))
    return errors


def make_paw(tmp_path: Path, sip: bool) -> tuple[Path, list[tuple[float, float, float]]]:
    # The chips' WCS first (positions), then the file with stars at those positions.
    _, wcss = paw_print(tmp_path / "layout.fits", chip=CHIP, scale_arcsec=SCALE, sip=sip)
    stars = chip_stars(wcss)
    path, _ = paw_print(tmp_path / "paw.fits", chip=CHIP, scale_arcsec=SCALE, sip=sip, stars=stars)
    return path, stars


@pytest.mark.parametrize("sip", [False, True], ids=["tan", "tan-sip"])
def test_paw_print_becomes_one_mosaic_with_stars_in_place_and_blank_gaps(sip: bool, tmp_path: Path) -> None:
    path, stars = make_paw(tmp_path, sip)
    out = tmp_path / "mosaic.fits"
    result = mosaic.mosaic_file(path, out, scratch_dir=str(tmp_path))
    assert result.hdus == [1, 2, 3, 4]
    assert abs(result.pixel_scale_arcsec - SCALE) < 0.01 * SCALE  # SIP changes the local scale a bit
    errors = star_errors(out, stars)
    assert max(errors) < 0.15, errors
    with fits.open(out) as hdul:
        data = hdul[0].data
        header = hdul[0].header
        wcs = WCS(header)
    assert header["CTYPE1"] == "RA---TAN"
    assert abs(wcs.proj_plane_pixel_scales()[0].to_value("arcsec") - result.pixel_scale_arcsec) < 1e-6
    # The centre of the paw-print is the cross of the gaps: blank, not 0.
    x, y = wcs.all_world2pix([[RA, DEC]], 0)[0]
    assert np.isnan(data[int(round(y)), int(round(x))])
    assert not (data == 0).any()
    assert 0.02 < result.blank_fraction < 0.5
    # Keywords SWarp does not carry from the primary header.
    assert header["OBJECT"] == "Paw-print field"
    assert header["INSTRUME"] == "HAWKI"
    assert header["HIERARCH ESO INS FILT1 NAME"] == "Ks"
    assert header["DATE-OBS"] == "2024-03-01T01:02:03.000"
    assert "SWarp" in str(header["HISTORY"])


def test_without_the_tpv_conversion_swarp_misplaces_sip_stars(tmp_path: Path) -> None:
    """Why the conversion exists: SWarp alone ignores SIP."""
    path, stars = make_paw(tmp_path, sip=True)
    job = tmp_path / "raw"
    job.mkdir()
    out, weight = job / "raw.fits", job / "raw.weight.fits"
    mosaic.run_swarp(path, out, weight, SCALE, job)
    errors = star_errors(out, stars)
    assert max(errors) > 1.0, errors


def test_swarp_failure_is_reported_in_swarps_words(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fits"
    bad.write_text("this is not a FITS file at all" * 200)
    with pytest.raises(ServiceError) as info:
        mosaic.run_swarp(bad, tmp_path / "o.fits", tmp_path / "w.fits", 0.4, tmp_path)
    assert info.value.code == "PROCESSING_FAILED"
    message = info.value.message
    assert message.startswith("SWarp failed")
    assert "Traceback" not in message
    assert "bad.fits" in message or "FITS" in message, message


def test_swarp_time_limit(tmp_path: Path) -> None:
    path, _ = make_paw(tmp_path, sip=False)
    with pytest.raises(ServiceError) as info:
        mosaic.mosaic_file(path, tmp_path / "m.fits", timeout_s=0.01, scratch_dir=str(tmp_path))
    assert "did not finish within" in info.value.message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("swarp-")]  # scratch removed


def test_sip_header_becomes_tpv_with_the_same_mapping() -> None:
    from tests.processor.skyfiles import header_of, sip_wcs

    wcs = sip_wcs(RA, DEC, SCALE, (CHIP, CHIP), strength=2.0)
    header = header_of(wcs)
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, CHIP, CHIP
    tpv = mosaic.sip_to_tpv(header)
    assert tpv["CTYPE1"] == "RA---TPV" and "A_ORDER" not in tpv and "PV1_1" in tpv
    converted = WCS(tpv)
    xs, ys = np.meshgrid(np.linspace(0, CHIP - 1, 9), np.linspace(0, CHIP - 1, 9))
    a = wcs.all_pix2world(xs.ravel(), ys.ravel(), 0)
    b = converted.all_pix2world(xs.ravel(), ys.ravel(), 0)
    sep = np.hypot((a[0] - b[0]) * np.cos(np.radians(DEC)), a[1] - b[1]) * 3600 / SCALE
    assert sep.max() < 0.01  # pixels


def test_raw_header_scan_agrees_with_astropy(tmp_path: Path) -> None:
    from services.processor import source

    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(5.0))])
    weight = fits.ImageHDU(np.ones((50, 60), np.float32))
    path, _ = paw_print(tmp_path / "paw.fits", chip=64, sip=True, extra_hdus=[weight, table])  # type: ignore[list-item]
    layout = mosaic.scan_layout(path)
    assert layout is not None
    with fits.open(path) as hdul:
        assert len(layout) == len(hdul)
        assert [h.index for h in layout if len(h.naxis) >= 2] == source.image_hdu_indices(hdul)
        assert [h.sip for h in layout] == ["A_ORDER" in h.header for h in hdul]
    assert layout[5].naxis == (60, 50) and layout[6].naxis == ()
    truncated = tmp_path / "cut.fits"
    truncated.write_bytes(path.read_bytes()[:5000])
    assert mosaic.scan_layout(truncated) is None


def test_raw_header_scan_leaves_what_the_header_reader_refuses_to_astropy(tmp_path: Path) -> None:
    """The scan reads with the validator's header reader: data cut short, junk after the last HDU or a
    header FITS forbids send the mosaic down the astropy path instead of a layout guessed from it."""
    path, _ = paw_print(tmp_path / "paw.fits", chip=64, sip=False)
    data = path.read_bytes()
    assert mosaic.scan_layout(path) is not None
    naxis1 = b"NAXIS1  = " + b"64".rjust(20)
    variants = {
        "cut-in-data.fits": data[:-2880],
        "junk-after.fits": data + b"\x00junk" * 500,
        "naxis-lies.fits": data.replace(naxis1, b"NAXIS1  = " + b"99999".rjust(20), 1),
    }
    for name, content in variants.items():
        assert content != data, name
        (tmp_path / name).write_bytes(content)
        assert mosaic.scan_layout(tmp_path / name) is None, name


def test_plain_paw_print_is_read_in_place(tmp_path: Path) -> None:
    """The fast path (SWarp started on the file itself, headers read meanwhile) gives the same result."""
    path, stars = make_paw(tmp_path, sip=False)
    job_dirs_before = set(tmp_path.iterdir())
    result = mosaic.mosaic_file(path, tmp_path / "m.fits", scratch_dir=str(tmp_path))
    assert set(tmp_path.iterdir()) - job_dirs_before == {tmp_path / "m.fits"}
    assert max(star_errors(tmp_path / "m.fits", stars)) < 0.15
    assert result.swarp_seconds <= result.seconds
