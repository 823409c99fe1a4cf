"""FITS files for the processor tests: TAN and TAN-SIP images with stars at
chosen sky positions, HAWK-I-like paw-prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip

from tests.fitsgen import sky_image, tan_wcs

RA, DEC = 150.0, 2.0


def sip_wcs(ra: float, dec: float, scale_arcsec: float, shape: tuple[int, int], strength: float = 1.0) -> WCS:
    """TAN-SIP with forward A_/B_ terms only (no AP_/BP_ inverse), a few pixels at the corners."""
    w = tan_wcs(ra, dec, scale_arcsec, shape)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    ny, nx = shape
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    half = max(nx, ny) / 2
    # Quadratic and cubic terms of a few pixels (times `strength`) at the corners.
    a[2, 0] = 1.5 * strength / half**2
    a[1, 1] = -1.0 * strength / half**2
    a[3, 0] = 1.5 * strength / half**3
    b[0, 2] = 1.2 * strength / half**2
    b[1, 1] = 0.8 * strength / half**2
    b[0, 3] = -1.0 * strength / half**3
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def header_of(wcs: WCS) -> fits.Header:
    header = wcs.to_header(relax=True)
    if wcs.sip is not None:
        for key in [k for k in header if k.startswith(("AP_", "BP_"))]:
            del header[key]
    return header


def write_sky(
    path: Path,
    wcs: WCS,
    shape: tuple[int, int],
    stars: Sequence[tuple[float, float, float]] = (),
    noise: float = 1.0,
    extra: dict[str, object] | None = None,
) -> Path:
    header = header_of(wcs)
    header["FILTER"] = "R"
    header["OBJECT"] = "Processor test"
    for key, value in (extra or {}).items():
        header[key] = value
    data = sky_image(shape, wcs, stars, noise=noise)
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def paw_print(
    path: Path,
    chip: int = 256,
    scale_arcsec: float = 0.4,
    gap_arcsec: float = 12.0,
    stars: Sequence[tuple[float, float, float]] = (),
    sip: bool = False,
    extra_hdus: Sequence[fits.ImageHDU] = (),
) -> tuple[Path, list[WCS]]:
    """A HAWK-I-like file: an empty primary with the instrument keywords and
    four chips in a 2x2 square with gaps between them."""
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = "Paw-print field"
    primary.header["INSTRUME"] = "HAWKI"
    primary.header["HIERARCH ESO INS FILT1 NAME"] = "Ks"
    primary.header["DATE-OBS"] = "2024-03-01T01:02:03.000"
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [primary]
    wcss = []
    half = (chip * scale_arcsec + gap_arcsec) / 2 / scale_arcsec  # chip centre offset, pixels
    for i, (dx, dy) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
        w = (
            sip_wcs(RA, DEC, scale_arcsec, (chip, chip))
            if sip
            else tan_wcs(RA, DEC, scale_arcsec, (chip, chip))
        )
        # East is left: a chip to the east (dx < 0 on the sky's x) sees the centre to its west.
        w.wcs.crpix = [(chip + 1) / 2 - dx * half, (chip + 1) / 2 - dy * half]
        if sip:
            w.sip = Sip(w.sip.a, w.sip.b, None, None, w.wcs.crpix)
        w.wcs.set()
        data = sky_image((chip, chip), w, stars, seed=10 + i)
        header = header_of(w)
        header["EXTNAME"] = f"CHIP{i + 1}.INT1"
        hdus.append(fits.ImageHDU(data, header))
        wcss.append(w)
    hdus.extend(extra_hdus)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path, wcss


def centroid(
    data: np.ndarray, x: float, y: float, radius: int = 6, background: float = 100.0
) -> tuple[float, float]:
    """Background-subtracted first moment around (x, y) (0-based column, row)."""
    x0, y0 = int(round(x)), int(round(y))
    cut = np.asarray(data[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1], float) - background
    cut = np.where(np.isfinite(cut) & (cut > 0), cut, 0.0)
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    total = cut.sum()
    return float((xx * cut).sum() / total), float((yy * cut).sum() / total)
