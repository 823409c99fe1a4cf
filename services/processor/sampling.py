"""Resampling of a sky image onto another pixel grid, fast.

The mapping from output pixels to source pixels is smooth, so the exact
transform (HEALPix or gnomonic cell centres -> sky -> source pixel through
the full WCS, distortions included) is evaluated on a coarse grid of nodes
only, and a separable natural cubic spline interpolates the source pixel
coordinates in between. The interpolation error is measured at the midpoints
between nodes against the exact transform, and the grid is refined where it
exceeds `TOLERANCE_PX`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astropy.wcs import WCS

# Largest accepted interpolation error, in source pixels (the goal is 0.05).
TOLERANCE_PX = 0.01

BILINEAR = "bilinear"
NEAREST = "nearest"


@dataclasses.dataclass
class SkyImage:
    """One 2-D image and its celestial WCS (distortions included)."""

    data: np.ndarray  # (ny, nx), float32, NaN where blank
    wcs: WCS
    header: Any = None  # the FITS header the image came from, when any

    def __post_init__(self) -> None:
        self._frame_fix: str | None = None
        ctype = [str(c).upper() for c in self.wcs.wcs.ctype]
        radesys = (self.wcs.wcs.radesys or "").upper()
        if not (ctype[0].startswith("RA") and ctype[1].startswith("DEC")):
            self._frame_fix = "transform"  # galactic, ecliptic ...
        elif radesys in ("FK4", "FK4-NO-E"):
            self._frame_fix = "transform"
        self._distorted = bool(
            self.wcs.sip is not None
            or self.wcs.cpdis1 is not None
            or self.wcs.cpdis2 is not None
            or self.wcs.det2im1 is not None
            or self.wcs.det2im2 is not None
        )

    @property
    def shape(self) -> tuple[int, int]:
        ny, nx = self.data.shape
        return int(ny), int(nx)

    def _to_native(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS degrees -> the WCS's own celestial frame."""
        if self._frame_fix is None:
            return lon, lat
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import wcs_to_celestial_frame

        frame = wcs_to_celestial_frame(self.wcs)
        c = SkyCoord(lon, lat, unit="deg", frame="icrs").transform_to(frame)
        sph = c.spherical
        return np.asarray(sph.lon.deg), np.asarray(sph.lat.deg)

    def _from_native(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._frame_fix is None:
            return lon, lat
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import wcs_to_celestial_frame

        frame = wcs_to_celestial_frame(self.wcs)
        c = SkyCoord(lon, lat, unit="deg", frame=frame).icrs
        return np.asarray(c.ra.deg), np.asarray(c.dec.deg)

    def world_to_pixel(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS degrees -> 0-based source pixel (x, y); NaN where undefined."""
        lon, lat = self._to_native(np.asarray(lon, float), np.asarray(lat, float))
        shape = lon.shape
        lon, lat = lon.ravel(), lat.ravel()
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if self._distorted:
                px, py = self.wcs.all_world2pix(lon, lat, 0, tolerance=1e-7, maxiter=50, quiet=True)
            else:
                px, py = self.wcs.wcs_world2pix(lon, lat, 0)
        return np.asarray(px).reshape(shape), np.asarray(py).reshape(shape)

    def pixel_to_world(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based source pixel -> ICRS degrees."""
        px, py = np.asarray(px, float), np.asarray(py, float)
        shape = px.shape
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            lon, lat = self.wcs.all_pix2world(px.ravel(), py.ravel(), 0)
        lon, lat = self._from_native(np.asarray(lon), np.asarray(lat))
        return lon.reshape(shape) % 360.0, lat.reshape(shape)

    def pixel_scale_arcsec(self) -> float:
        """Mean pixel scale at the image centre (square root of the pixel area)."""
        return pixel_scale_arcsec(self, self.shape)


def pixel_scale_arcsec(image: SkyImage | WCS, shape: tuple[int, int]) -> float:
    """Mean pixel scale at the centre of an image of `shape` (ny, nx)."""
    sky = image if isinstance(image, SkyImage) else SkyImage(np.zeros((1, 1), np.float32), image)
    ny, nx = shape
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    lon, lat = sky.pixel_to_world(np.array([cx, cx + 1, cx]), np.array([cy, cy, cy + 1]))
    v = _unit_vectors(lon, lat)
    a, b = v[1] - v[0], v[2] - v[0]
    area = np.linalg.norm(np.cross(a, b))
    return float(math.degrees(math.sqrt(area)) * 3600.0)


def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


@functools.lru_cache(maxsize=64)
def spline_weights(nodes: tuple[float, ...], targets: tuple[float, ...]) -> np.ndarray:
    """Matrix W (len(targets) x len(nodes)): the cubic spline through the node
    values, evaluated at the targets, is W @ values.

    Not-a-knot ends (the third derivative is continuous at the second and
    last-but-one nodes): unlike natural ends it does not force the curvature
    to zero at the tile edges, where the mapping is as curved as anywhere.
    """
    t = np.asarray(nodes, float)
    q = np.asarray(targets, float)
    n = len(t)
    if n == 1:
        return np.ones((len(q), 1))
    if n < 4:
        k = np.clip(np.searchsorted(t, q, side="right") - 1, 0, n - 2)
        a = (t[k + 1] - q) / (t[k + 1] - t[k])
        w = np.zeros((len(q), n))
        w[np.arange(len(q)), k] = a
        w[np.arange(len(q)), k + 1] = 1 - a
        return w
    h = np.diff(t)
    # Second derivatives M = D @ f.
    a_mat = np.zeros((n, n))
    b_mat = np.zeros((n, n))
    a_mat[0, :3] = [-1 / h[0], 1 / h[0] + 1 / h[1], -1 / h[1]]
    a_mat[-1, -3:] = [-1 / h[-2], 1 / h[-2] + 1 / h[-1], -1 / h[-1]]
    for i in range(1, n - 1):
        a_mat[i, i - 1] = h[i - 1] / 6
        a_mat[i, i] = (h[i - 1] + h[i]) / 3
        a_mat[i, i + 1] = h[i] / 6
        b_mat[i, i - 1] = 1 / h[i - 1]
        b_mat[i, i] = -1 / h[i - 1] - 1 / h[i]
        b_mat[i, i + 1] = 1 / h[i]
    d = np.linalg.solve(a_mat, b_mat)
    k = np.clip(np.searchsorted(t, q, side="right") - 1, 0, n - 2)
    hk = h[k]
    a = (t[k + 1] - q) / hk
    b = 1 - a
    w = np.zeros((len(q), n))
    rows = np.arange(len(q))
    w[rows, k] += a
    w[rows, k + 1] += b
    w += ((a**3 - a) * hk**2 / 6)[:, None] * d[k]
    w += ((b**3 - b) * hk**2 / 6)[:, None] * d[k + 1]
    return w


def grid_nodes(size: int, step: int) -> tuple[int, ...]:
    """Integer node positions 0, step, 2 step, ..., size - 1."""
    nodes = list(range(0, size - 1, max(1, step))) + [size - 1]
    return tuple(sorted(set(nodes)))


def midpoints(nodes: tuple[int, ...]) -> tuple[int, ...]:
    """Integer positions halfway between nodes (where the spline error peaks)."""
    mids = [(a + b) // 2 for a, b in zip(nodes[:-1], nodes[1:], strict=True) if b - a > 1]
    return tuple(mids)


def sample(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    method: str = BILINEAR,
    ox: int = 0,
    oy: int = 0,
) -> np.ndarray:
    """Values of `image` at 0-based pixel positions (ox + x, oy + y); NaN outside.

    `x` and `y` are float32 positions relative to the offset (which keeps
    their precision well under 0.001 pixel); they are overwritten. Bilinear
    interpolation; where a neighbour is blank the nearest pixel is used
    instead, so blank areas do not grow.
    """
    ny, nx = image.shape
    flat = image.reshape(-1)
    # Most tiles lie wholly inside the image: no masks, no clipping then.
    x_lo, x_hi, y_lo, y_hi = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    all_inside = x_lo >= -ox and x_hi <= nx - 1 - ox and y_lo >= -oy and y_hi <= ny - 1 - oy
    if not all_inside:
        with np.errstate(invalid="ignore"):
            inside = x > -0.5 - ox
            inside &= x < nx - 0.5 - ox
            inside &= y > -0.5 - oy
            inside &= y < ny - 0.5 - oy
        outside = ~inside
        x[outside] = -ox
        y[outside] = -oy
        np.clip(x, -ox, nx - 1 - ox, out=x)
        np.clip(y, -oy, ny - 1 - oy, out=y)
    if method == NEAREST or nx < 2 or ny < 2:
        x += 0.5
        y += 0.5
        xi = np.floor(x).astype(np.intp)
        yi = np.floor(y).astype(np.intp)
        yi += oy
        yi *= nx
        yi += xi
        yi += ox
        out = flat.take(yi).astype(np.float32, copy=False)
    else:
        # Corners and fractions in float32, one integer index array.
        xf = np.floor(x)
        yf = np.floor(y)
        np.minimum(xf, nx - 2 - ox, out=xf)
        np.minimum(yf, ny - 2 - oy, out=yf)
        x -= xf  # the fractions
        y -= yf
        idx = yf.astype(np.intp)
        idx *= nx
        idx += xf.astype(np.intp)
        idx += oy * nx + ox
        v00 = flat.take(idx).astype(np.float32, copy=False)
        idx += 1
        v01 = flat.take(idx).astype(np.float32, copy=False)
        idx += nx
        v11 = flat.take(idx).astype(np.float32, copy=False)
        idx -= 1
        v10 = flat.take(idx).astype(np.float32, copy=False)
        # Nearest of the four, for pixels next to a blank.
        v01 -= v00
        v01 *= x
        v01 += v00
        v11 -= v10
        v11 *= x
        v11 += v10
        v11 -= v01
        v11 *= y
        v11 += v01
        out = v11
        holes = np.isnan(out)
        if holes.any():
            xh = x[holes] >= 0.5
            yh = y[holes] >= 0.5
            base = idx[holes] - nx  # back to (x0, y0)
            base += xh
            base += yh * nx
            out[holes] = flat.take(base)
    if not all_inside:
        out[outside] = np.nan
    return out


def block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each factor x factor block, ignoring blanks (NaN if all blank)."""
    if factor <= 1:
        return np.asarray(data, dtype=np.float32)
    ny, nx = data.shape
    by, bx = ny // factor, nx // factor
    total = np.zeros((by, bx), np.float64)
    count = np.zeros((by, bx), np.int32)
    # Row bands keep memory small for big images.
    band = max(1, (1 << 24) // max(1, nx * factor))
    for y0 in range(0, by, band):
        y1 = min(by, y0 + band)
        chunk = np.asarray(data[y0 * factor : y1 * factor, : bx * factor], dtype=np.float32)
        chunk = chunk.reshape(y1 - y0, factor, bx, factor)
        finite = np.isfinite(chunk)
        total[y0:y1] = np.where(finite, chunk, 0).sum(axis=(1, 3))
        count[y0:y1] = finite.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / count).astype(np.float32)
    return out


def downsample2(tile: np.ndarray) -> np.ndarray:
    """2x2 mean ignoring blanks: a child tile's share of its parent."""
    a, b, c, d = tile[0::2, 0::2], tile[1::2, 0::2], tile[0::2, 1::2], tile[1::2, 1::2]
    nan = np.isnan(tile)
    if not nan.any():
        out = a + b
        out += c
        out += d
        out *= np.float32(0.25)
        return out
    filled = np.where(nan, np.float32(0), tile)
    good = (~nan).astype(np.float32)
    total = filled[0::2, 0::2] + filled[1::2, 0::2]
    total += filled[0::2, 1::2]
    total += filled[1::2, 1::2]
    count = good[0::2, 0::2] + good[1::2, 0::2]
    count += good[0::2, 1::2]
    count += good[1::2, 1::2]
    with np.errstate(invalid="ignore", divide="ignore"):
        total /= count
    return total
