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
from services.shared.errors import Code, ServiceError

try:  # the Rust extension behind cdshealpix.nested, without the astropy wrappers (6x faster)
    from cdshealpix import cdshealpix as _ext
except ImportError:  # pragma: no cover
    _ext = None

ORDER = 10
MAX_CORNERS = 512


def uniq(depth: int, ipix: int) -> int:
    """NUNIQ number of cell ipix at depth: 4 * 4**depth + ipix."""
    return (1 << (2 * depth + 2)) + ipix


def _spread(v: int) -> int:
    """The bits of v at the even positions (for the nested index)."""
    out = 0
    bit = 0
    while v:
        out |= (v & 1) << (2 * bit)
        v >>= 1
        bit += 1
    return out


def nested_index(order: int, ra_deg: float, dec_deg: float) -> int:
    """HEALPix NESTED index of a position (Gorski et al. 2005; healpix_base loc2pix),
    in plain Python: a few microseconds, against ~0.3 ms through astropy angles."""
    nside = 1 << order
    z = math.sin(math.radians(dec_deg))
    za = abs(z)
    tt = (math.radians(ra_deg) % (2 * math.pi)) / (0.5 * math.pi)  # in [0, 4)
    if za <= 2.0 / 3.0:  # equatorial region
        temp1 = nside * (0.5 + tt)
        temp2 = nside * (z * 0.75)
        jp = int(temp1 - temp2)  # index of the ascending edge line
        jm = int(temp1 + temp2)  # index of the descending edge line
        ifp, ifm = jp >> order, jm >> order
        face = (ifp | 4) if ifp == ifm else (ifp if ifp < ifm else ifm + 8)
        ix = jm & (nside - 1)
        iy = nside - (jp & (nside - 1)) - 1
    else:  # polar caps
        ntt = min(3, int(tt))
        tp = tt - ntt
        tmp = nside * math.sqrt(3.0 * (1.0 - za))
        jp = min(nside - 1, int(tp * tmp))
        jm = min(nside - 1, int((1.0 - tp) * tmp))
        if z >= 0:
            face, ix, iy = ntt, nside - jm - 1, nside - jp - 1
        else:
            face, ix, iy = ntt + 8, jp, jm
    return (face << (2 * order)) + _spread(ix) + (_spread(iy) << 1)


def point_keys(p: SkyPoint) -> list[int]:
    """The NUNIQ numbers of the cells holding p at orders 0..ORDER."""
    ipix = nested_index(ORDER, p.ra, p.dec)
    return [uniq(d, ipix >> (2 * (ORDER - d))) for d in range(ORDER + 1)]


def unit_vector(p: SkyPoint) -> tuple[float, float, float]:
    ra, dec = math.radians(p.ra), math.radians(p.dec)
    return (math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec))


def check_footprint(fp: FootprintIn) -> None:
    if fp.hdu < 0:
        raise ServiceError(Code.INVALID_ARGUMENT, f"footprint hdu {fp.hdu} is negative")
    if not 3 <= len(fp.corners) <= MAX_CORNERS:
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"footprint of HDU {fp.hdu} needs 3 to {MAX_CORNERS} corners"
        )
    if not (math.isfinite(fp.pixel_scale_arcsec) and fp.pixel_scale_arcsec >= 0):
        raise ServiceError(Code.INVALID_ARGUMENT, f"footprint of HDU {fp.hdu}: bad pixel scale")


def cells(fp: FootprintIn) -> list[int]:
    """The cells (NUNIQ, multi-order up to ORDER) overlapping the footprint."""
    check_footprint(fp)
    try:
        ipix, depth = _polygon_search([c.ra for c in fp.corners], [c.dec for c in fp.corners])
    except Exception as exc:  # the Rust side rejects degenerate polygons
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"footprint of HDU {fp.hdu} is not a polygon: {exc}"
        ) from None
    if len(ipix) == 0:
        raise ServiceError(Code.INVALID_ARGUMENT, f"footprint of HDU {fp.hdu} covers no area")
    keys = (np.left_shift(np.int64(1), 2 * depth.astype(np.int64) + 2) + ipix.astype(np.int64)).tolist()
    return [int(k) for k in keys]


def _polygon_search(ra_deg: list[float], dec_deg: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """cdshealpix's multi-order polygon search down to ORDER."""
    if len({(a, d) for a, d in zip(ra_deg, dec_deg, strict=True)}) < 3:
        raise ValueError("fewer than 3 distinct corners")
    if _ext is not None:
        try:
            ipix, depth, _ = _ext.polygon_search(
                np.uint8(ORDER), np.radians(np.asarray(ra_deg)), np.radians(np.asarray(dec_deg)), False
            )
            return ipix, depth
        except (AttributeError, TypeError):  # pragma: no cover - another cdshealpix version
            pass
    ipix, depth, _ = nested.polygon_search(
        Longitude(ra_deg * u.deg), Latitude(dec_deg * u.deg), ORDER, flat=False
    )
    return ipix, depth


def corner_arrays(fp: FootprintIn) -> tuple[list[float], list[float]]:
    """The corners flat (ra0, dec0, ra1, ...) and as unit vectors (x0, y0, z0, x1, ...)."""
    flat: list[float] = []
    xyz: list[float] = []
    for c in fp.corners:
        flat += [c.ra, c.dec]
        xyz += unit_vector(c)
    return flat, xyz
