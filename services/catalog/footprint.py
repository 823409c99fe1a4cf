"""The footprint index: each HDU footprint as HEALPix cells (NUNIQ, orders 0..10)
for a GIN lookup, plus its corners as unit vectors for the exact test in SQL.

A point's keys are its order-10 cell and that cell's ancestors, so one
`cells && keys` lookup finds footprints stored with coarse cells (large
images) as well as fine ones, without storing thousands of order-10 cells.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
from astropy.coordinates import Latitude, Longitude
from cdshealpix import nested

from services.catalog.model import FootprintIn, SkyPoint
from services.shared.errors import ServiceError

ORDER = 10
MAX_CORNERS = 512


def uniq(depth: int, ipix: int) -> int:
    """NUNIQ number of cell ipix at depth: 4 * 4**depth + ipix."""
    return (1 << (2 * depth + 2)) + ipix


def point_keys(p: SkyPoint) -> list[int]:
    """The NUNIQ numbers of the cells holding p at orders 0..ORDER."""
    ipix = int(nested.lonlat_to_healpix(Longitude([p.ra] * u.deg), Latitude([p.dec] * u.deg), ORDER)[0])
    return [uniq(d, ipix >> (2 * (ORDER - d))) for d in range(ORDER + 1)]


def unit_vector(p: SkyPoint) -> tuple[float, float, float]:
    ra, dec = math.radians(p.ra), math.radians(p.dec)
    return (math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec))


def check_footprint(fp: FootprintIn) -> None:
    if fp.hdu < 0:
        raise ServiceError("INVALID_ARGUMENT", f"footprint hdu {fp.hdu} is negative")
    if not 3 <= len(fp.corners) <= MAX_CORNERS:
        raise ServiceError("INVALID_ARGUMENT", f"footprint of HDU {fp.hdu} needs 3 to {MAX_CORNERS} corners")
    if not (math.isfinite(fp.pixel_scale_arcsec) and fp.pixel_scale_arcsec >= 0):
        raise ServiceError("INVALID_ARGUMENT", f"footprint of HDU {fp.hdu}: bad pixel scale")


def cells(fp: FootprintIn) -> list[int]:
    """The cells (NUNIQ, multi-order up to ORDER) overlapping the footprint."""
    check_footprint(fp)
    lon = Longitude([c.ra for c in fp.corners] * u.deg)
    lat = Latitude([c.dec for c in fp.corners] * u.deg)
    try:
        ipix, depth, _ = nested.polygon_search(lon, lat, ORDER, flat=False)
    except Exception as exc:  # the Rust side rejects degenerate polygons
        raise ServiceError("INVALID_ARGUMENT", f"footprint of HDU {fp.hdu} is not a polygon: {exc}") from None
    if len(ipix) == 0:
        raise ServiceError("INVALID_ARGUMENT", f"footprint of HDU {fp.hdu} covers no area")
    keys = (np.left_shift(np.int64(1), 2 * depth.astype(np.int64) + 2) + ipix.astype(np.int64)).tolist()
    return [int(k) for k in keys]


def corner_arrays(fp: FootprintIn) -> tuple[list[float], list[float]]:
    """The corners flat (ra0, dec0, ra1, ...) and as unit vectors (x0, y0, z0, x1, ...)."""
    flat: list[float] = []
    xyz: list[float] = []
    for c in fp.corners:
        flat += [c.ra, c.dec]
        xyz += unit_vector(c)
    return flat, xyz
