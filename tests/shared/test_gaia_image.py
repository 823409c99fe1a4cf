"""Gaia pseudo images: stars where astropy says they are at the epoch, the same bytes for the same spec."""

from __future__ import annotations

import datetime
import io
import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from services.devtap import DevTap, demo_table
from services.shared.errors import Code, ServiceError
from services.shared.gaia import GaiaCatalogue, GaiaSources
from services.shared.gaia_image import (
    MAX_SIDE_PX,
    GaiaImageSpec,
    draw,
    epoch_of,
    gaia_image_fits,
    render,
)
from services.validator.fits_checks import Target, validate_file
from tests.shared.test_gaia import astropy_positions

# Barnard's star in Gaia DR3 (2016.0): the largest proper motion there is.
BARNARD = dict(ra=269.44850252, dec=4.73942005, pmra=-801.551, pmdec=10362.394, g=8.19)


def centroid(image: np.ndarray, near: tuple[float, float], half: int = 8) -> tuple[float, float]:
    """The flux-weighted centre (x, y; 0-based pixels) of the brightest pixel's box near `near`."""
    x0, y0 = (int(round(v)) for v in near)
    box = image[y0 - 3 * half : y0 + 3 * half + 1, x0 - 3 * half : x0 + 3 * half + 1]
    py, px = np.unravel_index(np.argmax(box), box.shape)
    py, px = py + y0 - 3 * half, px + x0 - 3 * half
    cut = image[py - half : py + half + 1, px - half : px + half + 1].astype(np.float64)
    yy, xx = np.mgrid[py - half : py + half + 1, px - half : px + half + 1]
    return float((cut * xx).sum() / cut.sum()), float((cut * yy).sum() / cut.sum())


def measured(hdu: fits.PrimaryHDU, ra: float, dec: float) -> SkyCoord:
    """Where the image shows the star expected near (ra, dec), through the image's own WCS."""
    wcs = WCS(hdu.header)
    guess = wcs.wcs_world2pix([[ra, dec]], 0)[0]
    x, y = centroid(hdu.data, (guess[0], guess[1]))
    ra_m, dec_m = wcs.wcs_pix2world([[x, y]], 0)[0]
    return SkyCoord(ra_m, dec_m, unit="deg")


@pytest.mark.parametrize("when", [datetime.date(2030, 7, 1), 2004.5])
@pytest.mark.parametrize("iq", [1.0, 0.6])
def test_a_star_with_a_known_proper_motion_lands_where_astropy_says(
    when: datetime.date | float, iq: float
) -> None:
    b = BARNARD
    star = GaiaSources.of([b["ra"]], [b["dec"]], [b["g"]], [b["pmra"]], [b["pmdec"]])
    field = GaiaSources.of(
        [b["ra"] + 0.01, b["ra"] - 0.02], [b["dec"] - 0.01, b["dec"] + 0.015], [12.0, 14.0]
    )
    sources = GaiaSources.of(
        np.r_[star.ra_deg, field.ra_deg],
        np.r_[star.dec_deg, field.dec_deg],
        np.r_[star.g_mag, field.g_mag],
        np.r_[star.pmra_mas_yr, field.pmra_mas_yr],
        np.r_[star.pmdec_mas_yr, field.pmdec_mas_yr],
    )
    spec = GaiaImageSpec.for_observation(b["ra"], b["dec"], 240.0, when, iq_arcsec=iq)
    hdu = render(sources, spec)
    want = astropy_positions(star, spec.epoch)[0]
    moved = want.separation(SkyCoord(b["ra"], b["dec"], unit="deg")).arcsec
    assert moved > 100  # it did move: ~10.4"/yr over >= 11.5 years
    assert measured(hdu, want.ra.deg, want.dec.deg).separation(want).arcsec < 0.1
    # The stars without proper motion at their 2016.0 places.
    for ra, dec in zip(field.ra_deg, field.dec_deg, strict=True):
        assert measured(hdu, ra, dec).separation(SkyCoord(ra, dec, unit="deg")).arcsec < 0.1


def test_sub_pixel_places_are_kept() -> None:
    spec = GaiaImageSpec(10.0, -20.0, 30.0, 2016.0, iq_arcsec=0.8, noise=0.0)
    wcs = spec.wcs()
    rng = np.random.default_rng(1)
    xy = rng.uniform(20, spec.side_px - 20, (12, 2))
    ra, dec = wcs.wcs_pix2world(xy, 0).T
    # Far enough apart to measure one by one.
    xy, ra, dec = xy[::3], ra[::3], dec[::3]
    image = draw(GaiaSources.of(ra, dec, np.full(len(ra), 15.0)), spec)
    for x, y in xy:
        cx, cy = centroid(image, (x, y), half=6)
        assert abs(cx - x) < 0.01 and abs(cy - y) < 0.01


def test_the_grid_is_tan_north_up_east_left_and_samples_the_psf() -> None:
    spec = GaiaImageSpec(150.0, 2.0, 300.0, 2025.0, iq_arcsec=1.0)
    hdu = render(GaiaSources.of([150.0], [2.0], [10.0]), spec)
    h = hdu.header
    assert (h["CTYPE1"], h["CTYPE2"]) == ("RA---TAN", "DEC--TAN")
    assert h["CDELT1"] < 0 < h["CDELT2"] and h["CDELT2"] * 3600 == pytest.approx(1.0 / 2.5)
    assert hdu.data.dtype == np.float32 and hdu.data.shape == (spec.side_px, spec.side_px)
    # The field (radius 300") with margin on every side.
    assert spec.side_px * 0.4 >= 2 * 300 * 1.1
    wcs = WCS(h)
    east = wcs.wcs_world2pix([[150.01, 2.0]], 0)[0]
    north = wcs.wcs_world2pix([[150.0, 2.01]], 0)[0]
    centre = wcs.wcs_world2pix([[150.0, 2.0]], 0)[0]
    assert east[0] < centre[0] and north[1] > centre[1]
    assert centre == pytest.approx([(spec.side_px - 1) / 2] * 2)
    # The PSF's FWHM is GAIA_im_IQ: second moment of the star (noise is 1e-6 of its peak).
    cut = hdu.data[int(centre[1]) - 8 : int(centre[1]) + 9, int(centre[0]) - 8 : int(centre[0]) + 9].astype(
        float
    )
    yy, xx = np.mgrid[-8:9, -8:9]
    sigma_px = math.sqrt((cut * xx**2).sum() / cut.sum())
    # Pixel integration adds 1/12 px^2 to the variance.
    fwhm = math.sqrt(sigma_px**2 - 1 / 12) * 2 * math.sqrt(2 * math.log(2)) * 0.4
    assert fwhm == pytest.approx(1.0, rel=0.01)


def test_a_large_field_is_drawn_coarser_not_larger() -> None:
    spec = GaiaImageSpec(0.0, 0.0, 1800.0, 2025.0, iq_arcsec=0.3)
    assert spec.side_px <= MAX_SIDE_PX + 1
    assert spec.scale_arcsec == pytest.approx(2 * 1800 * 1.1 / MAX_SIDE_PX)
    # Undersampled, each star keeps its flux (the PSF is integrated over the pixels).
    image = draw(GaiaSources.of([0.0, 0.1], [0.0, -0.1], [10.0, 12.0]), spec)
    assert image.sum() == pytest.approx(10**-4 + 10**-4.8, rel=1e-5)


def test_fluxes_are_ten_to_the_minus_point_four_g() -> None:
    spec = GaiaImageSpec(45.0, 30.0, 60.0, 2016.0, noise=0.0)
    image = draw(GaiaSources.of([45.0, 45.005], [30.0, 30.003], [9.0, 14.0]), spec)
    assert image.sum() == pytest.approx(10 ** (-0.4 * 9) + 10 ** (-0.4 * 14), rel=1e-5)


def demo_sources(ra: float, dec: float, radius: float, count: int) -> GaiaSources:
    return GaiaSources.from_table(demo_table(ra, dec, radius_arcsec=radius, count=count))


def test_the_same_request_gives_the_same_bytes() -> None:
    sources = demo_sources(200.0, -45.0, 400.0, 1500)
    when = datetime.datetime(2027, 3, 1, 3, 4, 5)
    first = gaia_image_fits(sources, GaiaImageSpec.for_observation(200.0, -45.0, 300.0, when, 0.9, 1e-4))
    # The same OB a day later: the same epoch to 0.01 yr, the same image.
    later = when + datetime.timedelta(days=1)
    again = gaia_image_fits(sources, GaiaImageSpec.for_observation(200.0, -45.0, 300.0, later, 0.9, 1e-4))
    assert first == again
    header = fits.getheader(io.BytesIO(first))
    assert header["FILTER"] == "G" and header["CATALOG"] == "Gaia DR3" and header["GAIAEPOC"] == 2027.16
    assert header["BITPIX"] == -32 and "DATE" not in header and "CHECKSUM" not in header


@pytest.mark.parametrize(
    "change",
    [
        dict(noise=2e-4),
        dict(iq_arcsec=1.0),
        dict(epoch=2027.17),
        dict(ra_deg=200.001),
        dict(radius_arcsec=301.0),
    ],
)
def test_a_different_request_has_a_different_key_and_noise(change: dict[str, float]) -> None:
    base = dict(ra_deg=200.0, dec_deg=-45.0, radius_arcsec=300.0, epoch=2027.16, iq_arcsec=0.9, noise=1e-4)
    a, b = GaiaImageSpec(**base), GaiaImageSpec(**{**base, **change})  # type: ignore[arg-type]
    assert a.key != b.key and a.seed != b.seed
    if a.side_px == b.side_px:
        empty = GaiaSources.of([200.0], [-45.0], [10.0])
        noise_a = render(empty, a).data - draw(empty, a)
        noise_b = render(empty, b).data - draw(empty, b)
        assert not np.allclose(noise_a, noise_b, rtol=0.5, atol=0.0)


def test_the_noise_is_the_fraction_of_the_brightest_pixel() -> None:
    spec = GaiaImageSpec(10.0, 10.0, 120.0, 2016.0, noise=1e-3)
    sources = GaiaSources.of([10.0, 10.01], [10.0, 10.0], [11.0, 13.0])
    clean = draw(sources, spec)
    noise = render(sources, spec).data.astype(np.float64) - clean
    assert noise.std() == pytest.approx(1e-3 * clean.max(), rel=0.01)
    assert abs(noise.mean()) < 1e-5 * clean.max()
    assert render(sources, spec).header["NOISESIG"] == pytest.approx(1e-3 * clean.max())


def test_the_epoch_is_rounded_to_a_hundredth_of_a_year() -> None:
    assert epoch_of(datetime.date(2026, 1, 1)) == 2026.0
    assert epoch_of(Time("2031-05-17T12:00:00", scale="tt")) == 2031.37
    assert epoch_of(2024.3749) == 2024.37
    spec = GaiaImageSpec.for_observation(1.0, 2.0, 30.0, 2024.3749)
    assert spec.epoch == 2024.37 and spec.label == "Gaia DR3 (epoch 2024.37)"
    assert spec.iq_arcsec == 1.0 and spec.noise == 1e-6  # the defaults


@pytest.mark.parametrize(
    "args",
    [
        (0.0, 91.0, 60.0, 2020.0),
        (0.0, 0.0, 0.0, 2020.0),
        (0.0, 0.0, 60.0, 3000.0),
        (0.0, 0.0, 60.0, 2020.0, 0.0),
        (0.0, 0.0, 60.0, 2020.0, 1.0, -1.0),
    ],
)
def test_a_bad_spec_is_an_invalid_argument(args: tuple[float, ...]) -> None:
    with pytest.raises(ServiceError) as err:
        GaiaImageSpec(*args)
    assert err.value.code is Code.INVALID_ARGUMENT


def test_the_cone_to_ask_covers_the_image_and_the_movers() -> None:
    spec = GaiaImageSpec(0.0, 0.0, 300.0, 2030.0)
    assert spec.cone_radius_arcsec >= 300 * 1.1 * math.sqrt(2) + 30


def test_an_empty_field_is_a_blank_image() -> None:
    data = render(GaiaSources.of([], [], []), GaiaImageSpec(0.0, 0.0, 60.0, 2020.0)).data
    assert data.shape[0] > 0 and not data.any()


def test_the_image_passes_the_validator_for_its_target() -> None:
    sources = demo_sources(150.0, 2.0, 400.0, 800)
    data = gaia_image_fits(sources, GaiaImageSpec.for_observation(150.0, 2.0, 300.0, 2026.5))
    report = validate_file(io.BytesIO(data), Target(target=(150.0, 2.0)))
    assert report.ok, report.to_dict()
    assert report.filter == "G"


def test_sources_drawn_in_chunks_give_the_same_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.shared import gaia_image

    sources = demo_sources(30.0, 60.0, 200.0, 700)
    spec = GaiaImageSpec(30.0, 60.0, 150.0, 2021.0, noise=0.0)
    whole = draw(sources, spec)
    monkeypatch.setattr(gaia_image, "CHUNK_SOURCES", 64)
    assert np.allclose(draw(sources, spec), whole, rtol=1e-12, atol=0.0)


def test_specs_that_differ_below_the_keys_precision_are_one_spec() -> None:
    a = GaiaImageSpec(200.0, -45.0, 300.0, 2027.161, 0.9, 1e-4)
    b = GaiaImageSpec(200.0 + 1e-11, -45.0 - 1e-11, 300.0 + 1e-6, 2027.158, 0.90000001, 1.0000001e-4)
    assert a == b and a.key == b.key
    sources = GaiaSources.of([200.0], [-45.0], [12.0])
    assert gaia_image_fits(sources, a) == gaia_image_fits(sources, b)


def test_from_the_tap_service_to_the_image() -> None:
    """The path the selector takes: the spec's cone through pyvo, then the drawing; a
    bright fast mover added to the demo catalogue lands where astropy says."""
    b = BARNARD
    table = demo_table(b["ra"], b["dec"], radius_arcsec=500.0, count=1500)
    table.add_row([4242, b["ra"], b["dec"], b["pmra"], b["pmdec"], 7.0, 2016.0])
    tap = DevTap(table)
    tap.start()
    try:
        spec = GaiaImageSpec.for_observation(b["ra"], b["dec"], 200.0, datetime.date(2029, 2, 1))
        sources = GaiaCatalogue(tap.url).cone(spec.ra_deg, spec.dec_deg, spec.cone_radius_arcsec)
    finally:
        tap.stop()
    assert 4242 in sources.source_id and sources.g_mag[0] == 7.0  # the brightest first
    hdu = render(sources, spec)
    star = GaiaSources.of([b["ra"]], [b["dec"]], [7.0], [b["pmra"]], [b["pmdec"]])
    want = astropy_positions(star, spec.epoch)[0]
    assert measured(hdu, want.ra.deg, want.dec.deg).separation(want).arcsec < 0.1
