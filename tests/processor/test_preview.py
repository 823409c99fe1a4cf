"""The preview: at most 1024 pixels, north up and east left whatever the
image's orientation, the HiPS cut, transparent outside the image; and the
PNG and FITS encoders it shares with the tiles."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from services.processor import display, preview, source
from tests.fitsgen import tan_wcs
from tests.processor.skyfiles import DEC, RA, write_sky

NORTH = (RA, DEC + 0.01, 5000.0)
EAST = (RA + 0.01 / np.cos(np.radians(DEC)), DEC, 5000.0)


@pytest.mark.parametrize(
    ("rotation", "flip"), [(0.0, False), (37.0, False), (-120.0, False), (0.0, True)], ids=str
)
def test_north_is_up_and_east_is_left(rotation: float, flip: bool, tmp_path: Path) -> None:
    shape = (300, 300)
    wcs = tan_wcs(RA, DEC, 0.4, shape, rotation_deg=rotation)
    if flip:  # east to the right in the file (a mirrored detector)
        wcs.wcs.cd = wcs.wcs.cd * np.array([[-1.0, 1.0], [-1.0, 1.0]])
    path = write_sky(tmp_path / "img.fits", wcs, shape, stars=[NORTH, EAST])
    image, hdul = source.open_image(path)
    with hdul:
        cut = display.statistics(image.data).cut
        shot = preview.make_preview(image, cut)
    with Image.open(io.BytesIO(shot.png)) as im:
        grey = np.asarray(im)
        assert im.info.get("transparency") == 0
    # Each star is a saturated blob where the preview's own mapping puts it,
    # and that place is up (north) or left (east) of the centre.
    cc, cr = shot.locate(RA, DEC)
    for (ra, dec, _), up in ((NORTH, True), (EAST, False)):
        c, r = shot.locate(ra, dec)
        if up:
            assert r < cr - 50 and abs(c - cc) < 1
        else:
            assert c < cc - 50 and abs(r - cr) < 1
        blob = grey[int(round(r)) - 1 : int(round(r)) + 2, int(round(c)) - 1 : int(round(c)) + 2]
        assert (blob == 255).all(), blob
        mr, mc = int(round(2 * cr - r)), int(round(2 * cc - c))
        assert not (grey[mr - 1 : mr + 2, mc - 1 : mc + 2] == 255).all()  # nothing south or west
    if rotation:
        assert (grey == 0).any()  # rotated: the corners are transparent


def test_a_big_image_is_at_most_1024_pixels_and_averaged(tmp_path: Path) -> None:
    shape = (1000, 2600)
    wcs = tan_wcs(RA, DEC, 0.2, shape)
    path = write_sky(tmp_path / "wide.fits", wcs, shape, noise=4.0)
    image, hdul = source.open_image(path)
    with hdul:
        stats = display.statistics(image.data)
        shot = preview.make_preview(image, stats.cut)
    with Image.open(io.BytesIO(shot.png)) as im:
        assert im.size == (shot.width, shot.height)
        assert max(im.size) == 1024 and im.size[0] > 2 * im.size[1]
        grey = np.asarray(im).astype(float)
    # 2.5 image pixels per preview pixel: averaged in 2x2 blocks, the noise halves.
    assert shot.scale_arcsec == pytest.approx(0.2 * 2600 / 1024, rel=0.01)
    level_noise = 4.0 * 254 / (stats.cut.high - stats.cut.low)
    assert np.std(grey[50:-50, 50:-50]) < 0.65 * level_noise


def test_png_encoder_matches_pillow_and_fits_encoder_matches_astropy() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (64, 96)).astype(np.float32)
    data[5:9, 10:20] = np.nan
    grey = display.to_grey(data, display.Cut(-2.0, 2.0))
    assert grey.dtype == np.uint8 and (grey[5:9, 10:20] == 0).all() and grey[np.isfinite(data)].min() >= 1
    with Image.open(io.BytesIO(display.png_bytes(grey))) as im:
        assert im.mode == "L" and im.info["transparency"] == 0
        assert np.array_equal(np.asarray(im), grey)
    raw = display.fits_bytes(data, {"ORDER": 5, "NPIX": 17})
    assert len(raw) % 2880 == 0
    with fits.open(io.BytesIO(bytes(raw))) as hdul:
        hdul.verify("exception")
        assert hdul[0].header["ORDER"] == 5 and hdul[0].header["BITPIX"] == -32
        np.testing.assert_array_equal(hdul[0].data, data)


def _half_step(q: display.Quantisation) -> float:
    """Half a step, and float32's rounding (encoder and astropy's reader) at the range's ends."""
    return 0.5 * q.bscale + 1e-6 * max(abs(q.low), abs(q.high))


def test_16_bit_fits_keeps_values_within_half_a_step_and_nan_as_blank() -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(100, 3, (64, 96)).astype(np.float32)
    data[0, 0] = 5000.0  # a star's peak: within the range kept
    data[5:9, 10:20] = np.nan
    stats = display.statistics(data)
    q = display.quantisation(stats)
    # The whole range (to a rounding of BZERO): nothing clipped.
    assert q.low <= stats.data_min + q.bscale / 2 and q.high >= stats.data_max - q.bscale / 2
    width = stats.cut.high - stats.cut.low
    assert q.bscale <= width / display.STEPS_PER_CUT
    raw = display.fits_bytes(data, {"ORDER": 5}, q)
    assert len(raw) % 2880 == 0 and len(raw) < 64 * 96 * 2 + 2 * 2880
    with fits.open(io.BytesIO(bytes(raw))) as hdul:
        hdul.verify("exception")
        header = hdul[0].header
        assert header["BITPIX"] == 16 and header["BLANK"] == -32768
        assert (header["BSCALE"], header["BZERO"]) == (q.bscale, q.bzero)
        back = hdul[0].data
    assert np.array_equal(np.isnan(back), np.isnan(data))
    finite = np.isfinite(data)
    assert np.abs(back[finite] - data[finite]).max() <= _half_step(q)


def test_16_bit_window_clips_only_far_outside_the_cut() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(100, 3, (200, 200)).astype(np.float32)
    data[10, 10] = 1e30  # a hot pixel far above: the window, not the range
    data[20, 20] = -1e6
    stats = display.statistics(data)
    q = display.quantisation(stats)
    width = stats.cut.high - stats.cut.low
    assert q.bscale == pytest.approx(width / display.STEPS_PER_CUT, rel=1e-9)
    assert q.low == pytest.approx(stats.cut.low - display.WINDOW_BELOW * width, abs=q.bscale)
    assert q.high > stats.cut.high + 600 * width
    with fits.open(io.BytesIO(bytes(display.fits_bytes(data, quantised=q)))) as hdul:
        back = hdul[0].data
    assert back[10, 10] == pytest.approx(q.high, abs=q.bscale)
    assert back[20, 20] == pytest.approx(q.low, abs=q.bscale)
    sky = np.ones(data.shape, bool)
    sky[10, 10] = sky[20, 20] = False
    assert np.abs(back[sky] - data[sky]).max() <= _half_step(q)


def test_command_line_hips_and_mosaic(tmp_path: Path) -> None:
    from tests.processor.skyfiles import paw_print

    shape = (300, 300)
    path = write_sky(tmp_path / "img.fits", tan_wcs(RA, DEC, 0.4, shape), shape)
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "hips"
    proc = subprocess.run(
        [sys.executable, "-m", "services.processor", "hips", str(path), str(out), "--hdu", "0",
         "--order", "9"],
        capture_output=True, text=True, cwd=root, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "HiPS order 9" in proc.stdout
    assert (out / "properties").exists() and list((out / "Norder9").rglob("*.png"))
    paw, _ = paw_print(tmp_path / "paw.fits", chip=100)
    proc = subprocess.run(
        [sys.executable, "-m", "services.processor", "mosaic", str(paw), str(tmp_path / "m.fits")],
        capture_output=True, text=True, cwd=root, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "from HDUs [1, 2, 3, 4]" in proc.stdout
    assert fits.getheader(tmp_path / "m.fits")["INSTRUME"] == "HAWKI"
    proc = subprocess.run(
        [sys.executable, "-m", "services.processor", "hips", str(paw), str(out), "--hdu", "9"],
        capture_output=True, text=True, cwd=root, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "no HDU 9" in proc.stderr
