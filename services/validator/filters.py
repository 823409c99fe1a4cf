"""The filter an image was taken through: BANDPASS or FILTER, else the instrument's own keywords.

The keyword table follows what ESO's and Gemini's pipelines read. Values
that name no filter (OPEN, FREE, EMPTY, CLEAR, BLANK, ...) are passed over;
several active filters join with "+", in wheel order.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

# Filter-wheel positions that hold no filter. Gemini writes "open1-6", "open2-8".
_NOT_A_FILTER = re.compile(
    r"^(open|free|empty|clear|blank|none|null|no[ _-]?filter|n/?a|unknown|undefined|-+|\?+)"
    r"([\s_.#-]*\d[\d_.-]*)?$",
    re.I,
)
# Gemini component ids: "r_G0326", "Kshort_G1105" -> "r", "Kshort".
_GEMINI_ID = re.compile(r"_G\d{4}[A-Z]?$", re.I)
GEMINI = {"GMOS-N", "GMOS-S", "GSAOI", "GNIRS", "F2", "FLAMINGOS-2", "NIRI"}


class HeaderLike(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


@dataclasses.dataclass(frozen=True)
class FilterResult:
    name: str  # "" when none
    source: str  # the keyword(s) it came from, "bandpass", or ""


def usable(value: Any) -> str | None:
    """The value as a filter name, or None when it names no filter."""
    if value is None or isinstance(value, bool):
        return None
    text = " ".join(str(value).split())
    if not text or _NOT_A_FILTER.match(text):
        return None
    return text


def _gemini(value: Any) -> str | None:
    text = usable(value)
    if text is None:
        return None
    return usable(_GEMINI_ID.sub("", text))


def _join(
    header: HeaderLike, keys: Sequence[str], clean: Callable[[Any], str | None] = usable
) -> FilterResult | None:
    """Every active filter of the keys, in order, joined by "+"."""
    names: list[str] = []
    sources: list[str] = []
    for key in keys:
        name = clean(header.get(key))
        if name is not None:
            names.append(name)
            sources.append(key)
    if not names:
        return None
    return FilterResult("+".join(names), "+".join(sources))


def _first(header: HeaderLike, keys: Sequence[str]) -> FilterResult | None:
    """The first active filter of the keys."""
    for key in keys:
        name = usable(header.get(key))
        if name is not None:
            return FilterResult(name, key)
    return None


def _ins(n: int, what: str = "NAME") -> str:
    return f"ESO INS FILT{n} {what}"


def _phase3(header: HeaderLike) -> FilterResult | None:
    """Phase 3 products of several instruments: FILTERi belongs to INSTRi."""
    keys = [f"FILTER{i}" for i in range(1, 10) if header.get(f"INSTR{i}") is not None]
    return _join(header, keys) if keys else None


def _eso_generic(header: HeaderLike) -> FilterResult | None:
    return _join(header, [_ins(n) for n in range(1, 10)]) or _join(
        header, [_ins(n, "ID") for n in range(1, 10)]
    )


def _instrument_rule(instrument: str) -> Callable[[HeaderLike], FilterResult | None] | None:
    inst = instrument.upper().strip()
    if inst == "HAWKI":
        # FILT1 holds the broad bands; the narrow bands are in FILT2 with FILT1 open.
        return lambda h: _join(h, [_ins(1), _ins(2)])
    if inst in ("FORS1", "FORS2", "EFOSC", "SINFONI", "OMEGACAM", "VISIR"):
        return lambda h: _join(h, [_ins(1)])
    if inst == "VIMOS":
        return lambda h: _first(h, [_ins(n) for n in range(1, 10)])
    if inst == "VIRCAM":
        return lambda h: _join(h, [_ins(1)])
    if inst == "SOFI":
        return lambda h: _join(h, [_ins(1, "ID"), _ins(2, "ID")])
    if inst == "ISAAC":
        return lambda h: _first(h, [_ins(1, "ID"), _ins(3, "ID")])
    if inst in ("NAOS+CONICA", "NACO", "CONICA"):
        return lambda h: _first(h, ["ESO INS OPTI5 ID", "ESO INS OPTI6 ID", "ESO INS OPTI4 ID"])
    if inst == "SPHERE":
        return lambda h: _first(h, ["ESO INS COMB IFLT", "ESO INS2 COMB IFS"])
    if inst == "MUSE":
        return lambda h: _first(h, ["ESO DRS MUSE FILTER NAME"])
    if inst in GEMINI:
        keys = ["FILTER1", "FILTER2", "FILTER3"] if inst == "NIRI" else ["FILTER1", "FILTER2"]
        return lambda h: _join(h, keys, _gemini)
    return None


def find_filter(headers: Sequence[HeaderLike], bandpass: str = "") -> FilterResult:
    """The filter from the headers (primary first, then the image HDUs'), else the caller's bandpass."""
    for header in headers:
        found = _first(header, ("BANDPASS", "FILTER"))
        if found is not None:
            return found
    for header in headers:
        found = _phase3(header)
        if found is not None:
            return found
    instrument = ""
    for header in headers:
        value = header.get("INSTRUME")
        if isinstance(value, str) and value.strip():
            instrument = value.strip()
            break
    rule = _instrument_rule(instrument)
    for header in headers:
        found = rule(header) if rule is not None else None
        if found is None and instrument.upper() not in GEMINI:
            # Any other ESO instrument, and a listed one whose own keywords are all open.
            found = _eso_generic(header)
        if found is not None:
            return found
    text = " ".join(bandpass.split())
    if text:
        return FilterResult(text, "bandpass")
    return FilterResult("", "")
