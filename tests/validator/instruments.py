"""FITS files that look like real instruments' (keyword layout, chip geometry), made small for tests.

Each maker writes one file with astropy and returns its path. Geometry keeps
the instruments' angular sizes and gaps while using fewer, larger pixels.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ncompress
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from tests.fitsgen import sky_image, tan_wcs


def filler_cards(header: fits.Header, n: int, prefix: str = "ESO DET") -> None:
    """Adds n HIERARCH cards, as real ESO headers carry a few hundred."""
    for i in range(n):
        header[f"HIERARCH {prefix} FILL{i:03d} VAL"] = (i * 0.5, "filler as in real headers")


def eso_primary(
    instrument: str, keywords: dict[str, Any], obj: str = "NGC 1234", cards: int = 150
) -> fits.Header:
    h = fits.Header()
    h["ORIGIN"] = "ESO-PARANAL"
    h["TELESCOP"] = "ESO-VLT-U4" if instrument != "VIRCAM" else "ESO-VISTA"
    h["INSTRUME"] = instrument
    h["OBJECT"] = obj
    h["DATE-OBS"] = "2024-03-01T01:02:03.456"
    h["MJD-OBS"] = 60370.04
    h["EXPTIME"] = 10.0
    for key, value in keywords.items():
        h[f"HIERARCH {key}" if key.startswith("ESO ") else key] = value
    filler_cards(h, cards)
    return h


def image_header(
    ra: float, dec: float, scale: float, shape: tuple[int, int], rotation: float = 0.0
) -> tuple[fits.Header, WCS]:
    w = tan_wcs(ra, dec, scale, shape, rotation)
    return w.to_header(), w


def single(
    path: Path,
    keywords: dict[str, Any] | None = None,
    instrument: str | None = None,
    ra: float = 150.0,
    dec: float = 2.0,
    size: int = 64,
    scale: float = 1.0,
) -> Path:
    """A single-HDU image with the given primary keywords (ESO ones written as HIERARCH)."""
    header, w = image_header(ra, dec, scale, (size, size))
    base = eso_primary(instrument, keywords or {}, cards=20) if instrument else fits.Header()
    if not instrument:
        for key, value in (keywords or {}).items():
            base[key] = value
    header.update(base)
    fits.PrimaryHDU(sky_image((size, size), w), header).writeto(path, overwrite=True)
    return path


def offset_position(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """A position offset on the sky (small offsets)."""
    d = dec + north_arcsec / 3600.0
    return (ra + east_arcsec / 3600.0 / math.cos(math.radians(dec))) % 360.0, d


# HAWK-I: 4 chips of 2048 px at 0.106"/px (217" each) with gaps of ~15"; here 256 px at 0.848"/px.
HAWKI_CHIP = 256
HAWKI_SCALE = 0.106 * 2048 / HAWKI_CHIP
HAWKI_GAP_ARCSEC = 15.0


def hawki_pawprint(
    path: Path, ra: float = 150.0, dec: float = -30.0, filt1: str = "OPEN", filt2: str = "NB2090"
) -> Path:
    """A HAWK-I raw paw-print: empty primary, CHIP1.INT1 .. CHIP4.INT1, filter in wheel 2."""
    primary = eso_primary(
        "HAWKI",
        {
            "ESO INS FILT1 NAME": filt1,
            "ESO INS FILT2 NAME": filt2,
            "ESO DPR CATG": "SCIENCE",
            "ESO DPR TYPE": "OBJECT",
            "RA": ra,
            "DEC": dec,
        },
    )
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [fits.PrimaryHDU(header=primary)]
    n = HAWKI_CHIP
    gap_pix = HAWKI_GAP_ARCSEC / HAWKI_SCALE
    # Chip layout as on the sky (north up, east left):
    # 1 lower left, 2 lower right, 3 upper right, 4 upper left.
    layout = {1: (-1, -1), 2: (1, -1), 3: (1, 1), 4: (-1, 1)}
    for chip, (sx, sy) in layout.items():
        h = fits.Header()
        h["EXTNAME"] = f"CHIP{chip}.INT1"
        h["HIERARCH ESO DET CHIP NO"] = chip
        h["HIERARCH ESO DET CHIP ID"] = f"ESO-Hawaii2RG-chip{chip}"
        # The pointing is the centre of the gap cross; each chip's CRPIX places it around it.
        crpix1 = (n + 1) / 2 - sx * (n / 2 + gap_pix / 2)
        crpix2 = (n + 1) / 2 - sy * (n / 2 + gap_pix / 2)
        w = tan_wcs(ra, dec, HAWKI_SCALE, (n, n))
        w.wcs.crpix = [crpix1, crpix2]
        h.update(w.to_header())
        filler_cards(h, 40, "ESO DET CHIP")
        data = sky_image((n, n), w, seed=chip).astype(np.int16)
        hdus.append(fits.ImageHDU(data, h))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def hawki_chip_centres(ra: float = 150.0, dec: float = -30.0) -> dict[int, tuple[float, float]]:
    off = (HAWKI_CHIP * HAWKI_SCALE + HAWKI_GAP_ARCSEC) / 2
    return {
        1: offset_position(ra, dec, off, -off),
        2: offset_position(ra, dec, -off, -off),
        3: offset_position(ra, dec, -off, off),
        4: offset_position(ra, dec, off, off),
    }


# VIRCAM: 16 detectors of 2048 px at 0.339"/px, gaps of 90% (x) and 42.5% (y) of a detector,
# ZPN projection about the optical axis. Here 128 px at 5.42"/px.
VIRCAM_CHIP = 128
VIRCAM_SCALE = 0.339 * 2048 / VIRCAM_CHIP


def vircam_pawprint(path: Path, ra: float = 150.0, dec: float = -30.0, processed: bool = False) -> Path:
    """A VIRCAM raw file: 16 DETn extensions sharing the ZPN pointing, each placed by CRPIX."""
    keys: dict[str, Any] = {"ESO INS FILT1 NAME": "Ks", "ESO DPR TYPE": "OBJECT"}
    if processed:
        keys.update({"FILTER": "Ks", "ESO PRO CATG": "BASIC_CALIBRATED_SCI"})
    primary = eso_primary("VIRCAM", keys)
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [fits.PrimaryHDU(header=primary)]
    n = VIRCAM_CHIP
    s = VIRCAM_SCALE / 3600.0
    pitch_x, pitch_y = n * 1.9, n * 1.425
    for det in range(1, 17):
        col, row = (det - 1) % 4, (det - 1) // 4
        h = fits.Header()
        h["EXTNAME"] = f"DET1.CHIP{det}"
        h["HIERARCH ESO DET CHIP NO"] = det
        h["CTYPE1"], h["CTYPE2"] = "RA---ZPN", "DEC--ZPN"
        h["CRVAL1"], h["CRVAL2"] = ra, dec
        # East is left: columns further east have larger CRPIX1.
        h["CRPIX1"] = (n + 1) / 2 + (col - 1.5) * pitch_x
        h["CRPIX2"] = (n + 1) / 2 - (row - 1.5) * pitch_y
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -s, 0.0, 0.0, s
        h["PV2_1"], h["PV2_2"], h["PV2_3"] = 1.0, 0.0, 44.0
        h["RADESYS"] = "ICRS"
        filler_cards(h, 60, "ESO DET CHIP")
        rng = np.random.default_rng(det)
        hdus.append(fits.ImageHDU(rng.normal(1000, 10, (n, n)).astype(np.int16), h))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def vircam_detector_centre(path: Path, det: int) -> tuple[float, float]:
    with fits.open(path) as hdul:
        w = WCS(hdul[det].header)
        ra, dec = w.all_pix2world([[(VIRCAM_CHIP + 1) / 2, (VIRCAM_CHIP + 1) / 2]], 1)[0]
    return float(ra), float(dec)


def phase3_adp(path: Path, ra: float = 150.0, dec: float = 2.0, size: int = 96, multi: bool = False) -> Path:
    """A Phase 3 ADP image with ERR and CONF extensions (science in extension 1)."""
    primary = fits.Header()
    primary["ORIGIN"] = "ESO"
    primary["PRODCATG"] = "SCIENCE.IMAGE"
    primary["OBJECT"] = "COSMOS"
    if multi:
        primary["INSTR1"], primary["FILTER1"] = "VIRCAM", "Ks"
        primary["INSTR2"], primary["FILTER2"] = "OMEGACAM", "r_SDSS"
    else:
        primary["INSTRUME"] = "OMEGACAM"
        primary["FILTER"] = "r_SDSS"
    filler_cards(primary, 30, "ESO QC")
    header, w = image_header(ra, dec, 0.21, (size, size))
    sci = fits.ImageHDU(sky_image((size, size), w), header)
    sci.header["EXTNAME"] = "SCI"
    sci.header["HDUCLAS1"], sci.header["HDUCLAS2"] = "IMAGE", "DATA"
    sci.header["ERRDATA"], sci.header["QUALDATA"] = "ERR", "CONF"
    err = fits.ImageHDU(np.full((size, size), 0.1, np.float32), header)
    err.header["EXTNAME"] = "ERR"
    err.header["HDUCLAS1"], err.header["HDUCLAS2"], err.header["HDUCLAS3"] = "IMAGE", "ERROR", "RMSE"
    conf = fits.ImageHDU(np.full((size, size), 100, np.int16), header)
    conf.header["EXTNAME"] = "CONF"
    fits.HDUList([fits.PrimaryHDU(header=primary), sci, err, conf]).writeto(path, overwrite=True)
    return path


def product_with_bpm(path: Path, ra: float = 150.0, dec: float = 2.0, size: int = 96) -> Path:
    """A pipeline product: science image in the primary, a bad-pixel-mask image extension."""
    header, w = image_header(ra, dec, 0.106, (size, size))
    header.update(
        eso_primary(
            "HAWKI",
            {"ESO PRO CATG": "BASIC_CALIB_SCI", "ESO INS FILT1 NAME": "Ks", "ESO INS FILT2 NAME": "OPEN"},
        )
    )
    bpm = fits.ImageHDU(np.zeros((size, size), np.uint8), header.copy())
    bpm.header["EXTNAME"] = "BPM"
    fits.HDUList([fits.PrimaryHDU(sky_image((size, size), w), header), bpm]).writeto(path, overwrite=True)
    return path


def mef(
    path: Path, extensions: Iterable[fits.ImageHDU | fits.BinTableHDU], primary: fits.Header | None = None
) -> Path:
    fits.HDUList([fits.PrimaryHDU(header=primary or fits.Header()), *extensions]).writeto(
        path, overwrite=True
    )
    return path


def sky_ext(
    ra: float = 150.0,
    dec: float = 2.0,
    size: int = 64,
    scale: float = 1.0,
    extname: str = "SCI",
    **cards: Any,
) -> fits.ImageHDU:
    header, w = image_header(ra, dec, scale, (size, size))
    header["EXTNAME"] = extname
    for key, value in cards.items():
        header[key] = value
    return fits.ImageHDU(sky_image((size, size), w), header)


def gzipped(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes(), compresslevel=6))
    return out


def unix_compressed(path: Path) -> Path:
    """The file as Unix compress (.Z) writes it (LZW, as ESO's archive delivers raw files)."""
    out = path.with_name(path.name + ".Z")
    out.write_bytes(ncompress.compress(path.read_bytes()))
    return out


def fpacked(path: Path, out: Path, compression: str = "RICE_1") -> Path:
    """Every image HDU of path tile-compressed, as fpack does (empty primary first)."""
    hdus: list[Any] = []
    with fits.open(path) as hdul:
        for i, hdu in enumerate(hdul):
            if hdu.data is None or not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):
                hdus.append(hdu.copy() if i else fits.PrimaryHDU(header=hdu.header))
                continue
            data = hdu.data
            if data.dtype.kind == "u" and data.dtype.itemsize == 1:
                data = data.astype(np.int16)
            header = hdu.header.copy()
            for key in ("SIMPLE", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BZERO", "BSCALE"):
                header.remove(key, ignore_missing=True, remove_all=True)
            if i == 0:
                hdus.append(fits.PrimaryHDU())
            hdus.append(fits.CompImageHDU(data, header, compression_type=compression))
        fits.HDUList(hdus).writeto(out, overwrite=True)
    return out


def write_header_only(path: Path, cards: Sequence[str], data: bytes = b"") -> Path:
    """Raw cards (each padded to 80), END, padding, then data: for files astropy will not write."""
    text = "".join(c.ljust(80)[:80] for c in cards) + "END".ljust(80)
    raw = text.encode("ascii")
    raw += b" " * (-len(raw) % 2880)
    path.write_bytes(raw + data)
    return path
