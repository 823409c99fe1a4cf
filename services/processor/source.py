"""The uploaded file as the processor sees it: decompressed to a plain FITS
file in the job's scratch folder, and its image HDUs as `SkyImage`s."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from bgimages.common.v1.codes import Code  # not services.shared.errors: that brings gRPC
from services.processor import display
from services.processor.sampling import SkyImage

if TYPE_CHECKING:
    from astropy.wcs import WCS


def _error(code: Code, message: str) -> Exception:
    """The shared error type, imported on demand: it brings gRPC with it
    (25 ms), which the command-line HiPS needs only when it fails."""
    from services.shared.errors import ServiceError

    return ServiceError(code, message)


GZIP_MAGIC = b"\x1f\x8b"
COMPRESS_MAGIC = b"\x1f\x9d"  # Unix compress (.Z)


def decompress(path: Path, dest: Path) -> Path:
    """A plain FITS file: `path` itself, or its gzip/.Z content written to `dest`."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == GZIP_MAGIC:
        with gzip.open(path, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return dest
    if magic == COMPRESS_MAGIC:
        # gzip reads the .Z format; argument list, no shell.
        with open(dest, "wb") as out:
            proc = subprocess.run(
                ["gzip", "-dc", str(path)], stdout=out, stderr=subprocess.PIPE, timeout=600, check=False
            )
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip()
            raise _error(Code.PROCESSING_FAILED, f"could not uncompress the .Z file: {msg}")
        return dest
    return path


def read_wcs(header: fits.Header, hdul: fits.HDUList | None = None) -> WCS:
    """The celestial WCS of a header, distortions (SIP, TPV, lookup tables) included."""
    from astropy.wcs import WCS, FITSFixedWarning  # a third of a second: only when needed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, hdul, naxis=2)
    if not wcs.has_celestial or wcs.naxis != 2:
        raise _error(Code.INVALID_WCS, "the image has no celestial WCS")
    return wcs


def image_hdu_indices(hdul: fits.HDUList) -> list[int]:
    """HDUs holding an image of two or more axes."""
    out = []
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
            naxis = int(hdu.header.get("ZNAXIS", hdu.header.get("NAXIS", 0)))
            if naxis >= 2:
                out.append(i)
    return out


def as_float_image(data: np.ndarray) -> np.ndarray:
    """A 2-D, native-endian, C-ordered float32 array (the first plane of a
    cube), NaN kept. Random reads from it are twice as fast as from the
    file's big-endian memory map."""
    while data.ndim > 2:
        data = data[0]
    return np.ascontiguousarray(data, dtype=np.float32)


def open_image(path: str | Path, hdu: int | None = None) -> tuple[SkyImage, fits.HDUList]:
    """The image in HDU `hdu` (default: the first image HDU) of a FITS file.

    The HDU list stays open (the data may be a memory map); the caller closes it.
    """
    image, hdul, _ = _open(path, hdu, with_stats=False)
    return image, hdul


def open_image_stats(
    path: str | Path, hdu: int | None = None
) -> tuple[SkyImage, fits.HDUList, display.Statistics]:
    """`open_image` and the image's display statistics (`display.statistics`),
    computed while astropy.wcs is imported and the WCS read."""
    image, hdul, stats = _open(path, hdu, with_stats=True)
    assert stats is not None
    return image, hdul, stats


def _open(
    path: str | Path, hdu: int | None, *, with_stats: bool
) -> tuple[SkyImage, fits.HDUList, display.Statistics | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        hdul = fits.open(path, memmap=True)
    try:
        if hdu is None:
            indices = image_hdu_indices(hdul)
            if not indices:
                raise _error(Code.NO_IMAGE_HDU, "the file holds no image")
            hdu = indices[0]
        if not 0 <= hdu < len(hdul):
            raise _error(Code.INVALID_ARGUMENT, f"the file has no HDU {hdu}")
        item = hdul[hdu]
        if item.data is None or item.data.ndim < 2:
            raise _error(Code.NO_IMAGE_HDU, f"HDU {hdu} is not an image")

        def load() -> tuple[np.ndarray, display.Statistics | None]:
            data = as_float_image(item.data)
            return data, display.statistics(data) if with_stats else None

        # Reading and converting the pixels and their statistics (C, mostly
        # without the GIL) overlap with importing astropy.wcs (Python, with
        # it) the first time, and with reading the WCS.
        with ThreadPoolExecutor(1) as reader:
            pixels = reader.submit(load)
            wcs = read_wcs(item.header, hdul)
            data, stats = pixels.result()
        return SkyImage(data, wcs, item.header), hdul, stats
    except BaseException:
        hdul.close()
        raise
