"""The instruments' fields of view: lookup by p2 name, the documented sizes measured on the sky,
the position angle's direction, the pole and RA 0, slits, and the bounding radius."""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from services.shared import instruments
from services.shared.errors import Code, ServiceError
from services.shared.instruments import InstrumentMode, SkyPolygon

P2_NAMES = [
    "FORS2",
    "HAWKI",
    "MUSE",
    "XSHOOTER",
    "KMOS",
    "ERIS",
    "CRIRES",
    "UVES",
    "ESPRESSO",
    "VISIR",
    "SPHERE",
]
POINTINGS = [(150.0, -30.0), (0.01, -5.0), (359.995, 12.0), (10.0, 89.99), (200.0, -89.95), (33.0, 90.0)]


def sky(point: tuple[float, float]) -> SkyCoord:
    return SkyCoord(point[0] * u.deg, point[1] * u.deg)


def sides_arcsec(polygon: SkyPolygon) -> list[float]:
    """The great-circle lengths of the polygon's edges, measured by astropy."""
    vs = polygon.vertices
    return [sky(vs[i]).separation(sky(vs[(i + 1) % len(vs)])).arcsec for i in range(len(vs))]


def coords(vertices: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> SkyCoord:
    return SkyCoord([v[0] for v in vertices] * u.deg, [v[1] for v in vertices] * u.deg)


def mean_angle(degrees: np.ndarray) -> float:
    """The circular mean of angles (deg), in [0, 360)."""
    rad = np.radians(degrees)
    return math.degrees(math.atan2(np.sin(rad).sum(), np.cos(rad).sum())) % 360.0


def named(polygons: tuple[SkyPolygon, ...], name: str) -> SkyPolygon:
    (found,) = [p for p in polygons if p.name == name]
    return found


# --- lookup -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", P2_NAMES)
def test_every_p2_instrument_name_resolves(name: str) -> None:
    row = instruments.lookup(name)
    assert row.instrument == name
    assert row is instruments.modes(name)[0]  # the default mode comes first
    assert name in instruments.instruments()


@pytest.mark.parametrize(
    ("spelling", "instrument"),
    [
        ("HAWK-I", "HAWKI"),
        ("X-shooter", "XSHOOTER"),
        ("CRIRES+", "CRIRES"),
        ("fors2", "FORS2"),
        ("Muse", "MUSE"),
    ],
)
def test_common_spellings_resolve(spelling: str, instrument: str) -> None:
    assert instruments.lookup(spelling).instrument == instrument


def test_modes_and_defaults() -> None:
    assert instruments.lookup("FORS2").mode == "IMG"
    assert instruments.lookup("MUSE").mode == "WFM"
    assert instruments.lookup("MUSE", "nfm").mode == "NFM"
    assert instruments.lookup("XSHOOTER").mode == "SLT"
    assert instruments.lookup("ERIS", "spiffier_100mas").field.width == pytest.approx(3.2)
    assert {m.mode for m in instruments.modes("SPHERE")} == {"IRDIS", "IFS", "ZIMPOL"}


def test_unknown_instrument_and_mode_are_usage_errors() -> None:
    with pytest.raises(instruments.UnknownInstrument) as caught:
        instruments.lookup("NACO")
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "FORS2" in caught.value.details["known"]
    with pytest.raises(instruments.UnknownInstrument) as caught:
        instruments.lookup("MUSE", "XFM")
    assert caught.value.details["known"] == ["WFM", "NFM"]


@pytest.mark.parametrize(
    ("instrument", "template", "mode"),
    [
        ("FORS2", "FORS2_lss_acq_fast", "LSS"),
        ("FORS2", "FORS2_img_acq", "IMG"),
        ("XSHOOTER", "XSHOOTER_ifu_acq", "IFU"),
        ("MUSE", "MUSE_nfm_acq_LGS", "NFM"),
        ("ESPRESSO", "ESPRESSO_singleUHR_acq_obj", "UHR"),
        ("UVES", "UVES_red_acq_imsl", "IMSL"),
        ("HAWKI", "HAWKI_img_acq_MoveToPixel", "IMG"),
        ("KMOS", "something_else", "IFU"),
    ],
)
def test_mode_from_template_name(instrument: str, template: str, mode: str) -> None:
    assert instruments.mode_for_template(instrument, template).mode == mode


# --- every row is sourced ---------------------------------------------------------------------


@pytest.mark.parametrize("row", instruments.all_modes(), ids=lambda r: f"{r.instrument}-{r.mode}")
def test_every_row_has_a_source_and_a_pa_rule(row: InstrumentMode) -> None:
    assert len(row.source) > 30
    assert any(mark in row.source for mark in ("http", "VLT-MAN", "ESO-", "SPIE", "A&A"))
    assert row.title
    # What the manuals did not give is said, not silently filled in.
    assert row.pa.note
    if row.pa.parameter is None or not row.pa.confirmed:
        assert row.pa.note
    assert row.pa.sign in (1, -1)


def test_rows_name_the_pa_parameters_the_manuals_give() -> None:
    fors2 = instruments.lookup("FORS2")
    assert fors2.pa.parameter == "TEL.ROT.OFFANGLE" and fors2.pa.confirmed
    assert instruments.sky_position_angle(fors2, 30.0) == pytest.approx(330.0)  # PA = -OFFANGLE
    assert instruments.sky_position_angle(fors2, 9999.0) is None  # parallactic angle
    assert instruments.sky_position_angle(instruments.lookup("HAWKI"), 30.0) == pytest.approx(30.0)
    crires = instruments.lookup("CRIRES")
    assert crires.pa.parameter == "INS.DROT.POSANG" and crires.pa.confirmed
    assert instruments.sky_position_angle(crires, 370.0) == pytest.approx(10.0)
    visir = instruments.lookup("VISIR")
    assert visir.pa.confirmed
    assert instruments.sky_position_angle(visir, 300.0) == pytest.approx(60.0)  # OFFANGLE = 360 - PA


# --- the documented sizes, measured on the sky -------------------------------------------------


@pytest.mark.parametrize("pointing", POINTINGS)
def test_hawki_four_detectors_with_their_gaps(pointing: tuple[float, float]) -> None:
    ra, dec = pointing
    found = instruments.field_outlines(instruments.lookup("HAWKI"), ra, dec, 0.0)
    detectors = {p.name: p for p in found if p.role == "detector"}
    assert sorted(detectors) == ["Q1", "Q2", "Q3", "Q4"]
    for quadrant in detectors.values():
        for side in sides_arcsec(quadrant):
            assert side == pytest.approx(2048 * 0.106, abs=0.01)
    field = named(found, "field")
    for side in sides_arcsec(field):
        assert side == pytest.approx(450.0, abs=1.5)  # 7.5'
    # Vertices go (u0,v0), (u1,v0), (u1,v1), (u0,v1); Q1 is east of Q2, Q4 north of Q1.
    q1, q2, q4 = detectors["Q1"].vertices, detectors["Q2"].vertices, detectors["Q4"].vertices
    east_west_gap = sky(q1[0]).separation(sky(q2[1])).arcsec
    north_south_gap = sky(q1[3]).separation(sky(q4[0])).arcsec
    assert 14.0 < east_west_gap < 17.0
    assert 14.0 < north_south_gap < 17.0
    assert north_south_gap == pytest.approx(15.0, abs=0.1)


def test_fors2_high_resolution_field_is_the_mosaic() -> None:
    found = instruments.field_outlines(instruments.lookup("FORS2", "HR"), 150.0, -30.0, 0.0)
    for side in sides_arcsec(found[0]):
        assert side == pytest.approx(4.2 * 60, abs=10.0)  # "4.2'x4.2' ... for the mosaiced CCDs"
    chip1, chip2 = named(found, "CHIP1"), named(found, "CHIP2")
    assert sky(chip1.vertices[0]).separation(sky(chip2.vertices[3])).arcsec == pytest.approx(
        32 * 0.0632, abs=1e-3
    )


@pytest.mark.parametrize("pointing", POINTINGS)
def test_fors2_two_ccds_with_their_gap(pointing: tuple[float, float]) -> None:
    ra, dec = pointing
    found = instruments.field_outlines(instruments.lookup("FORS2"), ra, dec, 0.0)
    for side in sides_arcsec(named(found, "field")):
        assert side == pytest.approx(6.8 * 60, abs=0.01)
    chip1, chip2 = named(found, "CHIP1"), named(found, "CHIP2")
    # Chip 1's lower edge, chip 2's upper edge: 480 um = 32 unbinned pixels = 4.0".
    assert sky(chip1.vertices[0]).separation(sky(chip2.vertices[3])).arcsec == pytest.approx(4.0, abs=1e-3)
    assert sky(chip1.vertices[1]).separation(sky(chip2.vertices[2])).arcsec == pytest.approx(4.0, abs=1e-3)
    # The field centre lies on chip 1, 32.5" (260 unbinned pixels) above its lower edge.
    centre = sky(pointing)
    lower_edge_middle = instruments.focal_to_sky(ra, dec, 0.0, [(0.0, -32.5)])[0]
    assert centre.separation(sky(lower_edge_middle)).arcsec == pytest.approx(32.5, abs=1e-3)


@pytest.mark.parametrize(
    ("instrument", "mode", "width", "height"),
    [
        ("MUSE", "WFM", 60.0, 60.0),
        ("MUSE", "NFM", 7.5, 7.5),
        ("XSHOOTER", "SLT", 90.0, 90.0),
        ("CRIRES", "SPEC", 22.8, 33.8),
        ("SPHERE", "IRDIS", 11.0, 12.5),
        ("VISIR", "IMG", 38.0, 38.0),
        ("VISIR", "SPEC", 14.0, 34.0),
        ("ERIS", "SPIFFIER_250MAS", 8.0, 8.0),
    ],
)
def test_rectangular_fields_have_their_documented_sizes(
    instrument: str, mode: str, width: float, height: float
) -> None:
    field = instruments.field_outlines(instruments.lookup(instrument, mode), 83.8, -5.4, 0.0)[0]
    assert field.role == "field"
    w0, h0, w1, h1 = sides_arcsec(field)
    assert (w0, w1) == pytest.approx((width, width), rel=1e-6)
    assert (h0, h1) == pytest.approx((height, height), rel=1e-6)


@pytest.mark.parametrize("pointing", POINTINGS)
def test_kmos_patrol_field_and_ifus(pointing: tuple[float, float]) -> None:
    kmos = instruments.lookup("KMOS")
    assert kmos.ifu_count == 24
    (patrol,) = instruments.field_outlines(kmos, *pointing, 0.0)
    distances = sky(pointing).separation(coords(patrol.vertices)).arcsec
    assert distances == pytest.approx(np.full(len(distances), 3.6 * 60), abs=1e-6)  # 7.2' across
    ifu = instruments.ifu_outline(kmos, *pointing, 30.0)
    assert sides_arcsec(ifu) == pytest.approx([2.8] * 4, abs=1e-6)


# --- the position angle turns the field north through east ------------------------------------


@pytest.mark.parametrize("pa", [0.0, 30.0, 90.0, 135.0, 270.0])
@pytest.mark.parametrize("pointing", POINTINGS[:3])
def test_pa_turns_the_outline_north_through_east(pa: float, pointing: tuple[float, float]) -> None:
    ra, dec = pointing
    centre = sky(pointing)
    up, right = instruments.focal_to_sky(ra, dec, pa, [(0.0, 100.0), (100.0, 0.0)])
    # The focal plane's v axis points to the PA; its u axis (east at PA 0) to PA + 90.
    assert centre.position_angle(sky(up)).deg == pytest.approx(pa % 360, abs=1e-6)
    assert centre.position_angle(sky(right)).deg == pytest.approx((pa + 90) % 360, abs=1e-6)


def test_fors2_chip1_turns_from_north_to_east() -> None:
    fors2 = instruments.lookup("FORS2")
    centre = sky((150.0, -30.0))
    for pa, expected in [(0.0, 0.0), (90.0, 90.0)]:
        chip1 = named(instruments.field_outlines(fors2, 150.0, -30.0, pa), "CHIP1")
        # Chip 1's far edge (its vertices 2 and 3) lies towards the PA.
        far = coords(chip1.vertices[2:4])
        assert mean_angle(centre.position_angle(far).deg) == pytest.approx(expected, abs=1e-6)
    # An OB's TEL.ROT.OFFANGLE of -90 is sky PA 90 for FORS2.
    assert instruments.sky_position_angle(fors2, -90.0) == pytest.approx(90.0)


# --- exact on the sphere: near the pole and across RA 0 ---------------------------------------


@pytest.mark.parametrize("pointing", [p for p in POINTINGS if abs(p[1]) < 90.0])
@pytest.mark.parametrize("pa", [0.0, 37.0])
def test_outlines_are_the_gnomonic_projection(pointing: tuple[float, float], pa: float) -> None:
    ra, dec = pointing
    theta = math.radians(pa)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [1.0, 1.0]  # FITS pixel 1 is astropy's pixel 0
    # Pixels are focal-plane arcsec (u, v): east = u cos + v sin, north = -u sin + v cos.
    wcs.wcs.cd = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]) / 3600.0
    points = [(-204.0, -204.0), (204.0, -32.5), (3.6, -0.2), (0.0, 216.0), (-229.0, 229.0)]
    ours = instruments.focal_to_sky(ra, dec, pa, points)
    theirs = wcs.pixel_to_world([p[0] for p in points], [p[1] for p in points])
    for (ra1, dec1), expected in zip(ours, theirs, strict=True):
        assert sky((ra1, dec1)).separation(expected).arcsec < 1e-6
        assert 0.0 <= ra1 < 360.0


def test_at_the_pole_itself_north_is_the_limit_from_below() -> None:
    # At dec = 90 every direction is south: north is taken as the limit along the meridian ra.
    points = [(-204.0, -204.0), (204.0, -32.5), (0.0, 216.0)]
    at_pole = instruments.focal_to_sky(33.0, 90.0, 20.0, points)
    below = instruments.focal_to_sky(33.0, 90.0 - 1e-9, 20.0, points)
    for a, b in zip(at_pole, below, strict=True):
        assert sky(a).separation(sky(b)).arcsec < 1e-3


def test_across_ra_zero_the_outline_keeps_its_size() -> None:
    found = instruments.field_outlines(instruments.lookup("FORS2"), 0.01, -5.0, 0.0)
    field = named(found, "field")
    ras = [v[0] for v in field.vertices]
    assert any(r > 359.0 for r in ras) and any(r < 1.0 for r in ras)
    assert all(0.0 <= r < 360.0 for r in ras)
    assert sides_arcsec(field) == pytest.approx([408.0] * 4, abs=1e-3)


@pytest.mark.parametrize("dec", [89.99, 90.0, -89.999])
def test_at_the_pole_the_outline_keeps_its_size(dec: float) -> None:
    found = instruments.field_outlines(instruments.lookup("HAWKI"), 120.0, dec, 45.0)
    for polygon in found:
        assert all(-90.0 <= d <= 90.0 for _, d in polygon.vertices)
    for side in sides_arcsec(named(found, "Q3")):
        assert side == pytest.approx(2048 * 0.106, abs=0.01)
    # The pole itself may lie inside the field: the edges are still great circles of the right length.
    for side in sides_arcsec(named(found, "field")):
        assert side == pytest.approx(450.0, abs=1.5)


def test_bad_pointings_are_refused() -> None:
    with pytest.raises(ServiceError):
        instruments.field_outlines(instruments.lookup("MUSE"), 10.0, 91.0, 0.0)
    with pytest.raises(ServiceError):
        instruments.field_outlines(instruments.lookup("MUSE"), math.nan, 0.0, 0.0)


# --- slits --------------------------------------------------------------------------------------


def test_xshooter_slits_of_each_arm() -> None:
    xsh = instruments.lookup("XSHOOTER")
    slits = instruments.slit_outlines(xsh, 150.0, -30.0, 0.0)
    assert [s.name for s in slits] == ['UVB 1"x11"', 'VIS 0.9"x11"', 'NIR 0.9"x11"']
    for slit, width in zip(slits, (1.0, 0.9, 0.9), strict=True):
        assert sides_arcsec(slit) == pytest.approx([width, 11.0, width, 11.0], abs=1e-6)
    (wide,) = instruments.slit_outlines(xsh, 150.0, -30.0, 0.0, arm="NIR", width=5.0)
    assert sides_arcsec(wide) == pytest.approx([5.0, 11.0, 5.0, 11.0], abs=1e-6)
    assert xsh.slit_set("UVB").widths_arcsec == (0.5, 0.8, 1.0, 1.3, 1.6, 5.0)
    assert xsh.slit_set("UVB").parameter == "INS.OPTI3.NAME"
    with pytest.raises(ServiceError):
        instruments.slit_outlines(xsh, 150.0, -30.0, 0.0, arm="UVB", width=0.9)  # UVB has no 0.9"
    with pytest.raises(ServiceError):
        instruments.slit_outlines(xsh, 150.0, -30.0, 0.0, arm="MIR")


@pytest.mark.parametrize("pa", [0.0, 60.0, 90.0])
def test_slit_length_lies_along_the_pa(pa: float) -> None:
    (slit,) = instruments.slit_outlines(instruments.lookup("CRIRES"), 150.0, -30.0, pa, width=0.4)
    assert sides_arcsec(slit) == pytest.approx([0.4, 10.0, 0.4, 10.0], abs=1e-6)
    angles = sky((150.0, -30.0)).position_angle(coords(slit.vertices[2:4])).deg
    assert mean_angle(angles) == pytest.approx(pa, abs=1e-3)


def test_fors2_longslits_and_the_field_moving_with_the_chosen_slit() -> None:
    lss = instruments.lookup("FORS2", "LSS")
    (central,) = instruments.slit_outlines(lss, 150.0, -30.0, 0.0)
    assert sides_arcsec(central) == pytest.approx([1.0, 408.0, 1.0, 408.0], abs=1e-3)
    (narrow,) = instruments.slit_outlines(lss, 150.0, -30.0, 0.0, width=0.28)
    assert sides_arcsec(narrow)[0] == pytest.approx(0.28, abs=1e-6)
    # The target is put on the 2.5" slit, 45.3" east of the field centre: the field moves west.
    field = named(instruments.field_outlines(lss, 150.0, -30.0, 0.0, width=2.5), "field")
    corners = coords(field.vertices)
    middle = SkyCoord(mean_angle(corners.ra.deg) * u.deg, corners.dec.mean())
    assert sky((150.0, -30.0)).separation(middle).arcsec == pytest.approx(45.3, abs=0.05)
    assert sky((150.0, -30.0)).position_angle(middle).deg == pytest.approx(270.0, abs=0.1)
    with pytest.raises(ServiceError):
        instruments.slit_outlines(lss, 150.0, -30.0, 0.0, width=0.3)


def test_slits_without_documented_widths_take_the_callers() -> None:
    visir = instruments.lookup("VISIR", "SPEC")
    with pytest.raises(ServiceError):
        instruments.outlines(visir, 150.0, -30.0, 0.0)
    (slit,) = instruments.slit_outlines(visir, 150.0, -30.0, 0.0, width=0.75)
    assert sides_arcsec(slit) == pytest.approx([0.75, 34.0, 0.75, 34.0], abs=1e-6)
    with pytest.raises(ServiceError):
        instruments.slit_outlines(visir, 150.0, -30.0, 0.0, width=0.5)  # offered: 0.4, 0.75, 1.0
    uves = instruments.lookup("UVES")
    (slit,) = instruments.slit_outlines(uves, 150.0, -30.0, 0.0, width=0.7)
    assert sides_arcsec(slit)[1] == pytest.approx(10.0, abs=1e-6)
    with pytest.raises(ServiceError):
        instruments.slit_outlines(uves, 150.0, -30.0, 0.0, width=25.0)


# --- every mode draws, inside its bounding radius -------------------------------------------


@pytest.mark.parametrize("row", instruments.all_modes(), ids=lambda r: f"{r.instrument}-{r.mode}")
def test_everything_drawn_lies_inside_the_bounding_radius(row: InstrumentMode) -> None:
    radius = instruments.bounding_radius_arcsec(row)
    assert radius >= max(row.field.width, row.field.height) / 2.0 - 1e-6
    widths: list[float | None] = [None]
    if row.slits and row.slits[0].default_width_arcsec is None:
        widths = [1.0]  # VISIR: no default width
    elif row.slits and row.slits[0].offsets_arcsec:
        widths = list(row.slits[0].widths_arcsec)  # FORS2 LSS: every slit position
    for pointing in POINTINGS:
        for pa in (0.0, 45.0, 200.0):
            for width in widths:
                drawn = instruments.outlines(row, *pointing, pa, width=width)
                assert drawn and drawn[0].role == "field"
                for polygon in drawn:
                    assert sky(pointing).separation(coords(polygon.vertices)).arcsec.max() <= radius + 1e-6
