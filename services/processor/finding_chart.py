"""One finding chart, by ESO's finding-chart rules, as a JPEG.

What a chart shows (ESO Phase 2, "Finding charts"): the run's programme ID, the
PI, the OB and the target names in the title; the target marked; the
instrument's whole field of view at the OB's position angle, with the slit
where it has one (`services.shared.instruments`); north and east arrows; a
scale bar in arcsec or arcmin; the image's filter or wavelength; a negative
grey scale; the BOA star marked with its offset to the target; a guide star
when the OB names one; and, when the target moves by more than 0.2" between
the image and the observation, an inset of the Gaia image around it.

Drawn with matplotlib (Agg) and astropy's WCSAxes on the image's own WCS (any
orientation: the arrows come from the WCS). The display follows aplpy's
`show_grayscale`: `pmin`/`pmax` percentiles, `stretch` linear, sqrt, log,
power (`exponent`) or arcsinh, as astropy.visualization's intervals and
stretches. Names from users and p2 are text (`parse_math=False`): a `$`
neither breaks nor changes the render; fonts fall back (DejaVu Sans, then
Liberation Sans) for a glyph one lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import warnings
from typing import Any

import numpy as np
from astropy.wcs import WCS

from services.shared import instruments

MAX_JPEG_BYTES = 1 << 20
MAX_PIXELS = 800  # the chart grid has at most this many pixels a side (the axes are 680 wide)
FONTS = ["DejaVu Sans", "Liberation Sans"]
FIELD_COLOUR = "#1f5fd6"
SLIT_COLOUR = "#d62728"
TARGET_COLOUR = "#d62728"
BOA_COLOUR = "#008b8b"
GUIDE_COLOUR = "#9a6700"
# The arrows and the scale bar in colours of their own: a reader (and the tests) tells
# them from the stars of the negative at once.
NORTH_COLOUR = "#007a33"
EAST_COLOUR = "#e07000"
SCALE_COLOUR = "#b000b0"
STRETCHES = ("linear", "sqrt", "log", "power", "arcsinh")


@dataclasses.dataclass(frozen=True)
class Display:
    """aplpy's show_grayscale parameters (its defaults)."""

    stretch: str = "linear"
    exponent: float = 2.0
    pmin: float = 0.25
    pmax: float = 99.75

    def __post_init__(self) -> None:
        if self.stretch not in STRETCHES:
            raise ValueError(f"stretch must be one of {', '.join(STRETCHES)}")
        if not 0.0 <= self.pmin < self.pmax <= 100.0:
            raise ValueError("0 <= pmin < pmax <= 100")
        if not (math.isfinite(self.exponent) and self.exponent > 0):
            raise ValueError("exponent must be positive")


@dataclasses.dataclass(frozen=True)
class ChartContext:
    """What the chart says about the OB."""

    prog_id: str
    pi_name: str
    ob_name: str
    target_name: str
    target: tuple[float, float]
    instrument: str = ""
    mode: str | None = None
    position_angle_deg: float = 0.0
    band: str = ""  # the image's filter or wavelength
    image_name: str = ""  # what the image is: a survey's name, a file name, "Gaia DR3 (epoch ...)"
    boa_star: tuple[float, float] | None = None
    guide_star: tuple[float, float] | None = None


def field_radius_arcsec(ctx: ChartContext) -> float:
    """What the chart covers around the target: the instrument's whole reach (its field,
    detectors, slits) with a margin, the BOA and guide stars, at least 90"."""
    radius = 300.0
    if ctx.instrument:
        with contextlib.suppress(instruments.UnknownInstrument):
            radius = instruments.bounding_radius_arcsec(instruments.lookup(ctx.instrument, ctx.mode)) * 1.1
    for star in (ctx.boa_star, ctx.guide_star):
        if star is not None:
            radius = max(radius, math.hypot(*_offset_arcsec(ctx.target, star)) + 30.0)
    return max(radius, 90.0)


def chart_grid(ctx: ChartContext, pixel_scale_arcsec: float) -> tuple[WCS, tuple[int, int]]:
    """The chart's grid: TAN, north up and east left, centred on the target, covering
    field_radius_arcsec at the image's own scale (coarser when that would pass MAX_PIXELS)."""
    half = field_radius_arcsec(ctx)
    scale = max(pixel_scale_arcsec, 2.0 * half / MAX_PIXELS)
    side = int(math.ceil(2.0 * half / scale)) | 1
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = list(ctx.target)
    w.wcs.crpix = [(side + 1) / 2.0, (side + 1) / 2.0]
    w.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    w.wcs.radesys = "ICRS"
    return w, (side, side)


@dataclasses.dataclass(frozen=True)
class Inset:
    """The Gaia image around the target at the observation date, and how far it moved."""

    data: np.ndarray
    wcs: WCS
    moved_arcsec: float
    label: str


def cut(data: np.ndarray, display: Display) -> np.ndarray:
    """The image scaled to [0, 1] as aplpy's show_grayscale(pmin, pmax, stretch, exponent)."""
    from astropy.visualization import (
        AsinhStretch,
        AsymmetricPercentileInterval,
        LinearStretch,
        LogStretch,
        PowerStretch,
        SqrtStretch,
    )

    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros_like(data, dtype=float)
    vmin, vmax = AsymmetricPercentileInterval(display.pmin, display.pmax).get_limits(finite)
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.clip((np.nan_to_num(data, nan=vmin) - vmin) / span, 0.0, 1.0)
    stretch = {
        "linear": LinearStretch(),
        "sqrt": SqrtStretch(),
        "log": LogStretch(a=1000.0),
        "power": PowerStretch(display.exponent),
        "arcsinh": AsinhStretch(0.1),
    }[display.stretch]
    return np.asarray(stretch(scaled, clip=True))


def _offset_arcsec(start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """(east, north) arcsec from start to end on the tangent plane at start."""
    a0, d0 = math.radians(start[0]), math.radians(start[1])
    a, d = math.radians(end[0]), math.radians(end[1])
    cos_c = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
    east = math.cos(d) * math.sin(a - a0) / cos_c
    north = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cos_c
    return math.degrees(east) * 3600.0, math.degrees(north) * 3600.0


def offset_text(target: tuple[float, float], star: tuple[float, float]) -> str:
    """The offset from the star to the target, as an acquisition reads it (12.3" E, 4.5" N)."""
    east, north = _offset_arcsec(star, target)
    return f'{abs(east):.1f}" {"E" if east >= 0 else "W"}, {abs(north):.1f}" {"N" if north >= 0 else "S"}'


def nice_length_arcsec(width_arcsec: float) -> float:
    """A round scale-bar length near a quarter of the field's width."""
    goal = width_arcsec / 4.0
    steps = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600]
    return float(min(steps, key=lambda s: abs(math.log(s / goal))))


def _length_label(arcsec: float) -> str:
    return f"{arcsec / 60:g}'" if arcsec >= 60 else f'{arcsec:g}"'


def _block(data: np.ndarray, wcs: WCS) -> tuple[np.ndarray, WCS]:
    """At most MAX_PIXELS a side: a mean of f x f blocks, and the WCS of the blocks."""
    factor = max(1, math.ceil(max(data.shape) / MAX_PIXELS))
    if factor == 1:
        return data, wcs
    ny, nx = (data.shape[0] // factor) * factor, (data.shape[1] // factor) * factor
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # blocks outside the image: NaN
        blocks = np.nanmean(data[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor), axis=(1, 3))
    return blocks, wcs[::factor, ::factor]


def _sky_to_pixel(wcs: WCS, ra: float, dec: float) -> tuple[float, float]:
    x, y = wcs.world_to_pixel_values(ra, dec)
    return float(x), float(y)


def _arrows(ax: Any, wcs: WCS, shape: tuple[int, int], length_px: float) -> None:
    """N and E arrows from a corner, their directions from the WCS."""
    ny, nx = shape
    x0, y0 = nx * 0.88, ny * 0.12
    ra0, dec0 = (float(v) for v in wcs.pixel_to_world_values(x0, y0))
    step = length_px * float(np.mean([abs(s.to_value("deg")) for s in wcs.proj_plane_pixel_scales()]))
    for label, colour, (ra, dec) in (
        ("N", NORTH_COLOUR, (ra0, dec0 + step)),
        ("E", EAST_COLOUR, (ra0 + step / max(math.cos(math.radians(dec0)), 1e-6), dec0)),
    ):
        x, y = _sky_to_pixel(wcs, ra, dec)
        dx, dy = x - x0, y - y0
        norm = math.hypot(dx, dy) or 1.0
        tip = (x0 + dx / norm * length_px, y0 + dy / norm * length_px)
        ax.annotate(
            "",
            xy=tip,
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2.5, "mutation_scale": 18},
        )
        ax.text(
            x0 + dx / norm * length_px * 1.25,
            y0 + dy / norm * length_px * 1.25,
            label,
            ha="center",
            va="center",
            fontsize=14,
            fontweight="bold",
            color=colour,
            parse_math=False,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1.0},
        )


def _scale_bar(ax: Any, wcs: WCS, shape: tuple[int, int]) -> float:
    """A labelled bar at the bottom left; its length in arcsec."""
    ny, nx = shape
    scale = float(np.mean([abs(s.to_value("arcsec")) for s in wcs.proj_plane_pixel_scales()]))
    length = nice_length_arcsec(nx * scale)
    px = length / scale
    x0, y0 = nx * 0.06, ny * 0.06
    ax.plot([x0, x0 + px], [y0, y0], color=SCALE_COLOUR, lw=4, solid_capstyle="butt")
    ax.text(
        x0 + px / 2,
        y0 + ny * 0.02,
        _length_label(length),
        ha="center",
        va="bottom",
        fontsize=13,
        fontweight="bold",
        color=SCALE_COLOUR,
        parse_math=False,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1.0},
    )
    return length


def _outline(ax: Any, wcs: WCS, polygon: instruments.SkyPolygon, colour: str, lw: float) -> None:
    xs, ys = [], []
    for ra, dec in (*polygon.vertices, polygon.vertices[0]):
        x, y = _sky_to_pixel(wcs, ra, dec)
        xs.append(x)
        ys.append(y)
    ax.plot(xs, ys, color=colour, lw=lw)


def _mark(
    ax: Any, wcs: WCS, where: tuple[float, float], colour: str, marker: str, label: str, size: float
) -> None:
    x, y = _sky_to_pixel(wcs, *where)
    ax.plot([x], [y], marker=marker, markersize=size, markerfacecolor="none", markeredgecolor=colour, mew=2.2)
    ax.text(
        x + size * 0.9,
        y + size * 0.9,
        label,
        color=colour,
        fontsize=11,
        fontweight="bold",
        parse_math=False,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 1.0},
    )


def render(
    data: np.ndarray,
    wcs: WCS,
    ctx: ChartContext,
    display: Display | None = None,
    inset: Inset | None = None,
) -> bytes:
    """The chart as JPEG bytes (at most MAX_JPEG_BYTES)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    display = display or Display()
    data, wcs = _block(np.asarray(data, dtype=np.float32), wcs.celestial)
    shape = data.shape
    with matplotlib.rc_context({"font.family": FONTS, "text.usetex": False}), warnings.catch_warnings():
        # A character no font has is drawn as a box: told here, never an error.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        fig = plt.figure(figsize=(8.0, 8.8), dpi=100)
        try:
            ax: Any = fig.add_axes((0.1, 0.07, 0.85, 0.78), projection=wcs)
            ax.imshow(cut(data, display), cmap="gray_r", origin="lower", vmin=0.0, vmax=1.0)
            ax.set_xlim(-0.5, shape[1] - 0.5)
            ax.set_ylim(-0.5, shape[0] - 0.5)
            ax.coords[0].set_axislabel("RA (ICRS)")
            ax.coords[1].set_axislabel("Dec (ICRS)")
            ax.coords.grid(False)
            _draw_instrument(ax, wcs, ctx)
            _mark(ax, wcs, ctx.target, TARGET_COLOUR, "o", "target", 16)
            if ctx.boa_star is not None:
                text = f"BOA star (target {offset_text(ctx.target, ctx.boa_star)})"
                _mark(ax, wcs, ctx.boa_star, BOA_COLOUR, "s", text, 14)
            if ctx.guide_star is not None:
                _mark(ax, wcs, ctx.guide_star, GUIDE_COLOUR, "D", "guide star", 14)
            _arrows(ax, wcs, shape, min(shape) * 0.09)
            _scale_bar(ax, wcs, shape)
            title = f"{ctx.prog_id}   PI: {ctx.pi_name}\nOB: {ctx.ob_name}   Target: {ctx.target_name}"
            fig.text(
                0.5, 0.975, title, ha="center", va="top", fontsize=13, fontweight="bold", parse_math=False
            )
            pa = f"PA {ctx.position_angle_deg:g} deg" if ctx.instrument else ""
            about = "   ".join(
                p for p in (ctx.instrument + (f" {ctx.mode}" if ctx.mode else ""), pa, ctx.image_name) if p
            )
            fig.text(0.5, 0.905, about, ha="center", va="top", fontsize=11, parse_math=False)
            ax.text(
                0.98 * shape[1],
                0.97 * shape[0],
                f"{ctx.band}" if ctx.band else "",
                ha="right",
                va="top",
                fontsize=14,
                fontweight="bold",
                parse_math=False,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 2.0},
            )
            if inset is not None and inset.moved_arcsec > 0.2:
                _draw_inset(fig, ctx, inset)
            return _jpeg(fig)
        finally:
            plt.close(fig)


def _draw_instrument(ax: Any, wcs: WCS, ctx: ChartContext) -> None:
    if not ctx.instrument:
        return
    try:
        mode = instruments.lookup(ctx.instrument, ctx.mode)
    except instruments.UnknownInstrument:
        return
    for polygon in instruments.outlines(mode, *ctx.target, ctx.position_angle_deg):
        slit = polygon.role == "slit"
        _outline(ax, wcs, polygon, SLIT_COLOUR if slit else FIELD_COLOUR, 1.6 if slit else 2.0)


def _draw_inset(fig: Any, ctx: ChartContext, inset: Inset) -> None:
    half = max(10.0, inset.moved_arcsec * 3)
    x, y = _sky_to_pixel(inset.wcs, *ctx.target)
    scale = float(np.mean([abs(s.to_value("arcsec")) for s in inset.wcs.proj_plane_pixel_scales()]))
    r = half / scale
    sub: Any = fig.add_axes((0.68, 0.09, 0.25, 0.25), projection=inset.wcs)
    sub.imshow(cut(inset.data, Display(stretch="sqrt", pmin=1.0, pmax=99.9)), cmap="gray_r", origin="lower")
    sub.set_xlim(x - r, x + r)
    sub.set_ylim(y - r, y + r)
    sub.coords[0].set_ticklabel_visible(False)
    sub.coords[1].set_ticklabel_visible(False)
    sub.plot(
        [x], [y], marker="o", markersize=12, markerfacecolor="none", markeredgecolor=TARGET_COLOUR, mew=2
    )
    sub.set_title(inset.label, fontsize=9, parse_math=False)


def _jpeg(fig: Any) -> bytes:
    for quality in (90, 80, 70, 55, 40):
        out = io.BytesIO()
        fig.savefig(out, format="jpeg", dpi=100, pil_kwargs={"quality": quality})
        if out.tell() <= MAX_JPEG_BYTES:
            return out.getvalue()
    raise ValueError("the chart does not fit in 1 MB as a JPEG")
