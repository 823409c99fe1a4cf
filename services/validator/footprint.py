"""Celestial WCS of one image HDU: its checks, footprint corners, and where a sky position falls.

The WCS is built by astropy from the header's WCS cards alone (a cut-down
header is several times faster to parse than the full one), so SIP, TPV and
ZPN distortions work as astropy reads them. Positions are ICRS degrees; a
WCS in another frame (FK4, galactic, ecliptic) is converted.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.wcs import WCS, Wcsprm

from services.shared.fits_header import parse_value

Sky = tuple[float, float]  # (ra, dec), ICRS degrees

MIN_SCALE_ARCSEC = 0.001
MAX_SCALE_ARCSEC = 3600.0
ROUND_TRIP_PIX = 0.05


class WcsProblem(Exception):
    """Why an HDU's WCS is unusable, in words for the report."""


@dataclasses.dataclass
class SkyFootprint:
    """A checked celestial WCS over an nx x ny image (FITS pixel coordinates, 1-based)."""

    wcs: WCS  # two celestial axes
    nx: int
    ny: int
    pixel_scale_arcsec: float
    corners: list[Sky]  # ICRS, pixel order around the edge
    center: Sky
    radius_deg: float  # centre to farthest corner
    frame: str  # "icrs" or an astropy frame name the WCS is in
    swap: bool = False  # latitude on the first axis

    def to_pixel(self, pos: Sky) -> tuple[float, float] | None:
        """FITS pixel coordinates (1-based) of an ICRS position, or None where the WCS has none."""
        lon, lat = self._from_icrs(pos)
        try:
            world = [[lat, lon]] if self.swap else [[lon, lat]]
            x, y = _world2pix(self.wcs, np.array(world, dtype=float), quiet=True)[0]
        except Exception:
            return None
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        # A projection can map a far position onto the plane (the far side of the sky): check it comes back.
        back = self.world(x, y)
        if back is None or separation_deg(back, pos) > 1.0 / 3600:
            return None
        return float(x), float(y)

    def world(self, x: float, y: float) -> Sky | None:
        lon, lat = _pix2world(self.wcs, np.array([[x, y]], dtype=float))[0]
        if self.swap:
            lon, lat = lat, lon
        if not (math.isfinite(lon) and math.isfinite(lat)):
            return None
        return self._to_icrs((float(lon), float(lat)))

    def contains(self, pos: Sky) -> tuple[bool, tuple[float, float] | None]:
        """Whether the position falls on the image's pixels, and its pixel coordinates."""
        if separation_deg(self.center, pos) > self.radius_deg * 1.05 + 1.0 / 60:
            return False, None
        pix = self.to_pixel(pos)
        if pix is None:
            return False, None
        x, y = pix
        inside = 0.5 <= x <= self.nx + 0.5 and 0.5 <= y <= self.ny + 0.5
        return inside, pix

    def _from_icrs(self, pos: Sky) -> Sky:
        if self.frame == "icrs":
            return pos
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import wcs_to_celestial_frame

        c = SkyCoord(pos[0], pos[1], unit="deg", frame="icrs").transform_to(wcs_to_celestial_frame(self.wcs))
        sph = c.spherical
        return float(sph.lon.deg), float(sph.lat.deg)

    def _to_icrs(self, pos: Sky) -> Sky:
        if self.frame == "icrs":
            return pos
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import wcs_to_celestial_frame

        c = SkyCoord(pos[0], pos[1], unit="deg", frame=wcs_to_celestial_frame(self.wcs)).icrs
        return float(c.ra.deg) % 360.0, float(c.dec.deg)


def _plain(w: WCS) -> bool:
    """No distortion that astropy applies outside wcslib (SIP, lookup tables): wcslib alone maps it
    (TPV and ZPN included), and calling it directly skips astropy's per-call overhead."""
    return w.sip is None and w.cpdis1 is None and w.cpdis2 is None and w.det2im1 is None and w.det2im2 is None


def _pix2world(w: WCS, pix: np.ndarray) -> np.ndarray:
    """World coordinates of FITS (1-based) pixel positions, distortions included."""
    if _plain(w):
        return np.asarray(w.wcs.p2s(pix, 1)["world"])
    return np.asarray(w.all_pix2world(pix, 1))


def _world2pix(w: WCS, world: np.ndarray, quiet: bool = False) -> np.ndarray:
    """FITS (1-based) pixel positions of world coordinates, distortions included."""
    if _plain(w):
        return np.asarray(w.wcs.s2p(world, 1)["pixcrd"])
    return np.asarray(w.all_world2pix(world, 1, tolerance=1e-6, maxiter=50, quiet=quiet))


def _frame_of(w: WCS, lng: int, lat: int) -> str:
    ctype = [c.upper() for c in w.wcs.ctype]
    if ctype[lng].startswith("RA") and ctype[lat].startswith("DEC"):
        radesys = (w.wcs.radesys or "").strip().upper()
        # FK5 J2000 and ICRS differ by tens of milliarcseconds: no conversion needed for a picture.
        if radesys in ("", "ICRS", "FK5") or (radesys == "FK5" and w.wcs.equinox in (2000.0,)):
            return "icrs"
        return radesys.lower()
    return "other"


def build(cards: str, axes: Sequence[int], sky_axes: tuple[int, int]) -> SkyFootprint:
    """Checks the WCS in `cards` for the image of `axes` (NAXIS1 first) and returns its footprint.

    `sky_axes` are the two (0-based) axes longer than 1; any other axis has length 1.
    Raises WcsProblem with the reason when the WCS is unusable.
    """
    naxis = len(axes)
    header = f"NAXIS   = {naxis:>20d}".ljust(80) + "".join(
        f"NAXIS{i + 1:<3d}= {n:>20d}".ljust(80) for i, n in enumerate(axes)
    )
    if "CTYPE" not in cards:
        raise WcsProblem("no WCS keywords (CTYPEn missing)")
    _check_raw(cards, sky_axes)
    try:
        full = _make_wcs(header + cards + "END".ljust(80), list(axes))
        if full.naxis < max(sky_axes) + 1:
            raise WcsProblem(f"the WCS has {full.naxis} axes; the image has {naxis}")
        w = full.sub([sky_axes[0] + 1, sky_axes[1] + 1]) if full.naxis != 2 or sky_axes != (0, 1) else full
        if full.sip is not None:
            w.sip = full.sip
    except WcsProblem:
        raise
    except MemoryError:
        raise WcsProblem("the WCS cannot be read") from None
    except Exception as exc:
        raise WcsProblem(f"it cannot be read: {_short(exc)}") from None
    return check(w, axes[sky_axes[0]], axes[sky_axes[1]])


def _needs_astropy(cards: str) -> bool:
    """Whether astropy's own reading is needed: SIP, or SCAMP's TAN with PV terms (read as TPV)."""
    return "SIP" in cards or "A_ORDER" in cards or ("-TAN" in cards and "PV1_" in cards)


def _make_wcs(text: str, axes: list[int]) -> WCS:
    """A WCS from header text. Without SIP or SCAMP terms, wcslib reads it directly: the same
    result (wcspih, then the same fixes) as astropy's constructor at a tenth of the cost."""
    if _needs_astropy(text):
        return WCS(text)
    prm = Wcsprm(header=text.encode("ascii"), relax=True)
    prm.fix("", axes)
    w = WCS(naxis=prm.naxis)
    w.wcs = prm
    w.wcs.set()
    return w


_TEXT_KEYS = ("CTYPE", "CUNIT", "RADESYS", "RADECSYS", "DATE-OBS", "EQUINOX", "EPOCH", "MJD-OBS")


def _check_raw(cards: str, sky_axes: tuple[int, int]) -> None:
    """What wcslib would silently repair or drop: non-numeric values, a zero CD matrix or CDELT."""
    values: dict[str, Any] = {}
    for i in range(0, len(cards), 80):
        card = cards[i : i + 80]
        key = card[:8].strip()
        value = parse_value(card[9:])
        if key.startswith(_TEXT_KEYS):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise WcsProblem(f"{key} = {card[9:].split('/')[0].strip()} is not a finite number")
        values.setdefault(key, value)
    # Hostile sizes: astropy allocates (order + 1)^2 SIP coefficients, wcslib WCSAXES^2 matrices.
    for key in ("A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER"):
        order = values.get(key)
        if order is not None and not (isinstance(order, int) and 0 <= order <= 9):
            raise WcsProblem(f"{key} = {order} (SIP orders go from 0 to 9)")
    wcsaxes = values.get("WCSAXES")
    if wcsaxes is not None and not (isinstance(wcsaxes, int) and 1 <= wcsaxes <= 9):
        raise WcsProblem(f"WCSAXES = {wcsaxes} (1 to 9)")
    a, b = sky_axes[0] + 1, sky_axes[1] + 1
    cd = [values.get(f"CD{i}_{j}") for i in (a, b) for j in (a, b)]
    if any(v is not None for v in cd):
        m = [float(v or 0.0) for v in cd]
        if m[0] * m[3] - m[1] * m[2] == 0.0:
            raise WcsProblem("the CD matrix is singular")
    for axis in (a, b):
        if values.get(f"CDELT{axis}") == 0:
            raise WcsProblem(f"CDELT{axis} is zero")


_WCSLIB_PREFIX = re.compile(r"ERROR \d+ in \w+\(\) at line \d+ of file \S+:\s*")


def _short(exc: BaseException) -> str:
    text = _WCSLIB_PREFIX.sub("", " ".join(str(exc).split()))
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def check(w: WCS, nx: int, ny: int) -> SkyFootprint:
    """The checks of a usable celestial WCS over an nx x ny image."""
    try:
        return _check(w, nx, ny)
    except WcsProblem:
        raise
    except Exception as exc:
        raise WcsProblem(f"it cannot be used: {_short(exc)}") from None


def _check(w: WCS, nx: int, ny: int) -> SkyFootprint:
    ctype = [str(c) for c in w.wcs.ctype]
    lng, lat = w.wcs.lng, w.wcs.lat
    if not w.has_celestial or lng < 0 or lat < 0 or {lng, lat} != {0, 1}:
        raise WcsProblem(f"no pair of celestial axes (CTYPE = {', '.join(repr(c) for c in ctype) or 'none'})")
    if not all(map(math.isfinite, w.wcs.crval)):
        raise WcsProblem("CRVAL is not finite")
    if not all(map(math.isfinite, w.wcs.crpix)):
        raise WcsProblem("CRPIX is not finite")
    (m00, m01), (m10, m11) = w.pixel_scale_matrix.tolist()
    det = m00 * m11 - m01 * m10
    if det == 0.0 or not math.isfinite(det):
        raise WcsProblem("the CD/PC matrix is singular or not finite")
    scale = math.sqrt(abs(det)) * 3600.0
    if not MIN_SCALE_ARCSEC <= scale <= MAX_SCALE_ARCSEC:
        raise WcsProblem(
            f"pixel scale {scale:.4g} arcsec is outside {MIN_SCALE_ARCSEC}..{MAX_SCALE_ARCSEC:.0f} arcsec"
        )
    edge = np.array(
        [[0.5, 0.5], [nx + 0.5, 0.5], [nx + 0.5, ny + 0.5], [0.5, ny + 0.5], [(nx + 1) / 2, (ny + 1) / 2]]
    )
    world = _pix2world(w, edge)
    swap = lng == 1
    if not np.isfinite(world).all():
        raise WcsProblem("some corners of the image have no sky position")
    try:
        back = _world2pix(w, world)
    except Exception as exc:
        raise WcsProblem(f"the corners do not map back to pixels ({_short(exc)})") from None
    err = float(np.abs(back - edge).max()) if np.isfinite(back).all() else math.inf
    if err > ROUND_TRIP_PIX:
        raise WcsProblem(f"the corners do not round-trip (off by {err:.3g} pixels)")
    frame = _frame_of(w, lng, lat)
    fp = SkyFootprint(
        wcs=w,
        nx=nx,
        ny=ny,
        pixel_scale_arcsec=scale,
        corners=[],
        center=(0.0, 0.0),
        radius_deg=0.0,
        frame=frame,
        swap=swap,
    )
    if swap:
        world = world[:, ::-1]
    sky = [fp._to_icrs((float(lon) % 360.0, float(la))) for lon, la in world]
    if any(not -90.0 <= d <= 90.0 for _, d in sky):
        raise WcsProblem("a corner's latitude is outside -90..90")
    fp.corners = sky[:4]
    fp.center = sky[4]
    fp.radius_deg = max(separation_deg(fp.center, c) for c in fp.corners)
    return fp


def separation_deg(a: Sky, b: Sky) -> float:
    """Great-circle distance in degrees (Vincenty's formula: exact at all distances)."""
    ra1, d1, ra2, d2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    dra = ra2 - ra1
    num = math.hypot(
        math.cos(d2) * math.sin(dra),
        math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(dra),
    )
    den = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(dra)
    return math.degrees(math.atan2(num, den))


def tangent(center: Sky, pos: Sky) -> tuple[float, float] | None:
    """Gnomonic (xi east, eta north) of pos about center, in degrees; None beyond 80 degrees."""
    a0, d0, a, d = map(math.radians, (center[0], center[1], pos[0], pos[1]))
    cosc = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
    if cosc < math.cos(math.radians(80.0)):
        return None
    xi = math.cos(d) * math.sin(a - a0) / cosc
    eta = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cosc
    return math.degrees(xi), math.degrees(eta)


_COMPASS = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]


def compass(pa_deg: float) -> str:
    """The 8-point compass name of a position angle (east of north)."""
    return _COMPASS[int(((pa_deg % 360.0) + 22.5) // 45.0) % 8]


def _segment_nearest(p: tuple[float, float], q: tuple[float, float]) -> tuple[float, float]:
    """The point of segment pq nearest the origin."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    n = dx * dx + dy * dy
    t = 0.0 if n == 0 else max(0.0, min(1.0, -(p[0] * dx + p[1] * dy) / n))
    return p[0] + t * dx, p[1] + t * dy


@dataclasses.dataclass(frozen=True)
class Offset:
    """How far a position lies outside a footprint, and in which direction from it."""

    arcsec: float
    direction: str  # compass direction of the position as seen from the footprint

    @property
    def distance(self) -> str:
        """The distance in the unit a person reads best: arcsec, arcmin, or degrees."""
        if self.arcsec < 120.0:
            return f"{self.arcsec:.1f} arcsec"
        if self.arcsec < 7200.0:
            return f"{self.arcsec / 60.0:.1f} arcmin"
        return f"{self.arcsec / 3600.0:.1f} deg"


def offset_from(corners: Sequence[Sky], pos: Sky) -> Offset:
    """Great-circle distance from the footprint polygon to pos, and pos's direction from its
    nearest edge."""
    plane = [tangent(pos, c) for c in corners]
    if any(p is None for p in plane):
        # Far away: the nearest corner gives distance and direction well enough.
        nearest = min(corners, key=lambda c: separation_deg(c, pos))
        dist = separation_deg(nearest, pos)
        return Offset(dist * 3600.0, compass(_pa(nearest, pos)))
    pts = [p for p in plane if p is not None]
    best = min(
        (_segment_nearest(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))),
        key=lambda q: q[0] ** 2 + q[1] ** 2,
    )
    # The gnomonic projection maps great circles to straight lines, so the nearest point of an
    # edge is the nearest in the plane too; its distance r from the origin is tan(separation).
    dist = math.degrees(math.atan(math.radians(math.hypot(*best)))) * 3600.0
    # The position is at the origin; it lies in the direction -best from the footprint.
    pa = math.degrees(math.atan2(-best[0], -best[1]))
    return Offset(dist, compass(pa))


def _pa(frm: Sky, to: Sky) -> float:
    a1, d1, a2, d2 = map(math.radians, (frm[0], frm[1], to[0], to[1]))
    y = math.sin(a2 - a1) * math.cos(d2)
    x = math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(a2 - a1)
    return math.degrees(math.atan2(y, x))


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def in_convex_hull(polygons: Sequence[Sequence[Sky]], pos: Sky) -> bool:
    """Whether pos lies inside the convex hull of all the polygons' corners (the overall mosaic)."""
    pts: list[tuple[float, float]] = []
    for poly in polygons:
        for c in poly:
            t = tangent(pos, c)
            if t is None:
                return False
            pts.append(t)
    pts = sorted(set(pts))
    if len(pts) < 3:
        return False
    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    origin = (0.0, 0.0)
    return all(_cross(hull[i], hull[(i + 1) % len(hull)], origin) >= 0 for i in range(len(hull)))
