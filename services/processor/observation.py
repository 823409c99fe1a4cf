"""What a HiPS's `properties` say of the observation: band (em_min, em_max,
obs_regime from the filter), time (t_min, t_max from the headers' dates),
provenance (the content's hash) and the filter's name.

Header values are the user's text: only what is parsed into numbers, or
cleaned of everything but printable ASCII and cut short, reaches the file
(a newline in a value would start a new keyword). The file name and OBJECT
never do.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.shared.bands import band_of

# MJD 0 is 1858-11-17T00:00 UTC.
_MJD_EPOCH = datetime(1858, 11, 17)
# Plausible observation dates: 1900 to 2100.
_MJD_RANGE = (15020.0, 88069.0)
_EXPOSURE_KEYS = ("EXPTIME", "TEXPTIME", "EXPOSURE", "ESO DET DIT")
TEXT_LIMIT = 64
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def clean_text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Printable ASCII only, blanks collapsed, at most `limit` characters."""
    text = " ".join(_UNPRINTABLE.sub(" ", str(value)).split())
    return text[:limit].rstrip()


def _mjd_of_date(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("Z")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return (when - _MJD_EPOCH).total_seconds() / 86400.0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _plausible(mjd: float | None) -> float | None:
    return mjd if mjd is not None and _MJD_RANGE[0] <= mjd <= _MJD_RANGE[1] else None


def time_range(headers: Iterable[Mapping[str, Any]]) -> tuple[float, float] | None:
    """(t_min, t_max) as MJD: the earliest start (MJD-OBS, else DATE-OBS) and
    the latest end (MJD-END, DATE-END, else start + EXPTIME) of the headers;
    None when no header dates the image."""
    starts: list[float] = []
    ends: list[float] = []
    for header in headers:
        start = _plausible(_number(header.get("MJD-OBS")))
        if start is None:
            start = _plausible(_mjd_of_date(header.get("DATE-OBS")))
        end = _plausible(_number(header.get("MJD-END")))
        if end is None:
            end = _plausible(_mjd_of_date(header.get("DATE-END")))
        if start is not None:
            starts.append(start)
            if end is None:
                for key in _EXPOSURE_KEYS:
                    seconds = _number(header.get(key))
                    if seconds is not None and 0 < seconds < 1e7:
                        end = start + seconds / 86400.0
                        break
        if end is not None:
            ends.append(end)
    if not starts:
        return None
    t_min = min(starts)
    t_max = max([t_min, *ends])
    return t_min, t_max


@dataclasses.dataclass(frozen=True)
class Observation:
    """The observation's part of the properties."""

    filter_name: str = ""  # cleaned
    time: tuple[float, float] | None = None  # MJD
    progenitor: str = ""  # e.g. "sha256:<hex> (uploaded file)"

    @classmethod
    def of(
        cls, filter_name: str, headers: Iterable[Mapping[str, Any]] = (), progenitor: str = ""
    ) -> Observation:
        return cls(clean_text(filter_name), time_range(headers), clean_text(progenitor, 200))

    def title(self) -> str:
        return f"User background image ({self.filter_name})" if self.filter_name else "User background image"

    def properties(self) -> dict[str, str]:
        """The recommended keywords we know: prov_progenitor, obs_regime,
        em_min/em_max (metres), t_min/t_max (MJD), obs_filter."""
        props: dict[str, str] = {}
        if self.progenitor:
            props["prov_progenitor"] = self.progenitor
        band = band_of(self.filter_name) if self.filter_name else None
        if band is not None:
            props["obs_regime"] = band.regime
            props["em_min"] = f"{band.em_min:.6g}"
            props["em_max"] = f"{band.em_max:.6g}"
        if self.time is not None:
            props["t_min"] = f"{self.time[0]:.6f}"
            props["t_max"] = f"{self.time[1]:.6f}"
        if self.filter_name:
            props["obs_filter"] = self.filter_name
        return props
