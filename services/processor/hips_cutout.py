"""A cutout of a HiPS survey with FITS tiles, onto any WCS: what a finding chart of a survey
is drawn from.

reproject 0.21 has no `reproject_from_hips` (it raises NotImplementedError) and its
`hips_as_dask_array` + `reproject_interp` materialises the whole HEALPix plane, so the
cutout reads the tiles itself: each output pixel's position is a HEALPix cell at the
tile-pixel depth (order + 9 for 512-pixel tiles), whose tile (`NorderK/DirD/NpixN.fits`)
and place in it follow from the cell's nested bits (the HiPS 1.0 layout our processor
writes too). Nearest cell, at the order whose pixels match the output's scale (at most
the survey's `hips_order`). Tiles come from a local folder or an http(s) URL (with a
timeout and a byte limit); a missing tile (outside the survey's coverage) leaves NaN.
"""

from __future__ import annotations

import io
import math
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from services.processor.hips import ORDER0_PIXEL_ARCSEC, tile_path
from services.shared.errors import Code, ServiceError

MAX_TILE_BYTES = 64 << 20
MAX_TILES = 256


def _compact_bits(v: np.ndarray) -> np.ndarray:
    """The even bits of v packed together (the inverse of spreading x into the even positions)."""
    v = v & np.uint64(0x5555555555555555)
    out = np.zeros_like(v)
    for bit in range(32):
        out |= ((v >> np.uint64(2 * bit)) & np.uint64(1)) << np.uint64(bit)
    return out


def _properties(read: Callable[[str], bytes | None]) -> dict[str, str]:
    raw = read("properties")
    if raw is None:
        raise ServiceError(Code.UNAVAILABLE, "the survey's HiPS has no properties file")
    props = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            props[key.strip()] = value.strip()
    return props


def _reader(location: str, timeout_s: float) -> Callable[[str], bytes | None]:
    """Reads a file of the HiPS (None when it does not exist)."""
    if "://" not in location:
        root = Path(location)

        def local(name: str) -> bytes | None:
            path = root / name
            return path.read_bytes() if path.is_file() else None

        return local
    if not location.startswith(("http://", "https://")):
        raise ServiceError(Code.INVALID_ARGUMENT, "a survey is a local folder or an http(s) URL")
    base = location.rstrip("/") + "/"

    def remote(name: str) -> bytes | None:
        try:
            with urllib.request.urlopen(base + name, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only
                data: bytes = resp.read(MAX_TILE_BYTES + 1)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise ServiceError(Code.UNAVAILABLE, f"the survey answered HTTP {err.code}") from err
        except OSError as err:
            raise ServiceError(Code.UNAVAILABLE, f"the survey cannot be reached: {err}") from err
        if len(data) > MAX_TILE_BYTES:
            raise ServiceError(Code.UNAVAILABLE, "a survey tile is too large")
        return data

    return remote


def cutout(location: str, wcs: WCS, shape: tuple[int, int], timeout_s: float = 20.0) -> np.ndarray:
    """The survey's pixel values (float32, NaN where it has none) on `wcs` x `shape`."""
    from cdshealpix import nested

    read = _reader(location, timeout_s)
    props = _properties(read)
    if "fits" not in props.get("hips_tile_format", "").split():
        raise ServiceError(Code.INVALID_ARGUMENT, "the survey has no FITS tiles (pixel values)")
    width = int(props.get("hips_tile_width", "512"))
    tile_bits = int(math.log2(width))
    if 1 << tile_bits != width:
        raise ServiceError(Code.UNAVAILABLE, f"hips_tile_width {width} is not a power of two")
    max_order = int(props.get("hips_order", "3"))
    ny, nx = shape
    scale = float(np.mean([abs(s.to_value("arcsec")) for s in wcs.proj_plane_pixel_scales()]))
    tile_pixel_order0 = ORDER0_PIXEL_ARCSEC * 512 / width
    order = int(min(max_order, max(0, round(math.log2(tile_pixel_order0 / scale)))))
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.pixel_to_world_values(xx.ravel(), yy.ravel())
    good = np.isfinite(ra) & np.isfinite(dec)
    out = np.full(ny * nx, np.nan, dtype=np.float32)
    depth = order + tile_bits
    cells = np.zeros(good.sum(), dtype=np.uint64)
    if good.any():
        from astropy import units as u

        cells = np.asarray(
            nested.lonlat_to_healpix(ra[good] * u.deg, dec[good] * u.deg, depth), dtype=np.uint64
        )
    inside = cells & np.uint64((1 << (2 * tile_bits)) - 1)
    tiles = cells >> np.uint64(2 * tile_bits)
    px = _compact_bits(inside).astype(np.int64)
    py = _compact_bits(inside >> np.uint64(1)).astype(np.int64)
    values = np.full(len(cells), np.nan, dtype=np.float32)
    unique = np.unique(tiles)
    if len(unique) > MAX_TILES:
        raise ServiceError(Code.INVALID_ARGUMENT, f"the cutout needs {len(unique)} tiles, over {MAX_TILES}")
    for tile in unique:
        raw = read(tile_path(order, int(tile), "fits"))
        if raw is None:
            continue
        with fits.open(io.BytesIO(raw)) as hdul:
            stored = hdul[0].data  # BSCALE and BZERO applied by astropy
            blank = hdul[0].header.get("BLANK")
            data = np.asarray(stored, dtype=np.float32)
            if blank is not None and stored.dtype.kind in "iu":
                data[stored == blank] = np.nan
        sel = tiles == tile
        # HiPS 1.0's layout (as Aladin reads our tiles): the cell's even bits count FITS rows
        # from the top, its odd bits columns.
        values[sel] = data[width - 1 - px[sel], py[sel]]
    out[good] = values
    return out.reshape(ny, nx)
