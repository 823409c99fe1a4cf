"""HiPS 1.0 generation from one sky image: FITS and PNG tiles of every order
from 0 to the one matching the image's pixel scale, Allsky, MOC, preview,
properties. FITS tiles hold 16-bit integers with one BSCALE/BZERO for the
whole HiPS (`display.quantisation`), BLANK where no data: half the bytes of
float32, which Aladin Lite reads with hips_pixel_bitpix = 16.

Only the deepest order is resampled from the image; each lower order is
built from its four children. Tile pixel (row r, column c) of tile N at order
k is the nested HEALPix cell `N << 18 | interleave(x=511-r, y=c)` of order
k+9 (FITS rows run bottom to top; PNG rows top to bottom).

Speed comes from evaluating the exact sky -> pixel transform (full WCS,
SIP/TPV/ZPN included) only on a coarse grid of cell centres per tile and
interpolating with a cubic spline whose error is measured per tile
(`sampling.TOLERANCE_PX`), from running tiles on every core, and from
handing the encoded tiles to a sink that writes them concurrently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.processor import display, preview, sampling
from services.processor.display import Cut, Statistics
from services.processor.observation import Observation
from services.processor.sampling import SkyImage

TILE = 512
TILE_BITS = 9
MIN_ORDER = 3  # the deepest order is at least the Allsky's
# Tiles go down to order 0, as Hipsgen's do: Hipsgen's LINT reports an error
# for a hierarchy that stops above order 0 (a tile or two per order here).
PYRAMID_MIN_ORDER = 0
MAX_ORDER = 20  # cells of order 29, HEALPix's deepest
# Angular size of a tile pixel at order 0: the side of a cell of order 9.
ORDER0_PIXEL_ARCSEC = math.degrees(math.sqrt(4 * math.pi / 12)) / TILE * 3600.0  # 412.2"
ALLSKY_ORDER = 3
ALLSKY_COLUMNS = 27
ALLSKY_TILE = 64
# Node spacing of the coarse grid first tried (tile pixels); halved where
# the measured interpolation error is too large.
FIRST_STEP = 64
MOC_EXTRA_DEPTH = 3  # MOC cells: 64x64-pixel blocks of the deepest tiles
PREVIEW = "preview.jpg"


def _spread_bits(n: int) -> np.ndarray:
    """v -> v with its bits moved to the even positions, for v < n."""
    v = np.arange(n, dtype=np.uint64)
    out = np.zeros(n, dtype=np.uint64)
    for bit in range(int(n - 1).bit_length()):
        out |= ((v >> np.uint64(bit)) & np.uint64(1)) << np.uint64(2 * bit)
    return out


_SPREAD = _spread_bits(TILE)


def tile_path(order: int, npix: int, ext: str) -> str:
    """`NorderK/DirD/NpixN.ext`, D = N rounded down to a multiple of 10000."""
    return f"Norder{order}/Dir{(npix // 10000) * 10000}/Npix{npix}.{ext}"


def tile_pixel_arcsec(order: int) -> float:
    return ORDER0_PIXEL_ARCSEC / (1 << order)


def choose_order(pixel_scale_arcsec: float) -> int:
    """The order whose tile pixels are closest (in ratio) to the image's."""
    if not pixel_scale_arcsec > 0:
        raise ValueError("pixel scale must be positive")
    k = round(math.log2(ORDER0_PIXEL_ARCSEC / pixel_scale_arcsec))
    return int(min(MAX_ORDER, max(MIN_ORDER, k)))


def cell_ids(tiles: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Nested cells (order k+9) of tile pixels at (x, y): shape (T, len(xs), len(ys))."""
    t = np.asarray(tiles, dtype=np.uint64)[:, None, None] << np.uint64(2 * TILE_BITS)
    return (
        t | _SPREAD[np.asarray(xs)][None, :, None] | (_SPREAD[np.asarray(ys)][None, None, :] << np.uint64(1))
    )


def cell_centres(cells: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """ICRS degrees of nested cell centres."""
    from cdshealpix import nested

    flat = np.ascontiguousarray(cells, dtype=np.uint64).ravel()
    lon, lat = nested.healpix_to_lonlat(flat, depth)
    return np.asarray(lon.deg).reshape(cells.shape), np.asarray(lat.deg).reshape(cells.shape)


class TileSink(Protocol):
    """Where encoded files go (a folder, the object store)."""

    def put(self, path: str, data: bytes | bytearray, content_type: str) -> None: ...


class DirectorySink:
    """Writes the files under a local folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._made: set[Path] = set()
        self._lock = threading.Lock()
        self.sizes: dict[str, int] = {}

    def put(self, path: str, data: bytes | bytearray, content_type: str) -> None:
        dest = self.root / path
        if dest.parent not in self._made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._made.add(dest.parent)
        with open(dest, "wb") as f:
            f.write(data)
        with self._lock:
            self.sizes[path] = len(data)


@dataclasses.dataclass
class HipsResult:
    order: int
    tile_count: int  # files of tiles written, all orders, both formats
    tiles_per_order: dict[int, int]
    stats: Statistics
    moc_sky_fraction: float
    initial_ra: float
    initial_dec: float
    initial_fov: float
    max_interp_error_px: float
    files: list[str]
    properties: dict[str, str]
    seconds: float
    phases: dict[str, float]  # seconds per phase (prepare, deepest, parents, allsky+moc)


@dataclasses.dataclass
class _Grid:
    """Exact source pixel positions of one tile's coarse grid of nodes."""

    xs: tuple[int, ...]
    ys: tuple[int, ...]
    px: np.ndarray  # (len(xs), len(ys))
    py: np.ndarray
    error: float


class TileMapper:
    """Source pixel coordinates of every pixel of the deepest-order tiles."""

    def __init__(self, image: SkyImage, order: int, pixel_scale_arcsec: float | None = None) -> None:
        self.image = image
        self.order = order
        self.depth = order + TILE_BITS
        scale = pixel_scale_arcsec or image.pixel_scale_arcsec()
        self.ratio = tile_pixel_arcsec(order) / scale  # source pixels per tile pixel

    def _exact(
        self, tiles: np.ndarray, xs: Iterable[int], ys: Iterable[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = cell_centres(cell_ids(tiles, np.array(list(xs)), np.array(list(ys))), self.depth)
        return self.image.world_to_pixel(lon, lat)

    def grids(self, tiles: np.ndarray) -> dict[int, _Grid]:
        """Coarse grids for the tiles, refined until the spline is within tolerance."""
        out: dict[int, _Grid] = {}
        pending = np.asarray(tiles, dtype=np.uint64)
        step = FIRST_STEP
        while pending.size:
            nodes = sampling.grid_nodes(TILE, step)
            mids = sampling.midpoints(nodes)
            px, py = self._exact(pending, nodes, nodes)
            if mids:
                cx, cy = self._exact(pending, mids, mids)
                w = sampling.spline_weights(nodes, mids)
                ix = np.einsum("mi,tij,nj->tmn", w, px, w)
                iy = np.einsum("mi,tij,nj->tmn", w, py, w)
                with np.errstate(invalid="ignore"):
                    err = np.fmax(np.abs(ix - cx), np.abs(iy - cy))
                    # Only where the tile sees the image does the error matter;
                    # a check point within a node interval of it may bound it.
                    ny, nx = self.image.shape
                    m = 1.5 * step * self.ratio
                    near = (cx > -m) & (cx < nx + m) & (cy > -m) & (cy < ny + m)
                    err = np.where(near, err, 0.0)
                    worst = np.nan_to_num(err, nan=np.inf).max(axis=(1, 2))
            else:
                worst = np.zeros(len(pending))
            retry = []
            for i, tile in enumerate(pending.tolist()):
                if worst[i] <= sampling.TOLERANCE_PX or step == 1:
                    out[tile] = _Grid(nodes, nodes, px[i], py[i], float(worst[i]))
                else:
                    retry.append(tile)
            pending = np.array(retry, dtype=np.uint64)
            step //= 2
        return out

    @staticmethod
    def overlaps(grid: _Grid, shape: tuple[int, int]) -> bool:
        """Whether the tile's footprint can touch the image (conservative)."""
        ny, nx = shape
        with np.errstate(invalid="ignore"):
            if not (np.isfinite(grid.px).any() and np.isfinite(grid.py).any()):
                return False
            # Grid nodes are at most FIRST_STEP tile pixels apart: pad the box.
            span_x = np.nanmax(np.abs(np.diff(grid.px, axis=0)), initial=0) + np.nanmax(
                np.abs(np.diff(grid.px, axis=1)), initial=0
            )
            span_y = np.nanmax(np.abs(np.diff(grid.py, axis=0)), initial=0) + np.nanmax(
                np.abs(np.diff(grid.py, axis=1)), initial=0
            )
            return bool(
                np.nanmin(grid.px) - span_x < nx
                and np.nanmax(grid.px) + span_x > -1
                and np.nanmin(grid.py) - span_y < ny
                and np.nanmax(grid.py) + span_y > -1
            )

    @staticmethod
    def pixels(grid: _Grid) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Source (x, y) of every tile pixel, in numpy tile layout [r, c], as
        float32 offsets from an integer origin (ox, oy)."""
        wx = _weights32(grid.xs, reverse=True)  # row r is x = 511 - r
        wy = _weights32(grid.ys)
        with np.errstate(invalid="ignore"):
            ox = int(max(0.0, math.floor(np.nan_to_num(np.nanmin(grid.px), nan=0.0)) - 1))
            oy = int(max(0.0, math.floor(np.nan_to_num(np.nanmin(grid.py), nan=0.0)) - 1))
        gx = (grid.px - ox).astype(np.float32)
        gy = (grid.py - oy).astype(np.float32)
        return wx @ (gx @ wy.T), wx @ (gy @ wy.T), ox, oy


@functools.lru_cache(maxsize=16)
def _weights32(nodes: tuple[int, ...], reverse: bool = False) -> np.ndarray:
    """Spline weights from the nodes to all 512 positions (C-contiguous, for BLAS)."""
    w = sampling.spline_weights(nodes, tuple(range(TILE))).astype(np.float32)
    return np.ascontiguousarray(w[::-1] if reverse else w)


def candidate_tiles(image: SkyImage, order: int) -> np.ndarray:
    """Tiles of `order` that may hold image pixels: the cells under a grid of
    image points and their neighbours."""
    import astropy.units as u
    from cdshealpix import nested

    ny, nx = image.shape
    scale = image.pixel_scale_arcsec()
    step = max(4.0, TILE * tile_pixel_arcsec(order) / scale / 3)
    step = max(step, max(nx, ny) / 1000)
    xs = np.unique(np.r_[np.arange(-0.5, nx - 0.5, step), nx - 0.5])
    ys = np.unique(np.r_[np.arange(-0.5, ny - 0.5, step), ny - 0.5])
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = image.pixel_to_world(gx.ravel(), gy.ravel())
    ok = np.isfinite(lon) & np.isfinite(lat)
    cells = np.unique(nested.lonlat_to_healpix(lon[ok] * u.deg, lat[ok] * u.deg, order))
    around = nested.neighbours(cells.astype(np.uint64), order).ravel()
    return np.unique(np.r_[cells.astype(np.int64), around[around >= 0].astype(np.int64)]).astype(np.uint64)


def _tile_cards(order: int, npix: int) -> dict[str, object]:
    return {"ORDER": order, "NPIX": npix}


class _Writer:
    """Encodes a tile in both formats and hands it to the sink."""

    def __init__(self, sink: TileSink, cut: Cut, quantised: display.Quantisation) -> None:
        self.sink = sink
        self.cut = cut
        self.quantised = quantised
        self.lock = threading.Lock()
        self.count: dict[int, int] = defaultdict(int)
        self.files: list[str] = []
        self.bytes = 0  # of the tiles written

    def write(self, order: int, npix: int, data: np.ndarray) -> None:
        fits_path = tile_path(order, npix, "fits")
        png_path = tile_path(order, npix, "png")
        tile = display.fits_bytes(data, _tile_cards(order, npix), self.quantised)
        self.sink.put(fits_path, tile, "application/fits")
        png = display.png_bytes(display.to_grey(data[::-1], self.cut))
        self.sink.put(png_path, png, "image/png")
        with self.lock:
            self.bytes += len(tile) + len(png)
            self.count[order] += 2
            self.files += [fits_path, png_path]


def _moc_cells(npix: int, tile: np.ndarray) -> np.ndarray:
    """Cells of order k+3 (64x64-pixel blocks) of a tile that hold data."""
    b = TILE >> MOC_EXTRA_DEPTH
    n = 1 << MOC_EXTRA_DEPTH
    has = (~np.isnan(tile)).reshape(n, b, n, b).any(axis=(1, 3))
    br, bc = np.nonzero(has)
    spread = _spread_bits(n)
    xb = (n - 1) - br
    return (np.uint64(npix) << np.uint64(2 * MOC_EXTRA_DEPTH)) | spread[xb] | (spread[bc] << np.uint64(1))


def _thumb(tile: np.ndarray) -> np.ndarray:
    """A tile shrunk for the Allsky, in PNG orientation (top row first)."""
    return sampling.block_mean(tile[::-1], TILE // ALLSKY_TILE)


def allsky(thumbs: dict[int, np.ndarray]) -> np.ndarray:
    """The order-3 Allsky mosaic in PNG orientation; NaN where no tile."""
    n_tiles = 12 * 4**ALLSKY_ORDER
    rows = -(-n_tiles // ALLSKY_COLUMNS)
    sky = np.full((rows * ALLSKY_TILE, ALLSKY_COLUMNS * ALLSKY_TILE), np.nan, np.float32)
    for npix, thumb in thumbs.items():
        r, c = divmod(npix, ALLSKY_COLUMNS)
        sky[r * ALLSKY_TILE : (r + 1) * ALLSKY_TILE, c * ALLSKY_TILE : (c + 1) * ALLSKY_TILE] = thumb
    return sky


def properties_text(props: dict[str, str]) -> str:
    width = max(len(k) for k in props)
    return "".join(f"{k.ljust(width)} = {v}\n" for k, v in props.items())


def build_hips(
    image: SkyImage,
    sink: TileSink,
    *,
    creator_did: str,
    observation: Observation | Callable[[], Observation] | None = None,
    order: int | None = None,
    resampling: str = sampling.BILINEAR,
    workers: int = 2,
    stats: Statistics | None = None,
    pixel_scale_arcsec: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> HipsResult:
    """Writes a complete HiPS of `image` to `sink`; `observation` gives the
    properties' band, time and provenance."""
    start = time.perf_counter()
    phases: dict[str, float] = {}
    clock = [start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        phases[name] = now - clock[0]
        clock[0] = now

    scale = pixel_scale_arcsec or image.pixel_scale_arcsec()
    k = order if order is not None else choose_order(scale)
    k = int(min(MAX_ORDER, max(MIN_ORDER, k)))
    stats = stats or display.statistics(image.data)
    quantised = display.quantisation(stats)
    writer = _Writer(sink, stats.cut, quantised)
    mapper = TileMapper(image, k, scale)
    tiles = candidate_tiles(image, k)
    grids = mapper.grids(tiles)
    shape = image.shape
    work = [t for t in tiles.tolist() if mapper.overlaps(grids[t], shape)]
    max_err = max((grids[t].error for t in work), default=0.0)
    lap("prepare")
    moc_cells: list[np.ndarray] = []
    thumbs: dict[int, np.ndarray] = {}
    moc_lock = threading.Lock()

    def deepest(npix: int) -> tuple[int, np.ndarray | None]:
        px, py, ox, oy = mapper.pixels(grids[npix])
        tile = sampling.sample(image.data, px, py, resampling, ox, oy)
        if np.isnan(tile).all():
            return npix, None
        writer.write(k, npix, tile)
        cells = _moc_cells(npix, tile)
        with moc_lock:
            moc_cells.append(cells)
            if k == ALLSKY_ORDER:
                thumbs[npix] = _thumb(tile)
        return npix, sampling.downsample2(tile)

    def parent(order: int, npix: int, children: dict[int, np.ndarray]) -> tuple[int, np.ndarray]:
        tile = np.full((TILE, TILE), np.nan, np.float32)
        half = TILE // 2
        for child, quarter in children.items():
            sub = child & 3
            xbit, ybit = sub & 1, sub >> 1
            r0 = (1 - xbit) * half
            c0 = ybit * half
            tile[r0 : r0 + half, c0 : c0 + half] = quarter
        writer.write(order, npix, tile)
        if order == ALLSKY_ORDER:
            with moc_lock:
                thumbs[npix] = _thumb(tile)
        return npix, sampling.downsample2(tile)

    # One worker: everything in this thread (no pool, and profilers see it all).
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        pmap: Any = pool.map if pool is not None else map
        level: dict[int, np.ndarray] = {}
        for npix, half_tile in pmap(deepest, work):
            if half_tile is not None:
                level[npix] = half_tile
        lap("deepest")
        if progress:
            progress(f"order {k}: {len(level)} tiles")
        for o in range(k - 1, PYRAMID_MIN_ORDER - 1, -1):
            groups: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
            for child, quarter in level.items():
                groups[child >> 2][child] = quarter
            level = dict(pmap(lambda item, o=o: parent(o, item[0], item[1]), groups.items()))

        lap("parents")
        sky = allsky(thumbs)

        def allsky_fits() -> None:
            data = display.fits_bytes(sky[::-1], quantised=quantised)
            sink.put(f"Norder{ALLSKY_ORDER}/Allsky.fits", data, "application/fits")

        def allsky_png() -> None:
            grey = display.to_grey(sky, stats.cut)
            sink.put(f"Norder{ALLSKY_ORDER}/Allsky.png", display.png_bytes(grey), "image/png")

        def preview_jpg() -> None:
            jpeg = preview.hips_preview_jpeg(image, stats.cut, pixel_scale_arcsec=scale)
            sink.put(PREVIEW, jpeg, "image/jpeg")

        # The Allsky files, the preview and the MOC are independent: make them side by side.
        extras = [allsky_fits, allsky_png, preview_jpg]
        pending = [pool.submit(job) for job in extras] if pool is not None else []
        if pool is None:
            for job in extras:
                job()
        moc_bytes, fraction = _moc(np.concatenate(moc_cells) if moc_cells else np.zeros(0, np.uint64), k)
        sink.put("Moc.fits", moc_bytes, "application/fits")
        for future in pending:
            future.result()
    lap("allsky+moc")

    ny, nx = shape
    ra0, dec0 = image.pixel_to_world(np.array([(nx - 1) / 2]), np.array([(ny - 1) / 2]))
    fov = max(nx, ny) * scale / 3600.0 * 1.2
    # A callable is asked only now: the command line hashes the file meanwhile.
    observation = observation() if callable(observation) else observation or Observation()
    bitpix = image.header.get("BITPIX") if image.header is not None else None
    props = {
        "creator_did": creator_did,
        "obs_title": observation.title(),
        "obs_description": observation.title(),
        "dataproduct_type": "image",
        "hips_builder": "bgimages processor",
        "hips_version": "1.4",
        "hips_release_date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "hips_creation_date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "hips_status": "private master unclonable",
        "hips_tile_format": "fits png",
        "hips_tile_width": str(TILE),
        "hips_order": str(k),
        "hips_order_min": str(PYRAMID_MIN_ORDER),
        "hips_frame": "equatorial",
        "hips_pixel_bitpix": "16",
        "data_pixel_bitpix": str(bitpix if bitpix in (8, 16, 32, 64, -32, -64) else -32),
        "hips_pixel_cut": f"{stats.cut.low:.6g} {stats.cut.high:.6g}",
        "hips_data_range": f"{stats.data_min:.6g} {stats.data_max:.6g}",
        "hips_sampling": "nearest" if resampling == sampling.NEAREST else "bilinear",
        "hips_pixel_scale": f"{tile_pixel_arcsec(k) / 3600.0:.6g}",
        "s_pixel_scale": f"{scale / 3600.0:.6g}",
        "hips_initial_ra": f"{float(ra0[0]):.8f}",
        "hips_initial_dec": f"{float(dec0[0]):.8f}",
        "hips_initial_fov": f"{fov:.6g}",
        "moc_sky_fraction": f"{fraction:.6g}",
        "hips_estsize": str(-(-writer.bytes // 1024)),  # KB, the tiles written
        **observation.properties(),
    }
    sink.put("properties", properties_text(props).encode(), "text/plain")
    files = writer.files + [
        f"Norder{ALLSKY_ORDER}/Allsky.fits",
        f"Norder{ALLSKY_ORDER}/Allsky.png",
        PREVIEW,
        "Moc.fits",
        "properties",
    ]
    return HipsResult(
        order=k,
        tile_count=sum(writer.count.values()),
        tiles_per_order=dict(writer.count),
        stats=stats,
        moc_sky_fraction=fraction,
        initial_ra=float(ra0[0]),
        initial_dec=float(dec0[0]),
        initial_fov=fov,
        max_interp_error_px=max_err,
        files=files,
        properties=props,
        seconds=time.perf_counter() - start,
        phases=phases,
    )


MOC_DEPTH_MAX = 29  # HEALPix's deepest order: MOC 2.0 ranges are cells of this order
MOC_TOOL = "bgimages processor"


def moc_ranges(cells: np.ndarray, depth: int) -> np.ndarray:
    """The MOC 2.0 ranges (half-open, cells of order 29, sorted, disjoint and
    not touching) of a set of cells of order `depth`: the canonical form of
    the set, the one mocpy (the CDS MOC Rust library) writes."""
    shift = np.uint64(2 * (MOC_DEPTH_MAX - depth))
    cells = np.unique(cells.astype(np.uint64))
    if cells.size == 0:
        return np.zeros((0, 2), np.uint64)
    # Runs of consecutive cells become one range each.
    breaks = np.flatnonzero(np.diff(cells) != 1) + 1
    first = cells[np.concatenate(([0], breaks))]
    last = cells[np.concatenate((breaks - 1, [cells.size - 1]))]
    return np.stack([first << shift, (last + np.uint64(1)) << shift], axis=1)


def _card(key: str, value: str | int | bool, free: bool = False) -> bytes:
    """One FITS card: fixed format, or free format (strings unpadded, numbers
    left-aligned) as the MOC library writes its own keywords."""
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = str(value) if free else f"{value:>20}"
    else:
        quoted = value.replace("'", "''")
        text = f"'{quoted if free else quoted.ljust(8)}'"
    return f"{key:<8}= {text}".ljust(80).encode("ascii")


def _fits_block(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (-len(raw) % 2880)


def moc_fits(cells: np.ndarray, depth: int) -> tuple[bytes, float]:
    """Moc.fits (IVOA MOC 2.0, RANGE ordering: the layout mocpy writes, card
    for card) of a set of cells of order `depth`, and its sky fraction.

    Written here rather than by mocpy: importing mocpy (networkx, astropy
    coordinates and tables, its plotting) takes 0.8 s of CPU, taken from the
    tile building even in a thread of its own; tests check the bytes against
    mocpy's own."""
    ranges = moc_ranges(cells, depth)
    end = b"END".ljust(80)
    primary = _card("SIMPLE", True) + _card("BITPIX", 8) + _card("NAXIS", 0) + _card("EXTEND", True) + end
    rows = int(ranges.size)
    table = b"".join(
        [
            _card("XTENSION", "BINTABLE"),
            _card("BITPIX", 8),
            _card("NAXIS", 2),
            _card("NAXIS1", 8),
            _card("NAXIS2", rows),
            _card("PCOUNT", 0),
            _card("GCOUNT", 1),
            _card("TFIELDS", 1),
            _card("MOCVERS", "2.0", free=True),
            _card("MOCDIM", "SPACE", free=True),
            _card("ORDERING", "RANGE", free=True),
            _card("COORDSYS", "C", free=True),
            _card("MOCTOOL", MOC_TOOL, free=True),
            _card("MOCORD_S", depth, free=True),
            _card("TFORM1", "1K", free=True),
            _card("TTYPE1", "RANGE", free=True),
            end,
        ]
    )
    data = ranges.astype(">i8").tobytes()
    out = _fits_block(primary, b" ") + _fits_block(table, b" ") + _fits_block(data, b"\0")
    covered = int(np.sum(ranges[:, 1] - ranges[:, 0], dtype=np.uint64)) if rows else 0
    return out, covered / float(12 * 4**MOC_DEPTH_MAX)


def _moc(cells: np.ndarray, order: int) -> tuple[bytes, float]:
    """Moc.fits bytes of the data-holding cells, and its sky fraction."""
    return moc_fits(cells, min(MOC_DEPTH_MAX, order + MOC_EXTRA_DEPTH))
