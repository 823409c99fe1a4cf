"""Wavelength ranges of the filters our images come through, by filter name:
for a HiPS's em_min/em_max and obs_regime.

The names are those the validator reports (`services/validator/filters.py`):
broad bands (Johnson-Cousins, SDSS, VISTA/2MASS near-infrared), ESO's
instrument names (FORS `R_SPECIAL`, `b_HIGH`, OmegaCAM `r_SDSS`, HAWK-I
`NB2090`, VIRCAM `NB118`), the common line filters, and names that carry
their own wavelength (`656nm`, `2.2um`). Ranges are half-maximum edges,
rounded: the figures a sky-survey registry holds, not a calibration.
"""

from __future__ import annotations

import dataclasses
import re

# (min, max) in nm. Exact (case-sensitive) names first: "r" is SDSS, "R" Cousins.
_BROAD_NM: dict[str, tuple[float, float]] = {
    "U": (330.0, 400.0),
    "B": (390.0, 490.0),
    "V": (500.0, 590.0),
    "R": (570.0, 730.0),
    "I": (730.0, 880.0),
    "u": (325.0, 385.0),
    "g": (400.0, 550.0),
    "r": (560.0, 700.0),
    "i": (690.0, 820.0),
    "z": (820.0, 940.0),
    "Z": (830.0, 930.0),
    "Y": (970.0, 1070.0),
    "J": (1170.0, 1330.0),
    "H": (1490.0, 1780.0),
    "K": (2030.0, 2370.0),
    "Ks": (1990.0, 2310.0),
    "L": (3420.0, 4120.0),
    "M": (4550.0, 4790.0),
    # Gaia's G (the Gaia images' band): mean 673 nm, FWHM 440 nm (Jordi et al. 2010, A&A 523, A48).
    "G": (453.0, 893.0),
}
# Other spellings (compared in lower case, with "-", "_", "'", " " removed).
_ALIASES: dict[str, str] = {
    "gaiag": "G",
    "kshort": "Ks",
    "ks": "Ks",
    "kp": "K",
    "kprime": "K",
    "lp": "L",
    "lprime": "L",
    "mp": "M",
    "mprime": "M",
    "bhigh": "B",
    "vhigh": "V",
    "uhigh": "u",
    "ghigh": "g",
    "zgunn": "z",
    "rspecial": "R",
    "ispecial": "I",
    "zspecial": "z",
    "ubess": "U",
    "bbess": "B",
    "vbess": "V",
    "rbess": "R",
    "ibess": "I",
    "usdss": "u",
    "gsdss": "g",
    "rsdss": "r",
    "isdss": "i",
    "zsdss": "z",
}
# Line filters: (centre, width) in nm.
_LINES_NM: dict[str, tuple[float, float]] = {
    "halpha": (656.3, 6.5),
    "ha": (656.3, 6.5),
    "oiii": (500.7, 6.0),
    "o3": (500.7, 6.0),
    "sii": (672.4, 7.0),
    "s2": (672.4, 7.0),
    "hbeta": (486.1, 6.0),
    "hb": (486.1, 6.0),
    "brg": (2166.0, 30.0),
    "brgamma": (2166.0, 30.0),
    "h2": (2124.0, 30.0),
    "feii": (1644.0, 25.0),
    "ch4": (1575.0, 112.0),
    "hei": (1083.0, 15.0),
    "pabeta": (1282.0, 19.0),
    "pab": (1282.0, 19.0),
}
# HAWK-I NB1060, NB2090 (nm); VIRCAM NB118, NB980 (nm, or tens of nm below 300).
_NARROW = re.compile(r"^nb(\d{3,4})$")
# A wavelength in the name: "656nm", "2.2um", "2.2 micron", "6563A".
_WAVELENGTH = re.compile(r"^(\d+(?:\.\d+)?)\s*(nm|um|µm|micron|microns|a|angstrom)$", re.I)
_UNIT_NM = {"nm": 1.0, "um": 1e3, "µm": 1e3, "micron": 1e3, "microns": 1e3, "a": 0.1, "angstrom": 0.1}
# A name without a range of its own: a width of 1% of the centre.
_NARROW_WIDTH = 0.01


@dataclasses.dataclass(frozen=True)
class Band:
    """A filter's pass band: half-maximum edges in metres, and its IVOA regime."""

    em_min: float
    em_max: float

    @property
    def centre(self) -> float:
        return (self.em_min + self.em_max) / 2

    @property
    def regime(self) -> str:
        """The HiPS obs_regime of the band's centre (the IVOA vocabulary's edges)."""
        nm = self.centre * 1e9
        if nm < 10:
            return "X-ray"
        if nm < 100:
            return "EUV"
        if nm < 320:
            return "UV"
        if nm < 1000:
            return "Optical"
        if nm < 1e6:
            return "Infrared"
        if nm < 1e7:
            return "Millimeter"
        return "Radio"


def _nm(low: float, high: float) -> Band:
    return Band(low * 1e-9, high * 1e-9)


def _around(centre_nm: float, width_nm: float) -> Band:
    return _nm(centre_nm - width_nm / 2, centre_nm + width_nm / 2)


def _one(name: str) -> Band | None:
    text = name.strip()
    if text in _BROAD_NM:
        return _nm(*_BROAD_NM[text])
    key = re.sub(r"[\s_'\-]+", "", text).lower()
    if key in _ALIASES:
        return _nm(*_BROAD_NM[_ALIASES[key]])
    if key in _LINES_NM:
        return _around(*_LINES_NM[key])
    narrow = _NARROW.match(key)
    if narrow:
        value = float(narrow[1])
        centre = value if value >= 300 else value * 10
        return _around(centre, centre * _NARROW_WIDTH)
    given = _WAVELENGTH.match(text)
    if given:
        centre = float(given[1]) * _UNIT_NM[given[2].lower()]
        return _around(centre, centre * _NARROW_WIDTH) if centre > 0 else None
    # A broad band whatever its case ("ks", "j"), last: "r" and "R" differ.
    for broad in _BROAD_NM:
        if broad.lower() == key:
            return _nm(*_BROAD_NM[broad])
    return None


def band_of(filter_name: str) -> Band | None:
    """The pass band of a filter name, None when it names no filter we know.

    Several filters in the beam ("+"-joined, as the validator reports them)
    pass what the narrowest of the known ones passes.
    """
    known = [band for part in filter_name.split("+") if (band := _one(part)) is not None]
    if not known:
        return None
    return min(known, key=lambda b: b.em_max - b.em_min)
