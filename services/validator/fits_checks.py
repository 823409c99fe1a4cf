"""The validator's checks: which HDUs are pictures of the sky, their WCS, the OB's field, the filter.

`validate_file` takes any binary file object (a local file, the store's
ranged reader); `validate_object` opens a key of the object store. A file
that fails is a normal answer (`Report.ok` false, with problems); only a
wrong request raises (`ServiceError`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np

from services.shared.errors import Code, ServiceError
from services.shared.fits_header import FitsProblem, HduHeader, Limits, walk
from services.shared.store import ObjectStore
from services.validator import filters, footprint
from services.validator.footprint import Sky, SkyFootprint, WcsProblem
from services.validator.report import AfterUpload, HduResult, Problem, Report

TILE_COMPRESSIONS = {"RICE_1", "RICE_ONE", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS"}
# Half-size of the pixel box read around a position to tell data from blank (NaN/BLANK) pixels.
BLANK_BOX_ARCSEC = 5.0
BLANK_BOX_MIN_PIX = 5
BLANK_BOX_MAX_PIX = 64

# Words in EXTNAME / ESO PRO CATG that mark a plane that is not a picture of the sky.
_PLANE_WORDS: dict[str, str] = {}
for _kind, _words in {
    "error plane": "ERR ERRS ERROR ERRORS ERRMAP SIGMA STAT STATS UNC UNCERT RMS NOISE STDEV",
    "variance plane": "VAR VARIANCE IVAR INVVAR IVM",
    "weight map": "WEIGHT WEIGHTS WHT WGT",
    "confidence map": "CONF CONFIDENCE CONFMAP",
    "exposure map": "EXP EXPMAP EXPOSURE EXPTIME TIME SAMP",
    "data-quality plane": "DQ QUAL QUALITY FLAG FLAGS",
    "bad-pixel mask": "MASK MASKS BPM BPMASK BADPIX BADPIXEL BPIX PIXMASK OBJMASK",
}.items():
    for _w in _words.split():
        _PLANE_WORDS[_w] = _kind
_CATG_EXTRA = {"MAP": "map"}
_TOKEN = re.compile(r"[A-Z]+", re.I)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the OB points: target and, when it has one, the BOA reference star (ICRS degrees)."""

    target: Sky
    boa: Sky | None = None


def check_position(name: str, ra: float, dec: float) -> Sky:
    """Refuses malformed coordinates (a wrong request, not a bad file)."""
    if not (math.isfinite(ra) and math.isfinite(dec)):
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name}: coordinates must be finite numbers", field=name)
    if not -90.0 <= dec <= 90.0:
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name}: declination {dec} is outside -90..90", field=name)
    if not -360.0 <= ra <= 720.0:
        raise ServiceError(Code.INVALID_ARGUMENT, f"{name}: right ascension {ra} is out of range", field=name)
    return ra % 360.0, dec


def _plane_kind(value: Any, words: dict[str, str]) -> str | None:
    if not isinstance(value, str):
        return None
    for token in _TOKEN.findall(value.upper()):
        kind = words.get(token)
        if kind is not None:
            return kind
    return None


def non_sky_reason(header: Any, primary: Any) -> str | None:
    """Why an image HDU is not a picture of the sky (error, weight, mask ... plane), or None."""
    hduclas2 = header.get("HDUCLAS2")
    if isinstance(hduclas2, str) and hduclas2.strip().upper() in ("ERROR", "QUALITY"):
        clas3 = header.get("HDUCLAS3")
        extra = f", HDUCLAS3 = {clas3!r}" if clas3 is not None else ""
        plane = "error plane" if hduclas2.strip().upper() == "ERROR" else "data-quality plane"
        return f"{plane} (HDUCLAS2 = {hduclas2.strip()!r}{extra})"
    extname = header.get("EXTNAME")
    kind = _plane_kind(extname, _PLANE_WORDS)
    if kind is not None:
        return f"{kind} (EXTNAME = {str(extname).strip()!r})"
    prodcatg = primary.get("PRODCATG")
    if isinstance(prodcatg, str) and prodcatg.strip().upper().startswith("ANCILLARY."):
        # Phase 3 ancillary files: weight, RMS, exposure and mask maps that go with a science image.
        return f"ancillary product (PRODCATG = {prodcatg.strip()!r})"
    own = header.get("ESO PRO CATG")
    catg = own if own is not None else primary.get("ESO PRO CATG")
    kind = _plane_kind(catg, {**_PLANE_WORDS, **_CATG_EXTRA})
    if kind is not None:
        return f"{kind} (ESO PRO CATG = {str(catg).strip()!r})"
    return None


@dataclasses.dataclass
class _Image:
    """A candidate sky image HDU: shape and where its two sky axes are."""

    axes: list[int]
    sky_axes: tuple[int, int]
    tile_compressed: bool
    bitpix: int


class _Inspector:
    """Looks at each HDU as the walk reads its header; asks for pixels around the OB positions."""

    def __init__(self, where: Target, max_decompressed_bytes: int, pixels: bool = True) -> None:
        self.where = where
        self.max_decompressed_bytes = max_decompressed_bytes
        # False when only the headers are at hand (the check before sending): the pixels
        # around a position inside a footprint are not read, and the check is left for later.
        self.pixels = pixels
        self.unread: list[tuple[int, str]] = []
        self.results: list[HduResult] = []
        self.problems: list[Problem] = []
        # HDU index -> mandatory keywords whose values are in free format (warned about, accepted).
        self.free_format: dict[int, tuple[str, ...]] = {}
        self.footprints: dict[int, SkyFootprint] = {}
        self.candidates: list[HduHeader] = []  # sky images, valid WCS or not
        self.primary: HduHeader | None = None
        # (hdu index, "target"|"boa") -> data byte ranges read to tell data from blank pixels.
        self.boxes: dict[tuple[int, str], list[tuple[int, int]]] = {}
        # (hdu index, "target"|"boa") -> pixel box (x0, x1, y0, y1; 1-based, inclusive) of a tile-compressed
        # image, read after the walk by decompressing only the tiles it covers.
        self.tile_boxes: dict[tuple[int, str], tuple[int, int, int, int]] = {}

    def __call__(self, hdu: HduHeader) -> list[tuple[int, int]]:
        if hdu.index == 0:
            self.primary = hdu
        if hdu.free_format:
            self.free_format[hdu.index] = hdu.free_format
        result = HduResult(
            index=hdu.index,
            bitpix=hdu.bitpix,
            shape=list(hdu.axes),
            offset=hdu.header_offset,
            data_bytes=hdu.data_size,
        )
        extname = hdu.header.get("EXTNAME")
        result.extname = str(extname).strip() if extname is not None else ""
        self.results.append(result)
        image = self._image(hdu, result)
        if image is None:
            return []
        assert self.primary is not None
        reason = non_sky_reason(hdu.header, self.primary.header)
        if reason is not None:
            result.kind = "non-sky plane"
            result.skip_reason = reason
            return []
        self.candidates.append(hdu)
        try:
            fp = footprint.build(hdu.header.wcs_cards, image.axes, image.sky_axes)
        except WcsProblem as exc:
            result.skip_reason = f"invalid WCS: {exc}"
            self.problems.append(
                Problem(
                    Code.INVALID_WCS, f"HDU {_name(hdu.index, result.extname)}: invalid WCS: {exc}", hdu.index
                )
            )
            return []
        self.footprints[hdu.index] = fp
        result.displayable = True
        result.skip_reason = None
        result.pixel_scale_arcsec = fp.pixel_scale_arcsec
        result.footprint = list(fp.corners)
        ranges: list[tuple[int, int]] = []
        for which, pos in (("target", self.where.target), ("boa", self.where.boa)):
            if pos is None:
                continue
            inside, pix = fp.contains(pos)
            if which == "target":
                result.contains_target = inside
            else:
                result.contains_boa = inside
            if inside and not self.pixels:
                self.unread.append((hdu.index, which))
            elif inside and pix is not None and image.tile_compressed:
                if _tile_pixels(hdu, image) <= MAX_TILE_PIXELS:
                    self.tile_boxes[(hdu.index, which)] = _box(image, pix, fp.pixel_scale_arcsec)
            elif inside and pix is not None:
                box = _box_ranges(image, pix, fp.pixel_scale_arcsec)
                self.boxes[(hdu.index, which)] = box
                ranges.extend(box)
        return ranges

    def _image(self, hdu: HduHeader, result: HduResult) -> _Image | None:
        """The HDU as an image, or None (with the reason in the result) when it is not one."""
        header = hdu.header
        axes = list(hdu.axes)
        bitpix = hdu.bitpix
        tile = False
        if hdu.xtension == "BINTABLE" and header.get("ZIMAGE") is True:
            tile = True
            result.tile_compressed = True
            try:
                zbitpix, axes = _tile_geometry(hdu, self.max_decompressed_bytes)
            except FitsProblem as problem:
                result.kind = "tile-compressed image"
                result.skip_reason = problem.message
                self.problems.append(Problem(problem.code, problem.message, hdu.index))
                return None
            bitpix = zbitpix
            result.shape = list(axes)
            result.bitpix = bitpix
        elif hdu.index > 0 and hdu.xtension not in ("IMAGE", "IUEIMAGE"):
            result.kind = "table" if "TABLE" in hdu.xtension else "other"
            result.skip_reason = f"not an image (XTENSION = {hdu.xtension!r})"
            return None
        elif hdu.index == 0 and header.get("GROUPS") is True and axes and axes[0] == 0:
            result.kind = "random groups"
            result.skip_reason = "random-groups data, not an image"
            return None
        if not axes:
            result.kind = "empty"
            result.skip_reason = "no data (header only)"
            return None
        if any(n == 0 for n in axes):
            result.kind = "empty"
            zero = next(i for i, n in enumerate(axes) if n == 0) + 1
            result.skip_reason = f"empty image (NAXIS{zero} = 0)"
            return None
        real = [i for i, n in enumerate(axes) if n > 1]
        if len(real) > 2:
            result.kind = "cube"
            result.skip_reason = f"a cube of {len(real)} axes ({' x '.join(map(str, axes))}), not a 2-D image"
            return None
        if len(real) < 2:
            result.kind = "1-D"
            result.skip_reason = f"not a 2-D image ({' x '.join(map(str, axes))})"
            return None
        result.kind = "image"
        return _Image(axes=axes, sky_axes=(real[0], real[1]), tile_compressed=tile, bitpix=bitpix)


def _tile_geometry(hdu: HduHeader, max_bytes: int) -> tuple[int, list[int]]:
    header = hdu.header
    zcmp = str(header.get("ZCMPTYPE", "") or "").strip().upper()
    if zcmp not in TILE_COMPRESSIONS:
        raise FitsProblem(
            Code.UNSUPPORTED_COMPRESSION,
            f"HDU {hdu.index}: unknown tile compression ZCMPTYPE = {zcmp!r}",
            hdu.index,
        )
    zbitpix = header.get("ZBITPIX")
    if zbitpix not in (8, 16, 32, 64, -32, -64) or isinstance(zbitpix, bool):
        raise FitsProblem(Code.BAD_HEADER, f"HDU {hdu.index}: ZBITPIX = {zbitpix!r} is not valid", hdu.index)
    znaxis = header.get("ZNAXIS")
    if not isinstance(znaxis, int) or isinstance(znaxis, bool) or not 0 <= znaxis <= 999:
        raise FitsProblem(Code.BAD_HEADER, f"HDU {hdu.index}: ZNAXIS = {znaxis!r} is not valid", hdu.index)
    axes = []
    for n in range(1, znaxis + 1):
        v = header.get(f"ZNAXIS{n}")
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise FitsProblem(Code.BAD_HEADER, f"HDU {hdu.index}: ZNAXIS{n} = {v!r} is not valid", hdu.index)
        axes.append(v)
    size = math.prod(axes) * abs(zbitpix) // 8 if axes else 0
    if size > max_bytes:
        raise FitsProblem(
            Code.TOO_LARGE,
            f"HDU {hdu.index}: the tile-compressed image would decompress to {size / 1e9:.1f} GB, "
            f"more than the limit of {max_bytes / 1e9:.1f} GB",
            hdu.index,
        )
    # One table row per tile: a table that disagrees with its tiling cannot be decompressed.
    tiles = 1
    for n, length in enumerate(axes, start=1):
        tile = header.get(f"ZTILE{n}", length if n == 1 else 1)
        if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
            raise FitsProblem(
                Code.BAD_HEADER, f"HDU {hdu.index}: ZTILE{n} = {tile!r} is not valid", hdu.index
            )
        tiles *= -(-length // tile)
    rows = hdu.axes[1] if len(hdu.axes) > 1 else 0
    if axes and rows != tiles:
        raise FitsProblem(
            Code.BAD_HEADER,
            f"HDU {hdu.index}: the tile table has {rows} rows but the tiling needs {tiles}",
            hdu.index,
        )
    return zbitpix, axes


MAX_TILE_PIXELS = 4 << 20  # decompress no tile larger than this (a header may declare any size)


def _tile_pixels(hdu: HduHeader, image: _Image) -> int:
    """Pixels in one tile of a tile-compressed image (ZTILEn; by default one row)."""
    n = 1
    for i, length in enumerate(image.axes, start=1):
        tile = hdu.header.get(f"ZTILE{i}", length if i == 1 else 1)
        if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
            return MAX_TILE_PIXELS + 1
        n *= tile
    return n


def _box(image: _Image, pix: tuple[float, float], scale_arcsec: float) -> tuple[int, int, int, int]:
    """A small box of pixels (x0, x1, y0, y1; 1-based, inclusive) around pixel position pix."""
    half = int(min(BLANK_BOX_MAX_PIX, max(BLANK_BOX_MIN_PIX, math.ceil(BLANK_BOX_ARCSEC / scale_arcsec))))
    a, b = image.sky_axes
    nx, ny = image.axes[a], image.axes[b]
    cx = min(nx, max(1, round(pix[0])))
    cy = min(ny, max(1, round(pix[1])))
    return max(1, cx - half), min(nx, cx + half), max(1, cy - half), min(ny, cy + half)


def _box_ranges(image: _Image, pix: tuple[float, float], scale_arcsec: float) -> list[tuple[int, int]]:
    """Byte ranges (within the data) of a small box of pixels around pixel position pix."""
    x0, x1, y0, y1 = _box(image, pix, scale_arcsec)
    nx = image.axes[image.sky_axes[0]]
    bpp = abs(image.bitpix) // 8
    # Every axis other than a and b has length 1, so axis a is contiguous and axis b strides by nx.
    return [(((y - 1) * nx + (x0 - 1)) * bpp, (x1 - x0 + 1) * bpp) for y in range(y0, y1 + 1)]


_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _all_blank(hdu: HduHeader, ranges: list[tuple[int, int]]) -> bool:
    """Whether every pixel read around a position is blank (NaN, or the BLANK value)."""
    if not ranges or any(r not in hdu.captured for r in ranges):
        return False  # not read (e.g. a short stream): do not judge
    data = np.frombuffer(b"".join(hdu.captured[r] for r in ranges), dtype=_DTYPES[hdu.bitpix])
    if hdu.bitpix < 0:
        return not bool(np.isfinite(data).any())
    blank = hdu.header.get("BLANK")
    if not isinstance(blank, int) or isinstance(blank, bool):
        return False
    return bool(np.all(data == blank))


def _tile_blanks(
    f: IO[bytes], boxes: dict[tuple[int, str], tuple[int, int, int, int]]
) -> set[tuple[int, str]]:
    """Which boxes of tile-compressed images hold only blank pixels: astropy decompresses just the
    tiles a box covers. Undecidable boxes (3-D tiles, a failing tile) count as data."""
    from astropy.io import fits

    out: set[tuple[int, str]] = set()
    try:
        f.seek(0)
        with fits.open(f, memmap=False, lazy_load_hdus=True, ignore_missing_simple=True) as hdul:
            for (index, which), (x0, x1, y0, y1) in boxes.items():
                try:
                    hdu = hdul[index]
                    if not isinstance(hdu, fits.CompImageHDU) or len(hdu.shape) != 2:
                        continue
                    data = np.asarray(hdu.section[y0 - 1 : y1, x0 - 1 : x1])
                except Exception:
                    continue
                if data.dtype.kind == "f":
                    blank = not bool(np.isfinite(data).any())
                else:
                    value = hdu.header.get("BLANK")
                    blank = isinstance(value, int) and bool(np.all(data == value))
                if blank:
                    out.add((index, which))
    except Exception:
        return out
    return out


def _hdu_ranges(indices: list[int]) -> str:
    """ "0, 2-5" for [0, 2, 3, 4, 5]."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def free_format_warnings(free_format: dict[int, tuple[str, ...]]) -> list[Problem]:
    """One warning per set of free-format mandatory keywords (the HDUs that share it named together):
    FITS 4.0 requires fixed format, but files of some ESO and Gemini writers have free-format values
    and are good images."""
    by_keys: dict[tuple[str, ...], list[int]] = {}
    for index, keys in sorted(free_format.items()):
        by_keys.setdefault(keys, []).append(index)
    out = []
    for keys, indices in by_keys.items():
        where = f"HDU {indices[0]}" if len(indices) == 1 else f"HDUs {_hdu_ranges(indices)}"
        out.append(
            Problem(
                Code.NONSTANDARD_HEADER,
                f"{where}: {', '.join(keys)} {'has its value' if len(keys) == 1 else 'have their values'} "
                "in free format; FITS 4.0 requires the mandatory keywords' values in fixed format "
                "(a logical or an integer ending in byte 30, XTENSION's quote in byte 11). Accepted, as "
                "some ESO and Gemini writers do so",
                indices[0] if len(indices) == 1 else None,
            )
        )
    return out


def _name(index: int, extname: str) -> str:
    return f"{index} ({extname})" if extname else str(index)


def _fmt(pos: Sky) -> str:
    return f"RA {pos[0]:.5f}, Dec {pos[1]:+.5f}"


def _field_problem(
    which: str, pos: Sky, insp: _Inspector, by_index: dict[int, HduResult], blank: set[int]
) -> Problem | None:
    """The field-of-view check of one position: None when it falls on an image's pixels."""
    label = "target" if which == "target" else "BOA reference star"
    outside, in_gap = (
        (Code.TARGET_OUTSIDE_FIELD, Code.TARGET_IN_CHIP_GAP)
        if which == "target"
        else (Code.BOA_OUTSIDE_FIELD, Code.BOA_IN_CHIP_GAP)
    )
    attr = "contains_target" if which == "target" else "contains_boa"
    if any(getattr(by_index[i], attr) for i in insp.footprints):
        return None
    what = f"The {label} ({_fmt(pos)})"
    if blank:
        names = ", ".join(_name(i, by_index[i].extname) for i in sorted(blank))
        return Problem(
            outside,
            f"{what} falls only on blank pixels (no data: NaN or BLANK) of HDU {names}",
        )
    offsets = {i: footprint.offset_from(fp.corners, pos) for i, fp in insp.footprints.items()}
    nearest = min(offsets, key=lambda i: offsets[i].arcsec)
    off = offsets[nearest]
    single = len(insp.footprints) == 1
    where = "the image" if single else f"HDU {_name(nearest, by_index[nearest].extname)}"
    if not single and footprint.in_convex_hull([fp.corners for fp in insp.footprints.values()], pos):
        return Problem(
            in_gap,
            f"{what} falls in a gap between the chips: {off.distance} {off.direction} of "
            f"{where}, the nearest chip",
        )
    return Problem(
        outside,
        f"{what} is outside the field: {off.distance} {off.direction} of {where}"
        + ("" if single else ", the nearest chip"),
    )


def validate_file(
    f: IO[bytes], where: Target, bandpass: str = "", limits: Limits | None = None, pixels: bool = True
) -> Report:
    """Every check on one FITS file (plain, .gz, .Z or fpack) for one OB. With `pixels` false
    `f` holds only the headers (the data zeros): no pixel is read, and what needs them is
    listed in the report's `after_upload`."""
    with warnings.catch_warnings():
        # astropy's notes on the headers it reads (FITSFixedWarning ...) are not findings of ours.
        warnings.simplefilter("ignore")
        return _validate(f, where, bandpass, limits or Limits(), pixels)


def _validate(f: IO[bytes], where: Target, bandpass: str, limits: Limits, pixels: bool) -> Report:
    insp = _Inspector(where, limits.max_decompressed_bytes, pixels)
    report = Report()
    try:
        scan = walk(f, limits, insp)
        report.compression = scan.compression
    except FitsProblem as problem:
        report.hdus = insp.results
        report.stopped = True
        report.errors = [Problem(problem.code, problem.message, problem.hdu)]
        report.warnings = free_format_warnings(insp.free_format)
        return report
    report.hdus = insp.results
    report.warnings = free_format_warnings(insp.free_format)
    by_index = {r.index: r for r in insp.results}
    hdus = {h.index: h for h in scan.hdus}
    problems = list(insp.problems)
    if not insp.candidates and not any(
        p.code in (Code.UNSUPPORTED_COMPRESSION, Code.BAD_HEADER) for p in problems
    ):
        skipped = "; ".join(f"HDU {r.index}: {r.skip_reason}" for r in insp.results if r.skip_reason)
        problems.append(Problem(Code.NO_IMAGE_HDU, f"The file holds no image of the sky ({skipped})"))

    # Pixels around each position: a position on blank pixels is not on the image.
    blank: dict[str, set[int]] = {"target": set(), "boa": set()}
    blank_boxes = {key for key, ranges in insp.boxes.items() if _all_blank(hdus[key[0]], ranges)}
    if insp.tile_boxes and scan.compression == "none":
        blank_boxes |= _tile_blanks(f, insp.tile_boxes)
    for index, which in sorted(blank_boxes):
        blank[which].add(index)
        if which == "target":
            by_index[index].contains_target = False
        else:
            by_index[index].contains_boa = False
    if insp.footprints:
        for which, pos in (("target", where.target), ("boa", where.boa)):
            if pos is not None:
                p = _field_problem(which, pos, insp, by_index, blank[which])
                if p is not None:
                    problems.append(p)

    primary = hdus[0].header
    # The primary header, then the (first) image HDU's: where pipelines and archives put the filter.
    headers = [primary] + [h.header for h in insp.candidates[:1]]
    found = filters.find_filter(headers, bandpass)
    report.filter, report.filter_source = found.name, found.source
    if not found.name:
        problems.append(
            Problem(
                Code.NO_FILTER,
                "No filter found: the headers carry no BANDPASS or FILTER keyword and none of the "
                "instrument's filter keywords; give the bandpass with the upload",
            )
        )
    for header in headers:
        obj = header.get("OBJECT")
        if isinstance(obj, str) and obj.strip():
            report.object_name = obj.strip()
            break
    report.errors = problems
    report.ok = not problems
    report.after_upload = [_blank_check_later(which, index, by_index) for index, which in insp.unread]
    return report


def _blank_check_later(which: str, index: int, by_index: dict[int, HduResult]) -> AfterUpload:
    label, code = (
        ("target", Code.TARGET_OUTSIDE_FIELD)
        if which == "target"
        else ("BOA reference star", Code.BOA_OUTSIDE_FIELD)
    )
    return AfterUpload(
        [code],
        f"HDU {_name(index, by_index[index].extname)}: whether the {label} falls on data, not on blank "
        "pixels (NaN or BLANK), is checked after upload",
        index,
    )


def validate_path(
    path: str | Path, where: Target, bandpass: str = "", limits: Limits | None = None
) -> Report:
    with open(path, "rb") as f:
        return validate_file(f, where, bandpass, limits)


# The store reader's block for the header walk: a header and a bit. Its default (1 MB) suits
# sequential reading; the walk jumps from header to header, so a smaller block saves most of the
# transfer. Large reads (a compressed stream's chunks) go through whole either way.
HEADER_FETCH = 64 << 10


def validate_object(
    store: ObjectStore, key: str, where: Target, bandpass: str = "", limits: Limits | None = None
) -> Report:
    """Validates an object of the store, reading it by ranges. The store's errors (ObjectMissing,
    StoreUnavailable) pass through: they are not findings about the file."""
    with store.open_reader(key, block=HEADER_FETCH) as f:
        return validate_file(f, where, bandpass, limits)
