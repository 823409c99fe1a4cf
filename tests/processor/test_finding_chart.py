"""Finding charts checked as a user reads them, not by the renderer's arithmetic: images with
stars at known sky positions (east left, east right, rotated by 30 degrees) go through the
chart job (the image put on the chart's grid, then drawn); the JPEG is read back, its stars
found, and from them (the JPEG's own pixel <-> sky mapping) the target marker, the N and E
arrows, the scale bar and the drawn field of view are measured against figures written here."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image
from scipy import ndimage

from services.processor import charts
from services.processor.finding_chart import ChartContext, Display, cut, render

TARGET = (150.0, 2.0)
STARS = [(150.0 + dx / 3600 / math.cos(math.radians(2.0)), 2.0 + dy / 3600) for dx, dy in
         [(-150, 120), (100, 160), (170, -90), (-60, -170), (20, 60), (-190, -20)]]  # fmt: skip
FORS2_FIELD_ARCSEC = 6.8 * 60


def sky_file(path: Path, rotation_deg: float, east_right: bool, size: int = 1800, scale: float = 0.4) -> Path:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(TARGET)
    w.wcs.crpix = [size / 2, size / 2]
    t, s = math.radians(rotation_deg), scale / 3600
    flip = 1.0 if east_right else -1.0
    w.wcs.cd = np.array(
        [[flip * s * math.cos(t), -s * math.sin(t)], [flip * s * math.sin(t), s * math.cos(t)]]
    )
    rng = np.random.default_rng(1)
    data = rng.normal(100.0, 3.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for ra, dec in STARS:
        x, y = w.world_to_pixel_values(ra, dec)
        data += (60000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))).astype(np.float32)
    fits.PrimaryHDU(data, w.to_header()).writeto(path)
    return path


def context(**kw: object) -> ChartContext:
    base: dict[str, object] = {
        "prog_id": "60.A-9252(A)",
        "pi_name": "Alice Smith",
        "ob_name": "OB 1",
        "target_name": "NGC 3115",
        "target": TARGET,
        "instrument": "FORS2",
        "position_angle_deg": 0.0,
        "band": "R",
        "image_name": "test.fits",
    }
    base.update(kw)
    return ChartContext(**base)  # type: ignore[arg-type]


def rgb(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def colour_mask(img: np.ndarray, hex_colour: str, tol: int = 60) -> np.ndarray:
    want = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(img - want).sum(axis=2) < tol


def found_stars(img: np.ndarray) -> list[tuple[float, float]]:
    """Centroids (x, y) of the dark round blobs of the negative (the stars) inside the image
    frame (the axes' black frame line found on the chart, not its labels)."""
    dark = img.max(axis=2) < 90
    rows = np.nonzero(dark.mean(axis=1) > 0.5)[0]  # the frame's top and bottom lines
    cols = np.nonzero(dark.mean(axis=0) > 0.5)[0]
    inner = np.zeros_like(dark)
    inner[rows.min() + 3 : rows.max() - 2, cols.min() + 3 : cols.max() - 2] = True
    dark &= inner
    labels, n = ndimage.label(dark)
    out = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        if 8 <= len(xs) <= 600 and (np.ptp(xs) + 1) * (np.ptp(ys) + 1) < 2.2 * len(xs):  # compact, round
            out.append((len(xs), float(xs.mean()), float(ys.mean())))
    return [(x, y) for _, x, y in sorted(out, reverse=True)[:12]]  # the biggest: the bright stars


def sky_mapping(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The JPEG's affine map (east", north" from the target) -> pixel, fitted on the stars:
    the known stars matched to the dark blobs found by trying the first three on every
    triplet of blobs and keeping the map that puts the most stars on a blob."""
    found = np.array(found_stars(img))
    sky = np.array(
        [
            ((ra - TARGET[0]) * math.cos(math.radians(TARGET[1])) * 3600, (dec - TARGET[1]) * 3600)
            for ra, dec in STARS
        ]
    )
    assert len(found) >= len(STARS) - 1, found
    design = np.column_stack([sky, np.ones(len(sky))])
    best: tuple[int, np.ndarray] | None = None
    for triplet in itertools.permutations(range(len(found)), 3):
        coef, *_ = np.linalg.lstsq(design[:3], found[list(triplet)], rcond=None)
        predicted = design @ coef
        distance = np.hypot(*(predicted[:, None, :] - found[None, :, :]).transpose(2, 0, 1)).min(axis=1)
        hits = int((distance < 3.0).sum())
        if best is None or hits > best[0]:
            best = (hits, coef)
    assert best is not None and best[0] == len(STARS), best
    coef = best[1]
    matched = found[
        np.hypot(*((design @ coef)[:, None, :] - found[None, :, :]).transpose(2, 0, 1)).argmin(axis=1)
    ]
    coef, *_ = np.linalg.lstsq(design, matched, rcond=None)
    return coef[:2].T, coef[2]


def to_pixel(matrix: np.ndarray, origin: np.ndarray, east: float, north: float) -> np.ndarray:
    return matrix @ np.array([east, north]) + origin


@pytest.mark.parametrize(("rotation", "east_right"), [(0.0, False), (0.0, True), (30.0, False)])
def test_a_chart_read_back_shows_what_eso_asks(tmp_path: Path, rotation: float, east_right: bool) -> None:
    path = sky_file(tmp_path / "sky.fits", rotation, east_right)
    # pmax 99.99: the noise light, the stars dark (aplpy's default 99.75 would saturate it).
    jpeg = charts.render_job(charts.ChartJob(context(), Display(pmin=1.0, pmax=99.99), str(path), 0))
    assert len(jpeg) < 1 << 20 and jpeg[:2] == b"\xff\xd8"
    img = rgb(jpeg)
    matrix, origin = sky_mapping(img)
    per_arcsec = float(np.sqrt(abs(np.linalg.det(matrix))))

    # North up, east left on the chart, whatever the image's orientation.
    north_dir = matrix @ np.array([0.0, 1.0])
    east_dir = matrix @ np.array([1.0, 0.0])
    assert north_dir[1] < 0 and abs(north_dir[0]) < 0.05 * abs(north_dir[1])  # up (rows grow down)
    assert east_dir[0] < 0 and abs(east_dir[1]) < 0.05 * abs(east_dir[0])  # left

    # The target marker (a red circle) is on the target.
    red = colour_mask(img, "#d62728")
    ys, xs = np.nonzero(red)
    target_px = to_pixel(matrix, origin, 0.0, 0.0)
    near = np.hypot(xs - target_px[0], ys - target_px[1]) < 30
    assert near.sum() > 20 and np.hypot(xs[near].mean() - target_px[0], ys[near].mean() - target_px[1]) < 4

    # The N and E arrows point north and east (from their common base).
    for colour, direction in (("#007a33", north_dir), ("#e07000", east_dir)):
        ys, xs = np.nonzero(colour_mask(img, colour))
        assert len(xs) > 30, colour
        points = np.column_stack([xs, ys]).astype(float)
        base = points[np.argmin(points @ direction)]
        tip = points[np.argmax(points @ direction)]
        along = (tip - base) / np.linalg.norm(tip - base)
        assert along @ (direction / np.linalg.norm(direction)) > 0.97, (colour, along)

    # The scale bar's length is what its label says: 3' for this field (about 10.6' wide).
    ys, xs = np.nonzero(colour_mask(img, "#b000b0"))
    row = np.bincount(ys).argmax()
    bar = xs[np.abs(ys - row) <= 1]
    assert (bar.max() - bar.min() + 1) / per_arcsec == pytest.approx(180.0, rel=0.04)

    # FORS2's field, drawn at PA 0: a 6.8' square (blue), whatever the image's rotation.
    ys, xs = np.nonzero(colour_mask(img, "#1f5fd6", tol=90))
    width = (xs.max() - xs.min()) / per_arcsec
    height = (ys.max() - ys.min()) / per_arcsec
    assert width == pytest.approx(FORS2_FIELD_ARCSEC, rel=0.05) and height == pytest.approx(
        FORS2_FIELD_ARCSEC, rel=0.05
    )


def test_a_big_image_makes_a_chart_under_a_megabyte(tmp_path: Path) -> None:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(TARGET)
    w.wcs.crpix = [4096, 4096]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    data = np.random.default_rng(0).normal(0, 1, (8192, 8192)).astype(np.float32)
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(data, w.to_header()).writeto(path)
    jpeg = charts.render_job(charts.ChartJob(context(), Display(), str(path), 0))
    assert len(jpeg) < 1 << 20


def _title(jpeg: bytes) -> np.ndarray:
    img = rgb(jpeg)
    return img[:70]  # the title band


def test_names_are_text_never_markup_or_mathtext(tmp_path: Path) -> None:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(TARGET)
    w.wcs.crpix = [200, 200]
    w.wcs.cdelt = [-1 / 3600, 1 / 3600]
    data = np.random.default_rng(0).normal(0, 1, (400, 400)).astype(np.float32)
    name = "$\\alpha$ <b>Cen</b>"
    literal = render(data, w, context(target_name=name, instrument=""))
    # The same characters typed without any $ or < (so no parser could touch them) but the
    # same widths: the rendered title differs from mathtext's, and it draws every character.
    as_math = render(data, w, context(target_name="$\\alpha$ Cen", instrument=""))
    assert not np.array_equal(_title(literal), _title(as_math))
    ink = (_title(literal).max(axis=2) < 128).sum()
    shorter = render(data, w, context(target_name="a Cen", instrument=""))
    assert ink > (_title(shorter).max(axis=2) < 128).sum() * 1.2  # "$\alpha$ <b>...</b>" drawn as is
    # A glyph the fonts lack falls back or is drawn as a box, never an error.
    render(data, w, context(target_name="\U0001f52d Telescopium \u2609", instrument=""))


@pytest.mark.parametrize("stretch", ["linear", "sqrt", "log", "power", "arcsinh"])
def test_the_cut_is_aplpys_percentiles(stretch: str) -> None:
    data = np.random.default_rng(5).lognormal(2.0, 1.0, (200, 200))
    scaled = cut(data, Display(stretch=stretch, pmin=5.0, pmax=95.0))
    low, high = np.percentile(data, [5.0, 95.0])
    assert scaled[data <= low].max() == 0.0 and scaled[data >= high].min() == pytest.approx(1.0)
    inside = (data > low) & (data < high)
    order = np.argsort(data[inside])
    assert np.all(np.diff(scaled[inside][order]) >= -1e-12)  # monotonic, as a stretch is
