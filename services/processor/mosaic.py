"""One mosaic of a multi-extension file's displayable chips, made by SWarp.

SWarp runs as a child process with an argument list (never a shell), in a
private scratch folder, with a time limit and its own memory limits,
background subtraction off, TAN projection, equatorial frame, the median
input pixel scale. SWarp 2.41.5 ignores SIP distortion, so SIP headers are
converted to the TPV form it understands first (sip_tpv, the published
SIP-to-TPV relation). Its gaps (0 with weight 0) are made blank (NaN) from
the weight map, and the keywords the display and the catalog need (FILTER,
OBJECT, ESO INS ..., which SWarp does not copy from the primary header) are
carried over.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.shared.errors import Code
from services.shared.fits_header import CARD, CARDS_PER_BLOCK, FitsProblem, Limits, walk_seekable

if TYPE_CHECKING:
    from astropy.io import fits

# Only the standard library (and the shared header reader, itself standard library
# only) at module level: numpy, astropy and gRPC (for the error type) are imported
# where they are used, so the command-line mosaic starts SWarp within a few tens of
# milliseconds and reads the headers while SWarp runs.


def _failed(message: str) -> Exception:
    """PROCESSING_FAILED (the shared error type, imported on demand)."""
    from services.shared.errors import ServiceError

    return ServiceError(Code.PROCESSING_FAILED, message)


# Keywords carried from the input's primary and first chip headers.
CARRIED = (
    "OBJECT",
    "FILTER",
    "FILTER1",
    "FILTER2",
    "BANDPASS",
    "INSTRUME",
    "TELESCOP",
    "OBSERVER",
    "DATE-OBS",
    "MJD-OBS",
    "EXPTIME",
    "ORIGIN",
    "PROG_ID",
    "ARCFILE",
)
CARRIED_PREFIXES = ("ESO INS ", "ESO OBS ", "ESO TPL ", "ESO DPR ", "ESO TEL ", "ESO DET ")
# Output rows handled at a time when blanking gaps (bounds memory).
BAND_BYTES = 64 << 20


@dataclasses.dataclass
class MosaicResult:
    path: Path
    shape: tuple[int, int]  # (ny, nx)
    hdus: list[int]
    pixel_scale_arcsec: float
    blank_fraction: float
    swarp_seconds: float
    seconds: float
    swarp_version: str


def _has_sip(header: fits.Header) -> bool:
    return "A_ORDER" in header and "B_ORDER" in header


def _sip_to_pv() -> Any:
    """sip_tpv's converter. Its package __init__ (1.1) asks pkg_resources,
    gone from setuptools 81, for its own version only; when that fails the
    converter module is loaded without the __init__."""
    try:
        import sip_tpv  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        spec = importlib.util.find_spec("sip_tpv")
        if spec is None or spec.submodule_search_locations is None:
            raise
        package = types.ModuleType("sip_tpv")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["sip_tpv"] = package
    from sip_tpv.sip_to_pv import sip_to_pv

    return sip_to_pv


def sip_to_tpv(header: fits.Header) -> fits.Header:
    """A copy of the header with its SIP distortion in TPV form (SWarp reads TPV)."""
    from services.processor import source

    sip_to_pv = _sip_to_pv()
    out = header.copy()
    # sip_tpv needs a CD matrix; build it from PC/CDELT when that is what we have.
    if "CD1_1" not in out:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = source.read_wcs(header)
        cd = wcs.wcs.get_pc() * wcs.wcs.get_cdelt()[:, None]
        for i in range(2):
            for j in range(2):
                out[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
            out.remove(key, ignore_missing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # sip_tpv uses np.matrix
        sip_to_pv(out, tpv_format=True, preserve=False)
    for key in ("CTYPE1", "CTYPE2"):
        out[key] = str(out[key])[:5].ljust(5, "-") + "TPV" if str(out[key]).endswith("SIP") else out[key]
    for prefix in ("AP_", "BP_"):
        for key in [k for k in out if k.startswith(prefix)]:
            out.remove(key, ignore_missing=True)
    return out


def _head_block(header: fits.Header) -> str:
    """The WCS cards of a converted header, as one block of a SWarp `.head` file."""
    keep = re.compile(r"^(CTYPE[12]|CUNIT[12]|CRVAL[12]|CRPIX[12]|CD[12]_[12]|PV[12]_\d+|RADESYS|EQUINOX)$")
    cards = [str(card) for card in header.cards if keep.match(card.keyword)]
    return "\n".join(cards + ["END"]) + "\n"


def carried_cards(headers: Iterable[fits.Header]) -> list[tuple[str, object, str]]:
    """Keywords of the input to copy into the mosaic, later headers winning."""
    found: dict[str, tuple[str, object, str]] = {}
    for header in headers:
        for card in header.cards:
            key = card.keyword
            if not key:
                continue
            if key in CARRIED or key.startswith(CARRIED_PREFIXES):
                found[key] = (key, card.value, card.comment)
    return list(found.values())


@functools.lru_cache(maxsize=4)
def swarp_version(swarp_bin: str) -> str:
    try:
        proc = subprocess.run([swarp_bin, "-v"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"version\s+([\w.]+)", proc.stdout + proc.stderr)
    return match.group(1) if match else ""


def _swarp_message(stderr: str) -> str:
    """SWarp's own words for what went wrong."""
    lines = [ln.strip(" >\r") for ln in stderr.replace("\x1b[1M", "\n").splitlines()]
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln).strip() for ln in lines]
    lines = [ln for ln in lines if ln and "default.swarp not found" not in ln]
    errors = [ln for ln in lines if "error" in ln.lower()]
    picked = errors or lines[-3:]
    return " ".join(picked)[:1000] or "no message"


def _image_extensions(hdul: fits.HDUList) -> list[int]:
    from services.processor import source

    return source.image_hdu_indices(hdul)


def prepare_input(
    path: Path, hdul: fits.HDUList, hdus: list[int], job: Path
) -> tuple[Path, list[fits.Header]]:
    """The file SWarp reads, and the (converted) header of each chip.

    When SWarp can read the file as it is (uncompressed, every image HDU
    selected, nothing in the primary), it is used in place and SIP headers
    are overridden by a `.head` file; otherwise the selected chips are
    written to a new file with converted headers.
    """
    from astropy.io import fits

    from services.processor import source

    headers = []
    for i in hdus:
        header = hdul[i].header
        headers.append(sip_to_tpv(header) if _has_sip(header) else header)
    compressed = any(isinstance(hdul[i], fits.CompImageHDU) for i in hdus)
    direct = not compressed and 0 not in hdus and sorted(hdus) == _image_extensions(hdul)
    target = job / "chips.fits"
    if direct:
        os.symlink(path.resolve(), target)
        if any(_has_sip(hdul[i].header) for i in hdus):
            blocks = [
                _head_block(h) if _has_sip(hdul[i].header) else "END\n"
                for i, h in zip(hdus, headers, strict=True)
            ]
            (job / "chips.head").write_text("".join(blocks))
        return target, headers
    out = fits.HDUList([fits.PrimaryHDU()])
    for i, header in zip(hdus, headers, strict=True):
        data = source.as_float_image(hdul[i].data)
        h = header.copy()
        for key in (
            "XTENSION",
            "SIMPLE",
            "BITPIX",
            "NAXIS",
            "NAXIS1",
            "NAXIS2",
            "NAXIS3",
            "PCOUNT",
            "GCOUNT",
        ):
            h.remove(key, ignore_missing=True)
        for key in [
            k for k in h if k.startswith(("ZNAXIS", "ZTILE", "ZCMPTYPE", "ZBITPIX", "ZIMAGE", "ZNAME"))
        ]:
            h.remove(key, ignore_missing=True)
        for key in ("BSCALE", "BZERO", "BLANK"):
            h.remove(key, ignore_missing=True)
        out.append(fits.ImageHDU(data, h))
    out.writeto(target)
    return target, headers


def output_scale_arcsec(header: fits.Header) -> float:
    """Pixel scale of SWarp's TAN output (a CD matrix, no distortion)."""
    if "CD1_1" in header:
        det = header["CD1_1"] * header.get("CD2_2", 0.0) - header.get("CD1_2", 0.0) * header.get("CD2_1", 0.0)
    else:
        det = header.get("CDELT1", 0.0) * header.get("CDELT2", 0.0)
    return float(math.sqrt(abs(det)) * 3600.0)


def swarp_args(
    chips: Path,
    out: Path,
    weight: Path,
    pixel_scale_arcsec: float | None,
    job: Path,
    swarp_bin: str = "SWarp",
    mem_max_mb: int = 512,
) -> list[str]:
    """SWarp's command line: everything on it, nothing from a config file."""
    return [
        swarp_bin,
        str(chips),
        "-IMAGEOUT_NAME", str(out),
        "-WEIGHTOUT_NAME", str(weight),
        "-SUBTRACT_BACK", "N",
        "-COMBINE", "Y",
        "-COMBINE_TYPE", "WEIGHTED",
        "-CELESTIAL_TYPE", "EQUATORIAL",
        "-PROJECTION_TYPE", "TAN",
        *(
            ["-PIXELSCALE_TYPE", "MANUAL", "-PIXEL_SCALE", f"{pixel_scale_arcsec:.8g}"]
            if pixel_scale_arcsec
            else ["-PIXELSCALE_TYPE", "MEDIAN"]
        ),
        "-CENTER_TYPE", "ALL",
        "-IMAGE_SIZE", "0",
        "-RESAMPLE_DIR", str(job),
        "-VMEM_DIR", str(job),
        "-MEM_MAX", str(mem_max_mb),
        "-COMBINE_BUFSIZE", str(max(64, mem_max_mb // 2)),
        "-VMEM_MAX", "16384",
        "-DELETE_TMPFILES", "Y",
        "-WRITE_XML", "N",
        "-VERBOSE_TYPE", "NORMAL",
        "-HEADER_SUFFIX", ".head",
        "-COPY_KEYWORDS", "OBJECT",
    ]  # fmt: skip


def run_swarp(
    chips: Path,
    out: Path,
    weight: Path,
    pixel_scale_arcsec: float | None,
    job: Path,
    swarp_bin: str = "SWarp",
    timeout_s: float = 900,
    mem_max_mb: int = 512,
) -> float:
    """Runs SWarp; returns its wall time. Raises PROCESSING_FAILED with SWarp's message."""
    proc = start_swarp(chips, out, weight, pixel_scale_arcsec, job, swarp_bin, mem_max_mb)
    return wait_swarp(proc, out, timeout_s)


def start_swarp(
    chips: Path,
    out: Path,
    weight: Path,
    pixel_scale_arcsec: float | None,
    job: Path,
    swarp_bin: str = "SWarp",
    mem_max_mb: int = 512,
) -> subprocess.Popen[str]:
    args = swarp_args(chips, out, weight, pixel_scale_arcsec, job, swarp_bin, mem_max_mb)
    try:
        proc = subprocess.Popen(
            args, cwd=job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
    except OSError as exc:
        raise _failed(f"SWarp could not be started: {exc.strerror}") from None
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def wait_swarp(proc: subprocess.Popen[str], out: Path, timeout_s: float) -> float:
    """Waits for SWarp; returns its wall time. Raises PROCESSING_FAILED with SWarp's message."""
    started: float = proc.started  # type: ignore[attr-defined]
    remaining = max(0.0, timeout_s - (time.perf_counter() - started))
    try:
        _, stderr = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise _failed(f"SWarp did not finish within {timeout_s:g} s") from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        raise _failed(f"SWarp failed (exit {proc.returncode}): {_swarp_message(stderr)}")
    return seconds


@dataclasses.dataclass(frozen=True)
class HduLayout:
    """One HDU as its raw header describes it."""

    index: int
    naxis: tuple[int, ...]
    compressed: bool  # a tile-compressed image (fpack)
    sip: bool


# The layout scan gives up on a header longer than this (the astropy path reads it then).
LAYOUT_MAX_HEADER_BLOCKS = 1000


def scan_layout(path: Path, max_hdus: int = 1000) -> list[HduLayout] | None:
    """The HDUs of a FITS file from its raw headers, without astropy (fast), read by the
    header reader the validator accepted the file with; None when anything looks unusual
    (the astropy path handles it then)."""
    limits = Limits(max_hdus=max_hdus, max_header_cards=LAYOUT_MAX_HEADER_BLOCKS * CARDS_PER_BLOCK)
    try:
        with open(path, "rb") as f:
            scan = walk_seekable(f, limits)
    except (FitsProblem, OSError):
        return None
    if scan.trailing_bytes:
        return None
    return [
        HduLayout(
            hdu.index,
            tuple(hdu.axes) if hdu.index == 0 or hdu.xtension == "IMAGE" else (),
            hdu.header.get("ZIMAGE") is True,
            _declares_sip(hdu.header.wcs_cards),
        )
        for hdu in scan.hdus
    ]


def _declares_sip(wcs_cards: str) -> bool:
    """Whether the primary WCS has an A_ORDER card: from the cards the walk already picked out,
    faster than indexing the whole header for one keyword."""
    return any(wcs_cards.startswith("A_ORDER ", i) for i in range(0, len(wcs_cards), CARD))


def finish(out: Path, weight: Path, cards: list[tuple[str, object, str]], history: str) -> float:
    """Blanks the gaps (weight 0) and adds the carried keywords, in place.

    Returns the blank fraction."""
    import numpy as np
    from astropy.io import fits

    with fits.open(out, mode="update", memmap=True) as mosaic, fits.open(weight, memmap=True) as wmap:
        header = mosaic[0].header
        ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
        plain = header["BITPIX"] == -32 and "BSCALE" not in header and "BZERO" not in header
        if plain:
            # The pixels through a mapping of our own, written back by the
            # kernel like any file write: astropy's update mode would msync
            # them to the disk when closing (measured 0.04 s of 0.09).
            data = np.memmap(
                out, dtype=">f4", mode="r+", offset=mosaic[0].fileinfo()["datLoc"], shape=(ny, nx)
            )
        else:
            data = mosaic[0].data
        blank = _blank_gaps(data, wmap[0].data)
        del data
        for key, value, comment in cards:
            if key in ("OBJECT",) and key in header and header[key]:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # long HIERARCH values
                header[key] = (value, comment)
        header["HISTORY"] = history
    return blank / float(ny * nx)


def _blank_gaps(data: Any, wdata: Any) -> int:
    """NaN where the weight is 0, band by band; returns the count."""
    import numpy as np

    blank = 0
    ny, nx = data.shape
    band = max(1, BAND_BYTES // (4 * nx))
    for y0 in range(0, ny, band):
        gaps = wdata[y0 : y0 + band] <= 0
        n = int(np.count_nonzero(gaps))
        if n:
            # Masked copy: no index arrays (a third faster than data[gaps] = nan).
            np.copyto(data[y0 : y0 + band], np.float32(np.nan), where=gaps)
            blank += n
    return blank


def mosaic_file(
    path: str | Path,
    out: str | Path,
    hdus: list[int] | None = None,
    *,
    pixel_scales: list[float] | None = None,
    filter_name: str = "",
    swarp_bin: str = "SWarp",
    timeout_s: float = 900,
    scratch_dir: str | None = None,
    mem_max_mb: int = 512,
) -> MosaicResult:
    """Mosaics HDUs `hdus` (default: every image HDU) of a FITS file into `out`."""
    start = time.perf_counter()
    path = Path(path)
    out = Path(out)
    job = Path(tempfile.mkdtemp(prefix="swarp-", dir=scratch_dir or None))
    raw = job / "coadd.fits"
    weight = job / "coadd.weight.fits"
    # Without the validator's scales, SWarp takes the median itself.
    scale = float(statistics.median(pixel_scales)) if pixel_scales else None
    try:
        layout = scan_layout(path)
        if layout is not None and not any(h.compressed for h in layout):
            images = [h.index for h in layout if len(h.naxis) >= 2]
            chosen = hdus if hdus is not None else images
            if (
                chosen
                and 0 not in chosen
                and sorted(chosen) == images
                and not any(layout[i].sip for i in chosen)
            ):
                # SWarp reads the file as it is: start it now, read the headers meanwhile.
                chips = job / "chips.fits"
                os.symlink(path.resolve(), chips)
                proc = start_swarp(chips, raw, weight, scale, job, swarp_bin, mem_max_mb)
                try:
                    from astropy.io import fits

                    with fits.open(path) as hdul:
                        cards = carried_cards([hdul[0].header, hdul[chosen[0]].header])
                except BaseException:
                    proc.kill()
                    proc.communicate()
                    raise
                swarp_seconds = wait_swarp(proc, raw, timeout_s)
                return _finished(
                    raw, weight, out, chosen, cards, filter_name, swarp_bin, swarp_seconds, start
                )
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            selected = hdus if hdus is not None else _image_extensions(hdul)
            if not selected:
                raise _failed("the file holds no image to mosaic")
            for i in selected:
                if not 0 <= i < len(hdul):
                    raise _failed(f"the file has no HDU {i}")
            chips, headers = prepare_input(path, hdul, selected, job)
            cards = carried_cards([hdul[0].header, hdul[selected[0]].header])
        swarp_seconds = run_swarp(chips, raw, weight, scale, job, swarp_bin, timeout_s, mem_max_mb)
        return _finished(raw, weight, out, selected, cards, filter_name, swarp_bin, swarp_seconds, start)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _finished(
    raw: Path,
    weight: Path,
    out: Path,
    selected: list[int],
    cards: list[tuple[str, object, str]],
    filter_name: str,
    swarp_bin: str,
    swarp_seconds: float,
    start: float,
) -> MosaicResult:
    """Blanks the gaps, carries the keywords and moves SWarp's output to `out`."""
    from astropy.io import fits

    if filter_name and not any(key in ("FILTER", "BANDPASS") for key, _, _ in cards):
        cards.append(("FILTER", filter_name, "filter of the input"))
    made = fits.getheader(raw)
    version = str(made.get("SOFTVERS", "")) or swarp_version(swarp_bin)
    history = f"SWarp {version} mosaic of HDUs {','.join(map(str, selected))}; gaps blanked from weights"
    blank = finish(raw, weight, cards, history)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(raw), out)
    return MosaicResult(
        path=out,
        shape=(int(made["NAXIS2"]), int(made["NAXIS1"])),
        hdus=list(selected),
        pixel_scale_arcsec=output_scale_arcsec(made),
        blank_fraction=blank,
        swarp_seconds=swarp_seconds,
        seconds=time.perf_counter() - start,
        swarp_version=version,
    )
