"""The observation's keywords of the HiPS properties: band from the filter
name, time from the headers, user text cleaned."""

from __future__ import annotations

import pytest

from services.processor.observation import Observation, clean_text, time_range
from services.processor.processing import progenitor_of
from services.shared.bands import band_of


@pytest.mark.parametrize(
    ("name", "regime", "low_nm", "high_nm"),
    [
        ("R", "Optical", 570, 730),
        ("r", "Optical", 560, 700),  # SDSS r, not Cousins R
        ("R_SPECIAL", "Optical", 570, 730),  # FORS
        ("b_HIGH", "Optical", 390, 490),
        ("r_SDSS", "Optical", 560, 700),  # OmegaCAM
        ("Ks", "Infrared", 1990, 2310),
        ("G", "Optical", 453, 893),  # Gaia G: the Gaia images' band, not SDSS g
        ("Gaia G", "Optical", 453, 893),
        ("Kshort", "Infrared", 1990, 2310),  # Gemini
        ("J", "Infrared", 1170, 1330),
        ("NB2090", "Infrared", 2079.55, 2100.45),  # HAWK-I: nm
        ("NB118", "Infrared", 1174.1, 1185.9),  # VIRCAM: tens of nm
        ("H_Alpha", "Optical", 653.05, 659.55),
        ("BrG", "Infrared", 2151, 2181),
        ("2.2um", "Infrared", 2189, 2211),
        ("u", "Optical", 325, 385),
        ("Ks+NB2090", "Infrared", 2079.55, 2100.45),  # two in the beam: the narrower
    ],
)
def test_filter_names_give_their_band(name: str, regime: str, low_nm: float, high_nm: float) -> None:
    band = band_of(name)
    assert band is not None
    assert band.regime == regime
    assert band.em_min == pytest.approx(low_nm * 1e-9)
    assert band.em_max == pytest.approx(high_nm * 1e-9)


def test_unknown_filters_give_no_band() -> None:
    assert band_of("") is None
    assert band_of("76") is None
    assert band_of("GRIS_300V") is None
    assert "em_min" not in Observation.of("GRIS_300V").properties()


def test_times_from_mjd_date_and_exposure() -> None:
    second = 1 / 86400
    assert time_range([{"MJD-OBS": 60000.5, "EXPTIME": 864.0}]) == pytest.approx(
        (60000.5, 60000.51), abs=1e-9
    )
    t_min, t_max = time_range([{"DATE-OBS": "2024-03-01T01:02:03.5"}])  # type: ignore[misc]
    assert t_min == t_max == pytest.approx(60370.0 + 3723.5 * second, abs=1e-3 * second)
    # Primary and chips: the earliest start, the latest end.
    both = time_range([{"MJD-OBS": 60001.0, "MJD-END": 60001.2}, {"MJD-OBS": 60000.9}])
    assert both == pytest.approx((60000.9, 60001.2), abs=1e-9)
    assert time_range([{"DATE-OBS": "2024-03-01T01:02:03+01:00"}]) == pytest.approx(
        (60370.0 + 123 * second,) * 2, abs=1e-3 * second
    )
    assert time_range([{}]) is None
    assert time_range([{"DATE-OBS": "yesterday", "MJD-OBS": "n/a"}]) is None
    assert time_range([{"MJD-OBS": 1.0}]) is None  # not a date of an observation


def test_user_text_cannot_break_the_properties() -> None:
    assert clean_text("Ks\nhips_order = 1") == "Ks hips_order = 1"
    assert clean_text("a\x00\tb\u00e9") == "a b"
    assert len(clean_text("x" * 500)) == 64
    props = Observation.of("Ks\r\nhips_order = 1").properties()
    assert all("\n" not in v and "\r" not in v for v in props.values())


def test_progenitor_is_the_content_hash() -> None:
    digest = "0123456789abcdef" * 4
    assert progenitor_of(f"content/{digest}/g2/") == f"sha256:{digest} (uploaded file)"
    assert progenitor_of("elsewhere/g2/") == ""
