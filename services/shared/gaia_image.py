"""Gaia pseudo images: Gaia DR3 sources drawn as stars on a TAN grid (numpy and astropy only).

What p2api's `GAIA_im_IQ` and `GAIA_im_noise` describe: each source a Gaussian
PSF of FWHM `iq_arcsec` holding the flux 10^(-0.4 G), at its place at the
observation epoch (proper motion applied from the catalogue epoch), plus
Gaussian noise of sigma `noise` times the brightest pixel of the noiseless
image (numpy `normal(0, scale)`). The image is keyed by its `GaiaImageSpec`
(field, epoch rounded to 0.01 yr, parameters): the noise is seeded from the
key and no clock or user text enters the file, so the same spec and sources
give the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import math

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from services.shared.errors import Code, ServiceError
from services.shared.gaia import GaiaSources

DEFAULT_IQ_ARCSEC = 1.0
DEFAULT_NOISE = 1e-6  # p2api's default (as at 2020-01)
# Pixels per FWHM: 2.5 samples the PSF (Nyquist is 2).
SAMPLES_PER_FWHM = 2.5
# The image covers the field (a circle of the given radius) with this margin on each side.
MARGIN = 0.1
# Bounds on the grid: a large field at a small IQ is drawn coarser rather than larger.
MAX_SIDE_PX = 4096
MIN_SCALE_ARCSEC = 0.01
# Each PSF is drawn out to this many sigma: beyond, it is below 1e-7 of its peak.
STAMP_SIGMAS = 5.7
# Sources drawn at once: bounds the stamps' memory (8192 x 15 x 15 x 8 bytes, 15 MB, an array).
CHUNK_SOURCES = 8192
MIN_IQ_ARCSEC, MAX_IQ_ARCSEC = 0.02, 30.0
MAX_RADIUS_ARCSEC = 3600.0
# Room added to the catalogue's cone for stars that move into the field by the epoch.
PROPER_MOTION_MARGIN_ARCSEC = 60.0


def _fixed(value: float, digits: int) -> str:
    """A float as the key writes it: fixed decimals, no negative zero."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


J2000 = datetime.datetime(2000, 1, 1, 12)  # JD 2451545.0
J2000_MJD = 51544.5
JULIAN_YEAR_DAYS = 365.25


def epoch_of(when: Time | datetime.datetime | datetime.date | float) -> float:
    """The Julian year of an observation date, rounded to 0.01 yr (the date's own time
    scale: the minute between UTC and TT does not matter at 0.01 yr)."""
    if isinstance(when, (int, float)):
        year = float(when)
    elif isinstance(when, Time):
        # From the Time's own scale: a conversion from UTC past the leap-second table warns.
        year = 2000.0 + ((when.jd1 - 2451545.0) + when.jd2) / JULIAN_YEAR_DAYS
    else:
        if not isinstance(when, datetime.datetime):
            when = datetime.datetime(when.year, when.month, when.day)
        if when.tzinfo is not None:
            when = when.astimezone(datetime.UTC).replace(tzinfo=None)
        year = 2000.0 + (when - J2000).total_seconds() / 86400.0 / JULIAN_YEAR_DAYS
    return round(float(year), 2)


@dataclasses.dataclass(frozen=True)
class GaiaImageSpec:
    """What a Gaia pseudo image is drawn for, besides the sources: its key."""

    ra_deg: float  # the field's centre (ICRS)
    dec_deg: float
    radius_arcsec: float  # the field to cover: a circle of this radius around the centre
    epoch: float  # Julian year of the positions; rounded to 0.01 on construction
    iq_arcsec: float = DEFAULT_IQ_ARCSEC  # GAIA_im_IQ: the PSF's FWHM
    noise: float = DEFAULT_NOISE  # GAIA_im_noise: noise sigma / brightest pixel

    def __post_init__(self) -> None:
        # Canonical values: the key is the spec, and two specs with one key draw the same image.
        object.__setattr__(self, "ra_deg", round(float(self.ra_deg) % 360.0, 8) % 360.0)
        object.__setattr__(self, "dec_deg", round(float(self.dec_deg), 8))
        object.__setattr__(self, "radius_arcsec", round(float(self.radius_arcsec), 3))
        object.__setattr__(self, "epoch", round(float(self.epoch), 2))
        object.__setattr__(self, "iq_arcsec", round(float(self.iq_arcsec), 4))
        object.__setattr__(self, "noise", float(f"{float(self.noise):.6e}"))
        problems = []
        if not (math.isfinite(self.ra_deg) and -90.0 <= self.dec_deg <= 90.0):
            problems.append(f"not a sky position: ({self.ra_deg}, {self.dec_deg})")
        if not 0.0 < self.radius_arcsec <= MAX_RADIUS_ARCSEC:
            problems.append(f"field radius {self.radius_arcsec} arcsec outside (0, {MAX_RADIUS_ARCSEC:g}]")
        if not 1900.0 <= self.epoch <= 2200.0:
            problems.append(f"epoch {self.epoch} outside 1900-2200")
        if not MIN_IQ_ARCSEC <= self.iq_arcsec <= MAX_IQ_ARCSEC:
            problems.append(f"GAIA_im_IQ {self.iq_arcsec} arcsec outside [{MIN_IQ_ARCSEC}, {MAX_IQ_ARCSEC}]")
        if not 0.0 <= self.noise <= 1.0:
            problems.append(f"GAIA_im_noise {self.noise} outside [0, 1]")
        if problems:
            raise ServiceError(Code.INVALID_ARGUMENT, "; ".join(problems))

    @classmethod
    def for_observation(
        cls,
        ra_deg: float,
        dec_deg: float,
        radius_arcsec: float,
        when: Time | datetime.datetime | datetime.date | float,
        iq_arcsec: float | None = None,
        noise: float | None = None,
    ) -> GaiaImageSpec:
        """The spec of an OB's image: `when` the observation date (or a Julian year);
        p2api's defaults where IQ or noise is not given."""
        return cls(
            ra_deg,
            dec_deg,
            radius_arcsec,
            epoch_of(when),
            DEFAULT_IQ_ARCSEC if iq_arcsec is None else float(iq_arcsec),
            DEFAULT_NOISE if noise is None else float(noise),
        )

    @property
    def key(self) -> str:
        """The canonical text of the spec (positions to 0.04 mas): equal specs, equal keys."""
        return (
            f"gaia-dr3 ra={_fixed(self.ra_deg, 8)} dec={_fixed(self.dec_deg, 8)} "
            f"r={_fixed(self.radius_arcsec, 3)} epoch={self.epoch:.2f} "
            f"iq={_fixed(self.iq_arcsec, 4)} noise={self.noise:.6e}"
        )

    @property
    def seed(self) -> int:
        return int.from_bytes(hashlib.sha256(self.key.encode()).digest()[:8], "big")

    @property
    def label(self) -> str:
        return f"Gaia DR3 (epoch {self.epoch:.2f})"

    @property
    def cone_radius_arcsec(self) -> float:
        """The radius to ask the catalogue for: the image's corners, plus room for the
        stars that move into it between the catalogue epoch and this one."""
        return self.half_side_arcsec * math.sqrt(2.0) + PROPER_MOTION_MARGIN_ARCSEC

    @property
    def half_side_arcsec(self) -> float:
        return self.radius_arcsec * (1.0 + MARGIN)

    @property
    def scale_arcsec(self) -> float:
        return max(
            self.iq_arcsec / SAMPLES_PER_FWHM, 2.0 * self.half_side_arcsec / MAX_SIDE_PX, MIN_SCALE_ARCSEC
        )

    @property
    def side_px(self) -> int:
        side = math.ceil(2.0 * self.half_side_arcsec / self.scale_arcsec)
        return min(side + (side % 2 == 0), MAX_SIDE_PX + 1)  # odd: the centre on a pixel's centre

    def wcs(self) -> WCS:
        """TAN, north up, east left, the centre on the middle pixel."""
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.cunit = ["deg", "deg"]
        w.wcs.crval = [self.ra_deg, self.dec_deg]
        w.wcs.crpix = [(self.side_px + 1) / 2.0, (self.side_px + 1) / 2.0]
        w.wcs.cdelt = [-self.scale_arcsec / 3600.0, self.scale_arcsec / 3600.0]
        w.wcs.radesys = "ICRS"
        return w


# Numerical Recipes' erfc (a Chebyshev fit, fractional error < 1.2e-7): its polynomial in t.
_ERFC_POLY = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
              0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)  # fmt: skip


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.2e-7: numpy has none, and scipy is not among our packages."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_POLY[-1])
    for c in reversed(_ERFC_POLY[:-1]):
        poly = poly * t + c
    erfc = t * np.exp(poly - z * z)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def _profiles(centres: np.ndarray, first: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """The fraction of a 1-D Gaussian at `centres` falling in each of `size` pixels from
    `first` on (pixel i spans i-0.5..i+0.5): exact flux in each pixel, so an
    undersampled PSF keeps its flux and its centroid."""
    edges = first[:, None] + np.arange(size + 1)[None, :] - 0.5
    cdf = _erf((edges - centres[:, None]) / (sigma * math.sqrt(2.0)))
    return 0.5 * np.diff(cdf, axis=1)


def _stamps(x: np.ndarray, y: np.ndarray, flux: np.ndarray, side: int, half: int, sigma: float) -> np.ndarray:
    """The stamps of these sources summed onto a flat side x side image."""
    size = 2 * half + 1
    x0 = np.rint(x).astype(np.int64) - half
    y0 = np.rint(y).astype(np.int64) - half
    px = _profiles(x, x0, size, sigma)  # (n, size)
    py = _profiles(y, y0, size, sigma)
    cols = x0[:, None] + np.arange(size)  # (n, size)
    rows = y0[:, None] + np.arange(size)
    weights = flux[:, None, None] * py[:, :, None] * px[:, None, :]  # (n, size, size)
    index = rows[:, :, None] * side + cols[:, None, :]
    valid = ((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :]
    return np.bincount(index[valid], weights=weights[valid], minlength=side * side)


def draw(sources: GaiaSources, spec: GaiaImageSpec) -> np.ndarray:
    """The noiseless image (float64, rows south to north): every source's PSF on a stamp
    of a few sigma around it, summed with `bincount` (no full-image array per source)."""
    side = spec.side_px
    sigma = spec.iq_arcsec / spec.scale_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    half = max(1, math.ceil(STAMP_SIGMAS * sigma))
    image = np.zeros(side * side)
    if len(sources) == 0:
        return image.reshape(side, side)
    ra, dec = sources.positions_at(spec.epoch)
    x, y = spec.wcs().wcs_world2pix(ra, dec, 0)
    flux = 10.0 ** (-0.4 * sources.g_mag)
    inside = (
        np.isfinite(x)
        & np.isfinite(y)
        & np.isfinite(flux)
        & (x > -half - 1)
        & (x < side + half)
        & (y > -half - 1)
        & (y < side + half)
    )
    x, y, flux = x[inside], y[inside], flux[inside]
    for start in range(0, len(x), CHUNK_SOURCES):
        part = slice(start, start + CHUNK_SOURCES)
        image += _stamps(x[part], y[part], flux[part], side, half, sigma)
    return image.reshape(side, side)


def render(sources: GaiaSources, spec: GaiaImageSpec) -> fits.PrimaryHDU:
    """The pseudo image as a float32 FITS HDU, with its noise and a header saying what it is."""
    image = draw(sources, spec)
    peak = float(image.max())
    sigma_noise = spec.noise * peak
    if sigma_noise > 0:
        image += np.random.default_rng(spec.seed).normal(0.0, sigma_noise, image.shape)
    header = spec.wcs().to_header()
    mjd = J2000_MJD + (spec.epoch - 2000.0) * JULIAN_YEAR_DAYS
    date = J2000 + datetime.timedelta(days=mjd - J2000_MJD)
    header["FILTER"] = ("G", "Gaia G band")
    header["TELESCOP"] = ("Gaia", "the sources' positions and G magnitudes")
    header["OBJECT"] = ("Gaia DR3 pseudo image", "drawn from a catalogue, not observed")
    header["IMAGETYP"] = ("PSEUDO", "a pseudo image drawn from Gaia DR3 sources")
    header["CATALOG"] = ("Gaia DR3", "gaiadr3.gaia_source")
    header["EQUINOX"] = (2000.0, "ICRS")
    header["TIMESYS"] = "TT"
    header["DATE-OBS"] = (date.strftime("%Y-%m-%dT%H:%M:%S"), "the epoch of the positions (to 0.01 yr)")
    header["MJD-OBS"] = (round(mjd, 4), "the epoch of the positions")
    header["GAIAEPOC"] = (spec.epoch, "[yr] Julian year the positions are carried to")
    header["PSF_FWHM"] = (spec.iq_arcsec, "[arcsec] Gaussian PSF FWHM (GAIA_im_IQ)")
    header["NOISEFRC"] = (spec.noise, "noise sigma / brightest pixel (GAIA_im_noise)")
    header["NOISESIG"] = (sigma_noise, "noise sigma (pixel units)")
    header["NSOURCES"] = (len(sources), "Gaia sources given (some may fall outside)")
    header["GAIAKEY"] = (hashlib.sha256(spec.key.encode()).hexdigest()[:16], "sha256 of the image's key")
    header["COMMENT"] = "Gaia DR3 pseudo image: each source a Gaussian PSF holding 10^(-0.4 G),"
    header["COMMENT"] = "moved with its proper motion from its catalogue epoch to GAIAEPOC."
    return fits.PrimaryHDU(image.astype(np.float32), header)


def gaia_image_fits(sources: GaiaSources, spec: GaiaImageSpec) -> bytes:
    """The pseudo image as FITS bytes: the same sources and spec give the same bytes."""
    out = io.BytesIO()
    render(sources, spec).writeto(out)
    return out.getvalue()
