"""A survey cutout from HiPS FITS tiles, checked against the image the HiPS was built from:
on a rotated and an east-right grid, from a folder and over HTTP."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from reproject import reproject_interp

from services.processor.hips_cutout import cutout
from services.shared.errors import ServiceError
from tests.fitsgen import write_image

CENTRE = (150.0, 2.0)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(3)
    stars = [(CENTRE[0] + dx, CENTRE[1] + dy, 40000.0) for dx, dy in rng.uniform(-0.03, 0.03, (60, 2))]
    image = write_image(
        folder / "field.fits", ra=CENTRE[0], dec=CENTRE[1], size=768, scale_arcsec=0.5, stars=stars
    )
    out = folder / "hips"
    subprocess.run(
        [sys.executable, "-m", "services.processor", "hips", str(image), str(out)],
        check=True,
        capture_output=True,
    )
    return image, out


def grid(rotation_deg: float, east_right: bool, scale_arcsec: float = 1.0, size: int = 200) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(CENTRE)
    w.wcs.crpix = [size / 2, size / 2]
    t = np.radians(rotation_deg)
    flip = 1.0 if east_right else -1.0
    s = scale_arcsec / 3600
    w.wcs.cd = np.array([[flip * s * np.cos(t), -s * np.sin(t)], [flip * s * np.sin(t), s * np.cos(t)]])
    return w


@pytest.mark.parametrize(("rotation", "east_right"), [(0.0, False), (30.0, False), (0.0, True)])
def test_the_cutout_is_the_image_on_the_new_grid(
    survey: tuple[Path, Path], rotation: float, east_right: bool
) -> None:
    image, hips = survey
    w = grid(rotation, east_right)
    got = cutout(str(hips), w, (200, 200))
    with fits.open(image) as hdul:
        want, _ = reproject_interp(hdul[0], w, shape_out=(200, 200))
    ok = np.isfinite(got) & np.isfinite(want)
    assert ok.mean() > 0.95
    assert np.corrcoef(got[ok], want[ok])[0, 1] > 0.9
    # The brightest star is at the same place (within 1.5 pixels).
    g = np.unravel_index(np.nanargmax(np.where(ok, got, -np.inf)), got.shape)
    r = np.unravel_index(np.nanargmax(np.where(ok, want, -np.inf)), want.shape)
    assert np.hypot(g[0] - r[0], g[1] - r[1]) <= 1.5


def test_outside_the_survey_is_blank_and_pictures_only_are_refused(
    survey: tuple[Path, Path], tmp_path: Path
) -> None:
    _, hips = survey
    far = grid(0.0, False)
    far.wcs.crval = [160.0, 10.0]
    assert np.isnan(cutout(str(hips), far, (50, 50))).all()
    png_only = tmp_path / "png"
    png_only.mkdir()
    text = (
        (hips / "properties").read_text().replace("hips_tile_format   = fits png", "hips_tile_format   = png")
    )
    (png_only / "properties").write_text(text)
    with pytest.raises(ServiceError) as err:
        cutout(str(png_only), grid(0.0, False), (50, 50))
    assert err.value.code == "INVALID_ARGUMENT"


@pytest.fixture
def served(survey: tuple[Path, Path]) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(survey[1]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_over_http_the_same(survey: tuple[Path, Path], served: str) -> None:
    w = grid(30.0, False)
    assert np.array_equal(
        cutout(served, w, (120, 120)), cutout(str(survey[1]), w, (120, 120)), equal_nan=True
    )
