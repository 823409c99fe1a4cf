"""FITS files for tests, generated with astropy: TAN images with stars and noise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def tan_wcs(
    ra: float, dec: float, scale_arcsec: float, shape: tuple[int, int], rotation_deg: float = 0.0
) -> WCS:
    """A TAN WCS centred on (ra, dec), north up and east left (before rotation)."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    s = scale_arcsec / 3600.0
    th = np.deg2rad(rotation_deg)
    w.wcs.cd = np.array([[-s * np.cos(th), s * np.sin(th)], [s * np.sin(th), s * np.cos(th)]])
    w.wcs.radesys = "ICRS"
    return w


def sky_image(
    shape: tuple[int, int],
    wcs: WCS,
    stars: Sequence[tuple[float, float, float]] = (),
    noise: float = 1.0,
    background: float = 100.0,
    seed: int = 1,
    fwhm_pix: float = 3.0,
) -> np.ndarray:
    """Background plus Gaussian noise plus Gaussian stars at (ra, dec, flux)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(background, noise, shape).astype(np.float32)
    sigma = fwhm_pix / 2.355
    for ra, dec, flux in stars:
        x, y = wcs.all_world2pix([[ra, dec]], 0)[0]
        x0, x1 = max(0, int(x) - 12), min(shape[1], int(x) + 13)
        y0, y1 = max(0, int(y) - 12), min(shape[0], int(y) + 13)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        data[y0:y1, x0:x1] += (flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))).astype(
            np.float32
        )
    return data


def write_image(
    path: Path,
    ra: float = 150.0,
    dec: float = 2.0,
    size: int = 256,
    scale_arcsec: float = 0.5,
    filter_name: str | None = "R",
    extra: dict[str, Any] | None = None,
    stars: Sequence[tuple[float, float, float]] = (),
) -> Path:
    """A single-HDU TAN image centred on (ra, dec) with a FILTER keyword."""
    w = tan_wcs(ra, dec, scale_arcsec, (size, size))
    header = w.to_header()
    if filter_name is not None:
        header["FILTER"] = filter_name
    header["OBJECT"] = "Test field"
    for key, value in (extra or {}).items():
        header[key] = value
    fits.PrimaryHDU(sky_image((size, size), w, stars), header).writeto(path, overwrite=True)
    return path


def streamed_tan_header(side: int, ra: float = 150.0, dec: float = 2.0, scale_arcsec: float = 0.2) -> bytes:
    """The primary header of a side x side float32 TAN image with a FILTER, for
    files too large to build in memory: the data is written after it in pieces."""
    header = fits.Header(
        [
            ("SIMPLE", True),
            ("BITPIX", -32),
            ("NAXIS", 2),
            ("NAXIS1", side),
            ("NAXIS2", side),
            ("CTYPE1", "RA---TAN"),
            ("CTYPE2", "DEC--TAN"),
            ("CRVAL1", ra),
            ("CRVAL2", dec),
            ("CRPIX1", side / 2),
            ("CRPIX2", side / 2),
            ("CD1_1", -scale_arcsec / 3600),
            ("CD2_2", scale_arcsec / 3600),
            ("FILTER", "R"),
        ]
    )
    return header.tostring().encode()
