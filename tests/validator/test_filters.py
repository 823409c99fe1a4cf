"""The filter table, row by row, on real instruments' keyword layouts (written to files and read back)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.validator import Target, validate_path
from services.validator.filters import find_filter, usable
from tests.validator import instruments

# (instrument, primary keywords, expected filter, expected source)
ROWS: list[tuple[str | None, dict[str, Any], str, str]] = [
    ("HAWKI", {"ESO INS FILT1 NAME": "J", "ESO INS FILT2 NAME": "OPEN"}, "J", "ESO INS FILT1 NAME"),
    ("HAWKI", {"ESO INS FILT1 NAME": "OPEN", "ESO INS FILT2 NAME": "NB2090"}, "NB2090", "ESO INS FILT2 NAME"),
    (
        "FORS2",
        {"ESO INS FILT1 NAME": "R_SPECIAL", "ESO INS FILT1 ID": "+36"},
        "R_SPECIAL",
        "ESO INS FILT1 NAME",
    ),
    ("FORS1", {"ESO INS FILT1 NAME": "V_BESS"}, "V_BESS", "ESO INS FILT1 NAME"),
    ("EFOSC", {"ESO INS FILT1 NAME": "V#641", "ESO INS GRIS1 NAME": "Free"}, "V#641", "ESO INS FILT1 NAME"),
    ("SINFONI", {"ESO INS FILT1 NAME": "H+K"}, "H+K", "ESO INS FILT1 NAME"),
    ("OMEGACAM", {"ESO INS FILT1 NAME": "r_SDSS"}, "r_SDSS", "ESO INS FILT1 NAME"),
    ("VISIR", {"ESO INS FILT1 NAME": "B11.7", "ESO INS FILT2 NAME": "OPEN"}, "B11.7", "ESO INS FILT1 NAME"),
    ("VIMOS", {"ESO INS FILT3 NAME": "R_Mos", "ESO INS FILT4 NAME": "R_Mos"}, "R_Mos", "ESO INS FILT3 NAME"),
    ("VIRCAM", {"ESO INS FILT1 NAME": "Ks"}, "Ks", "ESO INS FILT1 NAME"),
    ("VIRCAM", {"FILTER": "Y", "ESO INS FILT1 NAME": "Y"}, "Y", "FILTER"),
    ("SOFI", {"ESO INS FILT1 ID": "open", "ESO INS FILT2 ID": "Ks"}, "Ks", "ESO INS FILT2 ID"),
    ("SOFI", {"ESO INS FILT1 ID": "NB_2.17", "ESO INS FILT2 ID": "open"}, "NB_2.17", "ESO INS FILT1 ID"),
    (
        "SOFI",
        {"ESO INS FILT1 ID": "NB_1.71", "ESO INS FILT2 ID": "H"},
        "NB_1.71+H",
        "ESO INS FILT1 ID+ESO INS FILT2 ID",
    ),
    ("ISAAC", {"ESO INS FILT1 ID": "Js", "ESO INS FILT3 ID": "open"}, "Js", "ESO INS FILT1 ID"),
    ("ISAAC", {"ESO INS FILT1 ID": "open", "ESO INS FILT3 ID": "NB_3.21"}, "NB_3.21", "ESO INS FILT3 ID"),
    (
        "NAOS+CONICA",
        {"ESO INS OPTI5 ID": "empty", "ESO INS OPTI6 ID": "Ks", "ESO INS OPTI4 ID": "empty"},
        "Ks",
        "ESO INS OPTI6 ID",
    ),
    (
        "NAOS+CONICA",
        {"ESO INS OPTI5 ID": "EMPTY", "ESO INS OPTI6 ID": "EMPTY", "ESO INS OPTI4 ID": "NB_1.64"},
        "NB_1.64",
        "ESO INS OPTI4 ID",
    ),
    ("SPHERE", {"ESO INS COMB IFLT": "DB_H23"}, "DB_H23", "ESO INS COMB IFLT"),
    ("SPHERE", {"ESO INS2 COMB IFS": "OBS_YJ"}, "OBS_YJ", "ESO INS2 COMB IFS"),
    ("MUSE", {"ESO DRS MUSE FILTER NAME": "Johnson_V"}, "Johnson_V", "ESO DRS MUSE FILTER NAME"),
    ("GMOS-N", {"FILTER1": "open1-6", "FILTER2": "r_G0303"}, "r", "FILTER2"),
    ("GMOS-S", {"FILTER1": "GG455_G0329", "FILTER2": "r_G0326"}, "GG455+r", "FILTER1+FILTER2"),
    ("GSAOI", {"FILTER1": "Kshort_G1105", "FILTER2": "Blocked2_G1119"}, "Kshort+Blocked2", "FILTER1+FILTER2"),
    ("GNIRS", {"FILTER1": "Open", "FILTER2": "H2_G0522"}, "H2", "FILTER2"),
    ("F2", {"FILTER1": "Open", "FILTER2": "J_G0802"}, "J", "FILTER2"),
    ("NIRI", {"FILTER1": "open", "FILTER2": "open", "FILTER3": "Kprime_G0206"}, "Kprime", "FILTER3"),
    (
        "WFI",
        {"ESO INS FILT1 NAME": "FREE", "ESO INS FILT2 NAME": "B/123_ESO878"},
        "B/123_ESO878",
        "ESO INS FILT2 NAME",
    ),
    ("GROND", {"ESO INS FILT1 ID": "g"}, "g", "ESO INS FILT1 ID"),
    (None, {"BANDPASS": "Halpha", "FILTER": "R"}, "Halpha", "BANDPASS"),
    (None, {"FILTER": "CLEAR", "BANDPASS": "blank"}, "", ""),
]


@pytest.mark.parametrize(("instrument", "keywords", "expected", "source"), ROWS)
def test_instrument_rows(
    tmp_path: Path, instrument: str | None, keywords: dict[str, Any], expected: str, source: str
) -> None:
    path = instruments.single(tmp_path / "f.fits", keywords, instrument)
    report = validate_path(path, Target((150.0, 2.0)))
    assert report.filter == expected
    assert report.filter_source == source
    codes = [e.code for e in report.errors]
    assert codes == ([] if expected else ["NO_FILTER"])


def test_phase3_with_several_instruments(tmp_path: Path) -> None:
    path = instruments.phase3_adp(tmp_path / "adp.fits", multi=True)
    report = validate_path(path, Target((150.0, 2.0)))
    assert report.ok, report.errors
    assert (report.filter, report.filter_source) == ("Ks+r_SDSS", "FILTER1+FILTER2")


def test_filter_in_the_image_extension(tmp_path: Path) -> None:
    ext = instruments.sky_ext(FILTER="z")
    path = instruments.mef(tmp_path / "m.fits", [ext])
    report = validate_path(path, Target((150.0, 2.0)))
    assert (report.filter, report.filter_source) == ("z", "FILTER")


def test_bandpass_stands_in_only_when_the_file_has_none(tmp_path: Path) -> None:
    none = instruments.single(tmp_path / "none.fits", {})
    report = validate_path(none, Target((150.0, 2.0)), bandpass="  Ks ")
    assert report.ok and (report.filter, report.filter_source) == ("Ks", "bandpass")
    report = validate_path(none, Target((150.0, 2.0)))
    assert not report.ok and [e.code for e in report.errors] == ["NO_FILTER"]
    assert "bandpass" in report.errors[0].message
    named = instruments.single(tmp_path / "named.fits", {"FILTER": "J"})
    assert validate_path(named, Target((150.0, 2.0)), bandpass="Ks").filter == "J"


def test_not_a_filter_values() -> None:
    for value in ("OPEN", "open", "Free", "EMPTY", "clear", "BLANK", "open2-8", "  ", None, True, "n/a"):
        assert usable(value) is None, value
    for value in ("R", "NB2090", "Open_Cluster_Filter_X", "B/123_ESO878", "H+K"):
        assert usable(value) is not None, value


def test_primary_wins_over_extension() -> None:
    class H(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            return super().get(key, default)

    found = find_filter([H(INSTRUME="HAWKI"), H({"ESO INS FILT1 NAME": "H", "FILTER": "X"})])
    assert (found.name, found.source) == ("X", "FILTER")
    found = find_filter([H(FILTER="P"), H(BANDPASS="E")])
    assert (found.name, found.source) == ("P", "FILTER")
    found = find_filter([H({"INSTRUME": "HAWKI", "ESO INS FILT1 NAME": "H"}), H({"ESO INS FILT1 NAME": "J"})])
    assert found.name == "H"
