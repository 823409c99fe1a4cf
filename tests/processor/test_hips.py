"""HiPS generation: order, layout, properties, fidelity of star positions and pixel values."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from services.processor import display, hips, sampling, source
from services.processor.hips import DirectorySink, build_hips, choose_order
from services.processor.observation import Observation
from tests.fitsgen import tan_wcs
from tests.processor.skyfiles import DEC, RA, centroid, header_of, sip_wcs, write_sky

TILE_RE = re.compile(r"^Norder(\d+)/Dir(\d+)/Npix(\d+)\.(fits|png)$")


def test_order_matches_pixel_scale() -> None:
    assert choose_order(0.2) == 11  # Hipsgen would go to 12
    assert choose_order(0.4) == 10
    assert choose_order(0.106) == 12
    assert choose_order(1.0) == 9
    assert choose_order(60.0) == 3  # never below the minimum order


def _build(path: Path, out: Path, **kw: object) -> hips.HipsResult:
    image, hdul = source.open_image(path)
    with hdul:
        return build_hips(
            image,
            DirectorySink(out),
            creator_did="ivo://test/hips",
            observation=Observation.of("R", [hdul[0].header], "sha256:" + "0" * 64),
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def tan_hips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, hips.HipsResult]:
    tmp = tmp_path_factory.mktemp("tan")
    shape = (600, 700)
    wcs = tan_wcs(RA, DEC, 0.4, shape, rotation_deg=20.0)
    path = write_sky(tmp / "tan.fits", wcs, shape, stars=[(RA, DEC, 3000.0)])
    out = tmp / "hips"
    return path, out, _build(path, out)


def test_every_file_properties_names_exists_and_paths_follow_the_standard(
    tan_hips: tuple[Path, Path, hips.HipsResult],
) -> None:
    _, out, result = tan_hips
    props = dict(line.split("=", 1) for line in (out / "properties").read_text().splitlines() if "=" in line)
    props = {k.strip(): v.strip() for k, v in props.items()}
    for key in (
        "creator_did", "obs_title", "dataproduct_type", "hips_version", "hips_release_date", "hips_status",
        "hips_tile_format", "hips_order", "hips_frame", "hips_tile_width", "hips_initial_ra",
        "hips_initial_dec",
        "hips_initial_fov", "hips_pixel_cut", "hips_data_range", "hips_pixel_bitpix", "moc_sky_fraction",
        "obs_filter",
    ):  # fmt: skip
        assert props.get(key), key
    assert props["hips_order"] == "10" == str(result.order)
    assert props["hips_frame"] == "equatorial"
    assert props["hips_tile_width"] == "512"
    assert props["hips_pixel_bitpix"] == "16"
    assert set(props["hips_tile_format"].split()) == {"fits", "png"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\dZ$", props["hips_release_date"])
    assert abs(float(props["hips_initial_ra"]) - RA) < 1e-3
    low, high = (float(v) for v in props["hips_pixel_cut"].split())
    assert 90 < low < 100 < high < 120
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    others = {"properties", "Moc.fits", "Norder3/Allsky.fits", "Norder3/Allsky.png", "preview.jpg"}
    assert others <= files
    assert set(result.files) == files
    tiles = files - others
    assert len(tiles) == result.tile_count
    orders = set()
    for name in tiles:
        m = TILE_RE.match(name)
        assert m, name
        order, d, npix = int(m[1]), int(m[2]), int(m[3])
        assert d == npix // 10000 * 10000
        orders.add(order)
        assert (out / f"Norder{order}/Dir{d}/Npix{npix}.fits").exists()
        assert (out / f"Norder{order}/Dir{d}/Npix{npix}.png").exists()
    assert orders == set(range(0, result.order + 1))
    scalings = set()
    for name in sorted(tiles)[:6] + ["Norder3/Allsky.fits"]:
        if name.endswith(".fits"):
            with fits.open(out / name, do_not_scale_image_data=True) as f:
                header = f[0].header
                assert header["BITPIX"] == 16 and header["BLANK"] == -32768
                scalings.add((header["BSCALE"], header["BZERO"]))
                if "Allsky" not in name:
                    assert f[0].data.shape == (512, 512)
                    assert (f[0].data == -32768).any()  # the blank around the image
            with fits.open(out / name) as f:
                assert np.isnan(f[0].data).any()  # BLANK read as NaN
        else:
            with Image.open(out / name) as im:
                assert im.size == (512, 512) and im.mode == "L"
                assert im.info.get("transparency") == 0
    assert len(scalings) == 1  # one scaling for the whole HiPS (Aladin Lite reads it once)
    import astropy.units as u
    from mocpy import MOC

    moc = MOC.from_fits(out / "Moc.fits")
    assert moc.contains_lonlat(RA * u.deg, DEC * u.deg)[0]
    assert abs(moc.sky_fraction - float(props["moc_sky_fraction"])) < 1e-12


def test_lower_orders_are_built_from_their_children(tan_hips: tuple[Path, Path, hips.HipsResult]) -> None:
    _, out, result = tan_hips
    k = result.order
    for parent_path in sorted((out / f"Norder{k - 1}").rglob("*.fits")):
        npix = int(parent_path.stem[4:])
        parent = fits.getdata(parent_path)
        expected = np.full((512, 512), np.nan, np.float32)
        for sub in range(4):
            child = npix * 4 + sub
            cp = out / hips.tile_path(k, child, "fits")
            if not cp.exists():
                continue
            half = sampling.downsample2(fits.getdata(cp).astype(np.float32))
            r0 = (1 - (sub & 1)) * 256
            c0 = (sub >> 1) * 256
            expected[r0 : r0 + 256, c0 : c0 + 256] = half
        # Both sides were rounded to the 16-bit step once.
        step = fits.getheader(parent_path)["BSCALE"]
        np.testing.assert_allclose(parent, expected, rtol=0, atol=1.01 * step, equal_nan=True)


def test_png_tiles_are_the_fits_tiles_flipped_and_cut(tan_hips: tuple[Path, Path, hips.HipsResult]) -> None:
    _, out, result = tan_hips
    path = next((out / f"Norder{result.order}").rglob("*.fits"))
    data = fits.getdata(path)
    with Image.open(path.with_suffix(".png")) as im:
        grey = np.asarray(im)
    expected = display.to_grey(data[::-1].astype(np.float32), result.stats.cut)
    # The PNG is made from the tile before its 16-bit rounding: a level apart at most.
    assert np.abs(grey.astype(int) - expected).max() <= 1
    assert np.array_equal(grey == 0, expected == 0)
    assert (grey[np.isnan(data[::-1])] == 0).all()


def distorted_wcs(kind: str, scale: float, shape: tuple[int, int]) -> WCS:
    """TAN; TAN-SIP (forward terms only); the same SIP as TPV; ZPN with a cubic term."""
    if kind == "tan":
        return tan_wcs(RA, DEC, scale, shape, 15.0)
    sip = sip_wcs(RA, DEC, scale, shape, strength=1.5)
    if kind == "sip":
        return sip
    if kind == "tpv":
        from services.processor.mosaic import sip_to_tpv

        header = header_of(sip)
        header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, shape[1], shape[0]
        tpv = sip_to_tpv(header)
        assert tpv["CTYPE1"] == "RA---TPV" and "PV1_7" in tpv
        return WCS(tpv)
    # ZPN: zenithal polynomial R = t + 20000 t^3 (t: radians from the centre),
    # a few pixels off a gnomonic grid at the corners.
    wcs = tan_wcs(RA, DEC, scale, shape, 15.0)
    wcs.wcs.ctype = ["RA---ZPN", "DEC--ZPN"]
    wcs.wcs.set_pv([(2, 0, 0.0), (2, 1, 1.0), (2, 3, 20000.0)])
    wcs.wcs.set()
    plain = tan_wcs(RA, DEC, scale, shape, 15.0)
    corner = wcs.all_pix2world([[10.0, 10.0]], 0)
    assert np.hypot(*(plain.all_world2pix(corner, 0)[0] - 10.0)) > 2
    return wcs


def _star_offsets(kind: str, tmp: Path) -> list[float]:
    """Stars placed at known sky positions inside deepest-order tiles; their
    centroids in the tiles against where the WCS puts them, in source pixels."""
    import astropy.units as u
    from cdshealpix import nested

    shape = (900, 900)
    scale = 0.2
    wcs = distorted_wcs(kind, scale, shape)
    order = choose_order(scale)
    depth = order + hips.TILE_BITS
    # Positions spread over the image, including near the corners where SIP is strongest.
    fracs = [0.12, 0.3, 0.5, 0.7, 0.88]
    px = np.array([f * shape[1] for f in fracs for _ in fracs]) + 0.37
    py = np.array([f * shape[0] for _ in fracs for f in fracs]) + 0.61
    lon, lat = wcs.all_pix2world(px, py, 0)
    stars = [(float(a), float(b), 4000.0) for a, b in zip(lon, lat, strict=True)]
    path = write_sky(tmp / f"{kind}.fits", wcs, shape, stars=stars, noise=0.5)
    out = tmp / f"hips-{kind}"
    result = _build(path, out)
    assert result.order == order
    cells, dx, dy = nested.lonlat_to_healpix(lon * u.deg, lat * u.deg, depth, return_offsets=True)
    offsets = []
    for cell, fx, fy in zip(cells.astype(np.int64), dx, dy, strict=True):
        tile = int(cell) >> 18
        inner = int(cell) & ((1 << 18) - 1)
        x = sum(((inner >> (2 * b)) & 1) << b for b in range(9))
        y = sum(((inner >> (2 * b + 1)) & 1) << b for b in range(9))
        # Continuous tile position of the star: cell corner + offset; pixel centres at +0.5.
        xs, ys = x + fx - 0.5, y + fy - 0.5
        if not (8 <= xs <= 503 and 8 <= ys <= 503):
            continue  # too close to a tile edge for a centroid in one tile
        data = fits.getdata(out / hips.tile_path(order, tile, "fits")).astype(float)
        # numpy row r is x = 511 - r, column c is y.
        c_found, r_found = centroid(data, ys, 511 - xs)
        err_tile = np.hypot(c_found - ys, r_found - (511 - xs))
        offsets.append(float(err_tile * hips.tile_pixel_arcsec(order) / scale))
    return offsets


@pytest.mark.parametrize("kind", ["tan", "sip", "tpv", "zpn"])
def test_stars_land_where_the_wcs_puts_them(kind: str, tmp_path: Path) -> None:
    offsets = _star_offsets(kind, tmp_path)
    assert len(offsets) >= 10
    assert max(offsets) < 0.1, offsets


def test_sip_without_inverse_is_honoured(tmp_path: Path) -> None:
    """The SIP terms matter: ignoring them puts pixels several pixels off."""
    shape = (900, 900)
    wcs = sip_wcs(RA, DEC, 0.2, shape, strength=1.5)
    image = sampling.SkyImage(np.zeros(shape, np.float32), wcs)
    lon, lat = wcs.all_pix2world([[20.0, 20.0]], 0)[0]
    x, y = image.world_to_pixel(np.array([lon]), np.array([lat]))
    assert abs(x[0] - 20) < 1e-4 and abs(y[0] - 20) < 1e-4
    plain = wcs.deepcopy()
    plain.sip = None
    xt, yt = plain.wcs_world2pix([[lon, lat]], 0)[0]
    assert np.hypot(xt - 20, yt - 20) > 2


def test_interpolation_error_is_measured_and_small(tmp_path: Path) -> None:
    shape = (600, 600)
    wcs = sip_wcs(RA, DEC, 0.2, shape, strength=3.0)
    image = sampling.SkyImage(np.zeros(shape, np.float32), wcs)
    order = choose_order(0.2)
    mapper = hips.TileMapper(image, order)
    tiles = hips.candidate_tiles(image, order)
    grids = mapper.grids(tiles)
    checked = 0
    for tile in tiles.tolist():
        grid = grids[tile]
        if not mapper.overlaps(grid, shape):
            continue
        px, py, ox, oy = mapper.pixels(grid)
        # Exact transform of every third pixel of the tile, edges included.
        xs = np.r_[np.arange(0, 512, 3), 511]
        lon, lat = hips.cell_centres(hips.cell_ids(np.array([tile], np.uint64), xs, xs)[0], order + 9)
        ex, ey = image.world_to_pixel(lon, lat)
        rows = 511 - xs  # rows r are x = 511 - r
        px, py = px[rows][:, xs], py[rows][:, xs]
        inside = (ex > 0) & (ex < shape[1]) & (ey > 0) & (ey < shape[0])
        if not inside.any():
            continue
        err = np.hypot(px + ox - ex, py + oy - ey)[inside]
        assert err.max() < 0.05, (tile, err.max())
        assert grid.error < sampling.TOLERANCE_PX
        checked += 1
    assert checked >= 4


def test_hips_read_back_with_reproject_matches_the_source(tmp_path: Path) -> None:
    """The HiPS, read with reproject's HiPS reader and resampled back onto the
    source WCS, equals the source image within its noise."""
    from reproject import reproject_interp
    from reproject.hips._dask_array import HiPSArray  # the reader behind hips_as_dask_array

    shape = (500, 500)
    wcs = tan_wcs(RA, DEC, 0.4, shape, rotation_deg=33.0)
    rng = np.random.default_rng(5)
    stars = [(RA + float(a), DEC + float(b), 2000.0) for a, b in rng.uniform(-0.022, 0.022, (12, 2))]
    path = write_sky(tmp_path / "src.fits", wcs, shape, stars=stars, noise=1.0)
    out = tmp_path / "hips"
    result = _build(path, out)
    reader = HiPSArray(out, level=result.order)
    hips_wcs = reader.wcs
    # The part of the all-sky array under the image.
    ys, xs = np.mgrid[0 : shape[0] : 50, 0 : shape[1] : 50]
    lon, lat = wcs.all_pix2world(np.r_[xs.ravel(), 0, shape[1]], np.r_[ys.ravel(), 0, shape[0]], 0)
    hx, hy = hips_wcs.world_to_pixel_values(lon, lat)
    # Whole 512-pixel chunks (tiles) of the all-sky array, read one by one
    # (a dask slice of the 2.6-million-pixel-wide array builds a huge graph).
    x0, x1 = (int(hx.min()) - 20) // 512 * 512, (int(hx.max()) + 20) // 512 * 512 + 512
    y0, y1 = (int(hy.min()) - 20) // 512 * 512, (int(hy.max()) + 20) // 512 * 512 + 512
    cut = np.full((y1 - y0, x1 - x0), np.nan)
    for ys0 in range(y0, y1, 512):
        for xs0 in range(x0, x1, 512):
            block = reader[slice(ys0, ys0 + 512), slice(xs0, xs0 + 512)]
            cut[ys0 - y0 : ys0 - y0 + 512, xs0 - x0 : xs0 - x0 + 512] = block
    back, footprint = reproject_interp((cut, hips_wcs[y0:y1, x0:x1]), wcs, shape_out=shape, order="bilinear")
    source_data = fits.getdata(path).astype(float)
    inner = (slice(10, -10), slice(10, -10))
    diff = (back - source_data)[inner]
    assert np.isfinite(diff).all()
    # Two bilinear resamplings smooth the noise (sigma 1) but keep the level.
    sky = source_data[inner] < 105
    assert abs(float(np.median(diff[sky]))) < 0.05
    assert float(np.std(diff[sky])) < 1.0
    # Stars keep their flux: sums over the star areas agree within 2%.
    bright = source_data[inner] > 150
    assert abs(back[inner][bright].sum() / source_data[inner][bright].sum() - 1) < 0.02


def test_nearest_resampling_copies_source_values(tmp_path: Path) -> None:
    shape = (300, 300)
    wcs = tan_wcs(RA, DEC, 0.4, shape)
    path = write_sky(tmp_path / "n.fits", wcs, shape)
    out = tmp_path / "hips"
    result = _build(path, out, resampling=sampling.NEAREST)
    source_values = np.unique(fits.getdata(path))
    tile = next((out / f"Norder{result.order}").rglob("*.fits"))
    values = fits.getdata(tile)
    step = fits.getheader(tile)["BSCALE"]
    finite = np.unique(values[np.isfinite(values)])
    assert finite.size > 1000
    # Each a source value, rounded to the 16-bit step.
    at = np.clip(np.searchsorted(source_values, finite), 1, source_values.size - 1)
    nearest = np.minimum(np.abs(source_values[at] - finite), np.abs(source_values[at - 1] - finite))
    assert nearest.max() <= 0.5 * step * 1.001
    assert "nearest" in (out / "properties").read_text()


@pytest.mark.parametrize("where", ["pole", "ra0", "galactic"])
def test_stars_land_right_at_the_pole_across_ra_0_and_in_galactic_frames(where: str, tmp_path: Path) -> None:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from cdshealpix import nested

    shape = (400, 400)
    scale = 0.4
    if where == "pole":
        wcs = tan_wcs(33.0, 89.97, scale, shape, rotation_deg=10.0)
    elif where == "ra0":
        wcs = tan_wcs(0.01, -30.0, scale, shape)
    else:
        wcs = tan_wcs(120.0, 5.0, scale, shape)
        wcs.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
        wcs.wcs.radesys = ""
        wcs.wcs.set()
    xs = np.array([60.3, 200.5, 330.7, 90.2, 310.1])
    ys = np.array([70.6, 210.4, 300.2, 320.9, 80.3])
    lon, lat = wcs.all_pix2world(xs, ys, 0)
    if where == "galactic":
        icrs = SkyCoord(lon, lat, unit="deg", frame="galactic").icrs
        ra, dec = icrs.ra.deg, icrs.dec.deg
        stars = [(float(a), float(b), 4000.0) for a, b in zip(lon, lat, strict=True)]
    else:
        ra, dec = lon, lat
        stars = [(float(a), float(b), 4000.0) for a, b in zip(ra, dec, strict=True)]
    path = write_sky(tmp_path / "img.fits", wcs, shape, stars=stars, noise=0.5)
    out = tmp_path / "hips"
    result = _build(path, out)
    cells, dx, dy = nested.lonlat_to_healpix(ra * u.deg, dec * u.deg, result.order + 9, return_offsets=True)
    found = 0
    for cell, fx, fy in zip(cells.astype(np.int64), dx, dy, strict=True):
        tile, inner = int(cell) >> 18, int(cell) & ((1 << 18) - 1)
        x = sum(((inner >> (2 * b)) & 1) << b for b in range(9)) + fx - 0.5
        y = sum(((inner >> (2 * b + 1)) & 1) << b for b in range(9)) + fy - 0.5
        if not (8 <= x <= 503 and 8 <= y <= 503):
            continue
        data = fits.getdata(out / hips.tile_path(result.order, tile, "fits")).astype(float)
        c, r = centroid(data, y, 511 - x)
        assert np.hypot(c - y, r - (511 - x)) * hips.tile_pixel_arcsec(result.order) / scale < 0.1
        found += 1
    assert found >= 2


@pytest.mark.parametrize(
    ("depth", "cells"),
    [
        (14, np.arange(100, 180, dtype=np.uint64)),  # runs merge into ranges
        (14, np.random.default_rng(1).integers(0, 12 * 4**14, 5000).astype(np.uint64)),
        (14, (np.uint64(123) << np.uint64(6)) + np.arange(64, dtype=np.uint64)),  # a whole parent cell
        (3, np.arange(12 * 4**3, dtype=np.uint64)),  # the whole sky
        (29, np.random.default_rng(2).integers(0, 12 * 4**29, 50, dtype=np.uint64)),
        (10, np.zeros(0, np.uint64)),  # empty
    ],
)
def test_moc_fits_is_what_mocpy_writes(depth: int, cells: np.ndarray) -> None:
    """Our Moc.fits is mocpy's, byte for byte, but for the tool's name."""
    import io

    from mocpy import MOC

    moc = MOC.from_healpix_cells(cells, np.full(cells.shape, depth, dtype=np.uint8), depth)
    buf = io.BytesIO()
    moc.serialize(format="fits").writeto(buf)
    theirs = buf.getvalue().replace(
        b"MOCTOOL = 'CDS MOC Rust lib'".ljust(80), f"MOCTOOL = '{hips.MOC_TOOL}'".ljust(80).encode()
    )
    ours, fraction = hips.moc_fits(cells, depth)
    assert ours == theirs
    # mocpy rounds a tiny fraction to 0 (50 cells of order 29: 1.4e-17).
    assert fraction == pytest.approx(moc.sky_fraction, rel=1e-12, abs=1e-15)
    back = MOC.from_fits(io.BytesIO(ours))
    assert back == moc


def test_the_command_line_hips_imports_neither_mocpy_nor_networkx(tmp_path: Path) -> None:
    import subprocess
    import sys

    shape = (200, 200)
    path = write_sky(tmp_path / "img.fits", tan_wcs(RA, DEC, 0.4, shape), shape)
    root = Path(__file__).resolve().parents[2]
    command = ["-X", "importtime", "-m", "services.processor", "hips", str(path), str(tmp_path / "h")]
    proc = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, cwd=root, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {
        line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")
    }
    assert "services.processor.hips" in imported
    assert not {m for m in imported if m.split(".")[0] in ("mocpy", "networkx", "grpc")}
    assert (tmp_path / "h" / "Moc.fits").exists()
