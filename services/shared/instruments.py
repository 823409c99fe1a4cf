"""The fields of view of ESO's instruments, one row per instrument mode, and their outlines on the sky.

Used to size the Gaia pseudo-image around an OB (`bounding_radius_arcsec`) and to draw the field,
the detectors and the slit on a finding chart (`outlines`). The OB's instrument comes from its run
(p2's `instrument`: "FORS2", "HAWKI", ...): `lookup` takes that name and, where the instrument has
several modes, a mode (else its default); `mode_for_template` picks the mode from an OB template's
name.

Geometry lives in the focal plane, in arcsec relative to the pointing (where the OB's target is
put): `u` points East and `v` North when the sky position angle is 0. A sky position angle (PA)
rotates the frame north through east, so the `v` axis points to the PA; a slit's long axis lies
along `v`. Outlines are exact on the sphere: polygon vertices go through the inverse gnomonic
(TAN) projection, so straight edges in the focal plane are great circles on the sky, and circles
are drawn at their true angular radius.

The template parameter an OB sets is mostly a rotator offset, not a PA: each row's `pa` says which
parameter it is and how it maps to the sky PA, as the instrument's manuals define it. Every row
names its sources; what those did not give is said in its `unconfirmed` note, never filled in.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from typing import Literal

from services.shared.errors import Code, ServiceError

__all__ = [
    "InstrumentMode",
    "InvalidGeometry",
    "PositionAngleRule",
    "Shape",
    "SkyPolygon",
    "SlitSet",
    "UnknownInstrument",
    "all_modes",
    "bounding_radius_arcsec",
    "field_outlines",
    "focal_to_sky",
    "ifu_outline",
    "instruments",
    "lookup",
    "mode_for_template",
    "modes",
    "outlines",
    "sky_position_angle",
    "slit_outlines",
]

Point = tuple[float, float]
ShapeKind = Literal["square", "rectangle", "circle", "polygon"]
Role = Literal["field", "detector", "slit", "acquisition", "aperture", "ifu"]

# Vertices drawn for a circle: enough that the chord error stays under 0.1 % of the radius.
CIRCLE_VERTICES = 72
ARCSEC = math.pi / (180.0 * 3600.0)


@dataclasses.dataclass(frozen=True)
class Shape:
    """A region of the focal plane: a polygon (`vertices`, arcsec) or a circle (`centre`, `radius`)."""

    name: str
    kind: ShapeKind
    vertices: tuple[Point, ...] = ()
    centre: Point = (0.0, 0.0)
    radius: float = 0.0

    def shifted(self, du: float, dv: float) -> Shape:
        return dataclasses.replace(
            self,
            vertices=tuple((u + du, v + dv) for u, v in self.vertices),
            centre=(self.centre[0] + du, self.centre[1] + dv),
        )

    @property
    def reach(self) -> float:
        """The largest focal-plane distance (arcsec) of the shape from the pointing."""
        if self.kind == "circle":
            return math.hypot(*self.centre) + self.radius
        return max(math.hypot(u, v) for u, v in self.vertices)

    @property
    def width(self) -> float:
        """Extent along `u` (arcsec)."""
        if self.kind == "circle":
            return 2.0 * self.radius
        us = [u for u, _ in self.vertices]
        return max(us) - min(us)

    @property
    def height(self) -> float:
        """Extent along `v` (arcsec)."""
        if self.kind == "circle":
            return 2.0 * self.radius
        vs = [v for _, v in self.vertices]
        return max(vs) - min(vs)


def rectangle(name: str, width: float, height: float, centre: Point = (0.0, 0.0)) -> Shape:
    """A `width` (along u) x `height` (along v) rectangle, arcsec; a square when they are equal."""
    cu, cv = centre
    hw, hh = width / 2.0, height / 2.0
    return Shape(
        name=name,
        kind="square" if width == height else "rectangle",
        vertices=((cu - hw, cv - hh), (cu + hw, cv - hh), (cu + hw, cv + hh), (cu - hw, cv + hh)),
        centre=centre,
    )


def box(name: str, u0: float, u1: float, v0: float, v1: float) -> Shape:
    """The rectangle between u0..u1 and v0..v1 (arcsec)."""
    return rectangle(name, u1 - u0, v1 - v0, ((u0 + u1) / 2.0, (v0 + v1) / 2.0))


def circle(name: str, radius: float, centre: Point = (0.0, 0.0)) -> Shape:
    return Shape(name=name, kind="circle", centre=centre, radius=radius)


@dataclasses.dataclass(frozen=True)
class SlitSet:
    """The slits of one arm: common length, the offered widths, the template parameter naming them.

    `offsets_arcsec`, when given, holds each width's slit centre along `u` from the field centre
    (FORS2's longslit mask): the target is put on the chosen slit, so the field moves instead.
    `width_range_arcsec` is for continuously adjustable slits (UVES).
    """

    arm: str
    parameter: str | None
    length_arcsec: float
    widths_arcsec: tuple[float, ...]
    default_width_arcsec: float | None
    offsets_arcsec: tuple[float, ...] = ()
    width_range_arcsec: tuple[float, float] | None = None

    def offset_of(self, width: float) -> float:
        if not self.offsets_arcsec:
            return 0.0
        return self.offsets_arcsec[self.widths_arcsec.index(width)]


@dataclasses.dataclass(frozen=True)
class PositionAngleRule:
    """Which OB template parameter orients the instrument and how it maps to the sky PA.

    sky PA = sign * value + offset_deg (degrees, north through east). `parallactic_value` is the
    value that asks for the parallactic angle instead (no fixed PA). `parameter` is None where no
    source reached names one (or the instrument has no orientation to set).
    `confirmed` says whether the mapping was read in an ESO document (see the row's sources).
    """

    parameter: str | None
    sign: int = 1
    offset_deg: float = 0.0
    parallactic_value: float | None = None
    confirmed: bool = False
    note: str = ""

    def sky_pa(self, value: float) -> float | None:
        if self.parallactic_value is not None and value == self.parallactic_value:
            return None
        return (self.sign * value + self.offset_deg) % 360.0


@dataclasses.dataclass(frozen=True)
class InstrumentMode:
    """One row: an instrument mode's field, detectors, slits and position-angle rule, with sources."""

    instrument: str  # p2's `instrument` value
    mode: str
    title: str
    field: Shape
    pa: PositionAngleRule
    source: str
    unconfirmed: str = ""
    detectors: tuple[Shape, ...] = ()
    gaps_arcsec: tuple[float, ...] = ()
    slits: tuple[SlitSet, ...] = ()
    acquisition: Shape | None = None
    apertures: tuple[Shape, ...] = ()
    ifu: Shape | None = None
    ifu_count: int = 0
    templates: tuple[str, ...] = ()  # template-name prefixes of this mode (case-insensitive)

    def slit_set(self, arm: str | None = None) -> SlitSet:
        if not self.slits:
            raise InvalidGeometry(f"{self.instrument} {self.mode} has no slit")
        if arm is None:
            return self.slits[0]
        for slits in self.slits:
            if slits.arm.upper() == arm.upper():
                return slits
        arms = ", ".join(s.arm for s in self.slits)
        raise InvalidGeometry(f"{self.instrument} {self.mode} has no arm {arm!r} (arms: {arms})")


@dataclasses.dataclass(frozen=True)
class SkyPolygon:
    """An outline on the sky: (ra, dec) vertices in degrees, RA in [0, 360); edges are great circles."""

    name: str
    role: Role
    vertices: tuple[tuple[float, float], ...]


class UnknownInstrument(ServiceError):
    """An instrument (or mode) that the table has no row for."""

    def __init__(self, instrument: str, mode: str | None = None) -> None:
        if mode is None:
            message = f"no field of view is known for instrument {instrument!r}"
            super().__init__(Code.INVALID_ARGUMENT, message, instrument=instrument, known=list(instruments()))
        else:
            known = [m.mode for m in modes(instrument)]
            message = f"instrument {instrument!r} has no mode {mode!r}"
            super().__init__(Code.INVALID_ARGUMENT, message, instrument=instrument, mode=mode, known=known)


class InvalidGeometry(ServiceError):
    """A request for a slit, arm or width that the mode does not have."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------------------------------------
# The table. Sources are cited by document number, issue, section and printed page, or by URL.
# ---------------------------------------------------------------------------------------------

_FORS2_MANUAL = "FORS2 User Manual, VLT-MAN-ESO-13100-1543 Issue 107 (2021-07-02)"
_FORS2_PAGE = "https://www.eso.org/sci/facilities/paranal/instruments/fors/inst.html"
_FORS2_PA = PositionAngleRule(
    parameter="TEL.ROT.OFFANGLE",
    sign=-1,
    parallactic_value=9999.0,
    confirmed=True,
    note=(
        "FORS2 User Manual §3.9.3 p.28: 'the rotator offset angle of the telescope is minus the "
        "position angle of the targets on the sky'; 9999 sets the parallactic angle. At rotator 0 "
        "north is up and east left (§3.6 p.25: +RA offsets move the target right, +DEC down)."
    ),
)


def _fors2_chips(scale: float, half_field: float | None) -> tuple[Shape, ...]:
    """FORS2's MIT mosaic for an unbinned scale (arcsec/pixel), clipped to a square field if given.

    Chip 1 (upper, north at rotator 0) has the field centre on its y-pixel ~260; chip 2 sits below
    it, shifted by 480 um = 32 unbinned 15-um pixels (the gap). Each chip is 4096 x 2048 pixels.
    """
    chip1_bottom = -260.0 * scale
    gap = 480.0 / 15.0 * scale
    chip2_top = chip1_bottom - gap
    left, right = -2048 * scale, 2048 * scale
    chip1_top, chip2_bottom = chip1_bottom + 2048 * scale, chip2_top - 2048 * scale
    if half_field is not None:
        left, right = -half_field, half_field
        chip1_top, chip2_bottom = min(half_field, chip1_top), max(-half_field, chip2_bottom)
    return box("CHIP1", left, right, chip1_bottom, chip1_top), box(
        "CHIP2", left, right, chip2_bottom, chip2_top
    )


_FORS2_SR = 0.125  # arcsec per unbinned pixel, SR collimator (Table 2.2)
_FORS2_HR = 0.0632  # HR collimator
_FORS2_LSS_WIDTHS = (2.5, 1.6, 1.0, 0.51, 0.28, 0.40, 0.70, 1.31, 2.0)
_FORS2_LSS_OFFSETS = (45.3, 34.0, 22.6, 11.3, 0.0, -11.3, -22.6, -34.0, -45.3)

_HAWKI_SCALE = 0.106
# The pointing (and centre of rotation) in each quadrant's pixels: HAWK-I User Manual Issue 96,
# Appendix C.1 (p.26). The text reached lost the minus signs; they follow from the quadrant
# layout (Q1 lower left, Q2 lower right, Q3 upper right, Q4 upper left).
_HAWKI_CRPIX = {"Q1": (2163.0, 2164.0), "Q2": (-37.5, 2161.5), "Q3": (-42.0, -28.0), "Q4": (2158.0, -25.5)}


def _hawki_quadrants() -> tuple[Shape, ...]:
    """The four 2048x2048 HAWAII-2RG quadrants, north up and east left (u = -x) at PA 0."""
    quads = []
    for name, (cx, cy) in _HAWKI_CRPIX.items():
        x0, x1 = 0.5 - cx, 2048.5 - cx
        y0, y1 = 0.5 - cy, 2048.5 - cy
        quads.append(box(name, -x1 * _HAWKI_SCALE, -x0 * _HAWKI_SCALE, y0 * _HAWKI_SCALE, y1 * _HAWKI_SCALE))
    return tuple(quads)


def _envelope(name: str, shapes: Iterable[Shape]) -> Shape:
    points = [p for s in shapes for p in s.vertices]
    return box(
        name,
        min(u for u, _ in points),
        max(u for u, _ in points),
        min(v for _, v in points),
        max(v for _, v in points),
    )


_HAWKI_QUADS = _hawki_quadrants()

_XSH_MANUAL = "X-shooter User Manual, VLT-MAN-ESO-14650-4942 Issue P96 (2015-06-24)"
_XSH_PA = PositionAngleRule(
    parameter="TEL.ROT.OFFANGLE",
    sign=1,
    parallactic_value=9999.0,
    confirmed=False,
    note=(
        "TEL.ROT.OFFANGLE of the slit acquisition template XSHOOTER_slt_acq, as F. Vogt's fcmaker "
        "(github.com/fpavogt/fcmaker, fcmaker_xshooter.py) reads it from p2; the X-shooter manual pages "
        "reached do not state its sign. Taken as the slit's sky PA (north through east), as fcmaker "
        "draws it; 9999 means the parallactic angle there too (fcmaker), not read in an ESO document."
    ),
)
_XSH_SLITS = (
    SlitSet("UVB", "INS.OPTI3.NAME", 11.0, (0.5, 0.8, 1.0, 1.3, 1.6, 5.0), 1.0),
    SlitSet("VIS", "INS.OPTI4.NAME", 11.0, (0.4, 0.7, 0.9, 1.2, 1.5, 5.0), 0.9),
    SlitSet("NIR", "INS.OPTI5.NAME", 11.0, (0.4, 0.6, 0.9, 1.2, 1.5, 5.0), 0.9),
)
_XSH_AG = rectangle("A&G camera", 90.0, 90.0)
_XSH_SOURCE = (
    f'{_XSH_MANUAL}: §2.2.4.1 Table 4 p.35 (UVB slits 0.5-5.0" x 11", \'all science slits are 11" '
    "high'); Table 26 p.128 (slit parameters INS.OPTI3/4/5.NAME, defaults 1.0x11, 0.9x11, 0.9x11). "
    "A&G camera 1.5'x1.5': https://www.eso.org/sci/facilities/paranal/instruments/xshooter/overview.html. "
    'IFU 4"x1.8" (sliced into a 12"x0.6" pseudo-slit): X-shooter User Manual §2.2.1.3; Vernet et al. '
    "2011, A&A 536, A105."
)
_XSH_UNCONFIRMED = (
    'VIS (0.4-5.0") and NIR (0.4-5.0") slit widths are the manual\'s VIS/NIR slit tables as remembered, '
    'not re-read in this session (only the UVB table and the 0.9" defaults were; third-party X-shooter '
    "code names 0.7x11 and 0.6x11 slits); sign of "
    "TEL.ROT.OFFANGLE (see pa.note); orientation of the A&G field at PA 0."
)

_MUSE_PA = PositionAngleRule(
    parameter="INS.DROT.POSANG",
    sign=1,
    confirmed=False,
    note=(
        "MUSE's acquisition templates set the derotator's INS.DROT.POSANG (ESO's MUSE FAQ on "
        "rotation offsets names the keyword). Read as the sky PA, north through east, as fcmaker "
        "(fcmaker_muse.py) does; the MUSE User Manual (ESO-261650) was not reachable here."
    ),
)
_MUSE_PAGE = "https://www.eso.org/sci/facilities/paranal/instruments/muse/overview.html"
_MUSE_PAPER = (
    "Bacon et al. 2004, 'The second-generation VLT instrument MUSE', Proc. SPIE 5492, doi:10.1117/12.549009: "
    'a field of 1\'x1\' sampled at 0.2", and a 7.5"x7.5" field sampled at 25 mas'
)

_CRIRES_MANUAL = "CRIRES User Manual, ESO-254264 Issue P109.4 (2021-12-01)"

_ERIS_PA = PositionAngleRule(
    parameter=None,
    note="The ERIS template parameter setting the PA was not found in the sources reached.",
)
_ERIS_SOURCE_NIX = (
    "Pearson et al. 2016, 'NIX, the imager for ERIS', Proc. SPIE 9908, 99083F, Table 1: fields "
    '24"x24" and 53"x53" at 13 and 27 mas/pixel; '
    "https://www.eso.org/sci/facilities/paranal/instruments/eris.html"
)
_ERIS_SOURCE_SPIFFIER = (
    "SPIFFIER is SPIFFI upgraded for ERIS (Davies et al. 2023, A&A, arXiv:2304.02343): SPIFFI "
    'scales 0.25", 0.1", 0.025" give fields 8"x8", 3.2"x3.2", 0.8"x0.8" '
    "(https://www.mpe.mpg.de/SPIFFI/instrument.htm)"
)

_UVES_MANUAL = "UVES User Manual, VLT-MAN-ESO-13200-1825 Issue 110.1 (2022-05-23)"
_UVES_PA = PositionAngleRule(
    parameter=None,
    sign=1,
    confirmed=True,
    note=(
        "UVES User Manual §2.2.1 p.15: with the derotator in 'SKY' mode the slit's PA is 'measured "
        "positive from North over East. For PA = 0 the slit is aligned North-South'; in 'ELEV' mode "
        "the slit follows the atmospheric dispersion (parallactic angle). The template keyword "
        "holding the PA is not named in the manual read."
    ),
)
_UVES_SLITS = (SlitSet("", None, 10.0, (), 1.0, width_range_arcsec=(0.15, 20.0)),)
_UVES_VIEWER = circle("slit viewer", 22.5)

_ESPRESSO_PA = PositionAngleRule(
    parameter=None,
    note="Fibre-fed (round apertures): no position angle is set; fibre B's direction is not modelled.",
)
_ESPRESSO_SOURCE = (
    "https://www.eso.org/sci/facilities/paranal/instruments/espresso/overview.html (modes HR, UHR "
    "1-UT and MR 4-UT); fibre sizes: ESPRESSO User Manual ESO-319963 v1.0 p.11 as cited by fcmaker "
    "(fcmaker_espresso.py), not read here"
)
_ESPRESSO_UNCONFIRMED = (
    'Fibre diameters (1.0" HR, 0.5" UHR, 1.0" MR per UT) and fibre B\'s 7.5" separation come from '
    "fcmaker's notes on the manual, not from an ESO document read here; the acquisition field's size "
    "was not found."
)

_VISIR_MANUAL = "VISIR User Manual, VLT-MAN-ESO-14300-3514 Issue 110.0 (2022-02-24)"
_VISIR_PA = PositionAngleRule(
    parameter="TEL.ROT.OFFANGLE",
    sign=-1,
    confirmed=True,
    note=(
        "VISIR User Manual §4.2.1 pp.24-25: 'A positive value rotates the VISIR field of view clockwise "
        "(from North to West)'; for a slit through two objects at PA, 'TEL.ROT.OFFANGLE = 360 - PA'; the "
        "templates label it 'Rotator on Sky (=-PA on Sky)' (pp.44-48). Imager north up, east left at 0; "
        "the spectrometer's image is mirrored (east right), its slit north-south at 0."
    ),
)
_SPHERE_PA = PositionAngleRule(
    parameter=None,
    note=(
        "SPHERE mostly observes pupil-stabilised (the field rotates during the OB); the field-"
        "stabilised derotator parameter and its sign were not found in the sources reached."
    ),
)
_SPHERE_PAGE = "http://www.eso.org/sci/facilities/paranal/instruments/sphere/inst.html"
_SPHERE_UNCONFIRMED = (
    "Field sizes not read in an ESO document: taken from the AstarVienna/irdb instrument summary "
    '(docs/source/overview_paranal.rst), which lists IRDIS 11"x12.5" and IFS 1.73"; ZIMPOL\'s 3.5"x3.5" '
    "is from ESO's SPHERE page as remembered."
)


def _rows() -> tuple[InstrumentMode, ...]:
    fors2_img = InstrumentMode(
        instrument="FORS2",
        mode="IMG",
        title="FORS2 imaging, standard-resolution collimator (MIT mosaic)",
        field=rectangle("field", 408.0, 408.0),
        detectors=_fors2_chips(_FORS2_SR, 204.0),
        gaps_arcsec=(4.0,),
        pa=_FORS2_PA,
        templates=("FORS2_img",),
        source=(
            f"{_FORS2_MANUAL}: Table 2.2 p.6 (6.8'x6.8' SR, 0.125\"/unbinned pixel) and 'Field vignetting "
            "and detector geometry' p.6 (chips offset 33\" from the axis; field centre on y-pixel ~260 of "
            'chip 1); §2.7.1 Table 2.7 p.19 (chip 2 shifted 480 um = 32 px = 4.0" below chip 1); '
            f"§3.9.3 p.28 (PA); {_FORS2_PAGE}"
        ),
        unconfirmed="The 0.08 deg rotation of chip 2 (Table 2.7) is not modelled.",
    )
    fors2_hr = dataclasses.replace(
        fors2_img,
        mode="HR",
        title="FORS2 imaging, high-resolution collimator",
        field=_envelope("field", _fors2_chips(_FORS2_HR, None)),
        detectors=_fors2_chips(_FORS2_HR, None),
        gaps_arcsec=(round(32 * _FORS2_HR, 2),),
        templates=(),
        source=(
            f"{_FORS2_MANUAL}: Table 2.2 p.6 (4.2'x4.2' HR, 0.0632\"/unbinned pixel; the corners are "
            "vignetted "
            f"by the camera); chip geometry as for SR (p.6, Table 2.7 p.19); §3.9.3 p.28; {_FORS2_PAGE}"
        ),
        unconfirmed=(
            "The HR field is taken as the whole mosaic (the 4.2' is 'for the mosaiced CCDs'), assuming the "
            "optical axis on the same pixel as in SR (y ~260 of chip 1, stated for SR) and centred in x: "
            "4.3'x4.35', offset 17\" south of the pointing. The vignetted corners are not cut."
        ),
    )
    fors2_lss = dataclasses.replace(
        fors2_img,
        mode="LSS",
        title="FORS2 longslit spectroscopy (SR)",
        slits=(SlitSet("", None, 408.0, _FORS2_LSS_WIDTHS, 1.0, offsets_arcsec=_FORS2_LSS_OFFSETS),),
        templates=("FORS2_lss",),
        source=(
            f"{_FORS2_MANUAL}: §2.4.4 p.12 (9 longslits, common length 6.8' in SR) and Table 2.5 p.14 "
            "(widths and offsets from the central 0.28\" slit); the slits lie along the detector's y axis "
            "(§3.6 p.25: "
            "spectroscopic offsets only along y keep targets in the slit), i.e. north-south at rotator 0; "
            f"field and chips as FORS2 IMG; §3.9.3 p.28; {_FORS2_PAGE}"
        ),
        unconfirmed=(
            "Table 2.5's offsets are read as positive to the east at rotator 0 (they carry the opposite "
            "sign to the pixel offsets, and x grows to the west). The template parameter naming the slit "
            "was not read."
        ),
    )
    hawki = InstrumentMode(
        instrument="HAWKI",
        mode="IMG",
        title="HAWK-I imaging (four HAWAII-2RG detectors)",
        field=_envelope("field", _HAWKI_QUADS),
        detectors=_HAWKI_QUADS,
        gaps_arcsec=(round(152.5 * _HAWKI_SCALE, 1), round(141.5 * _HAWKI_SCALE, 1)),
        pa=PositionAngleRule(
            parameter="TEL.ROT.OFFANGLE",
            sign=1,
            confirmed=True,
            note=(
                "HAWK-I Template Reference Guide VLT-MAN-ESO-14800-4076 Issue 95, §4.3.3 Table 15: "
                "TEL.ROT.OFFANGLE is labelled 'Position Angle on Sky (deg)', range -360..360; counted "
                "north through east as ESO defines a PA (and as fcmaker_hawki.py applies it)."
            ),
        ),
        templates=("HAWKI_img",),
        source=(
            "HAWK-I User Manual VLT-MAN-ESO-22200-6281 Issue 1 (2015-03-04) 'HAWK-I in a nutshell': FoV "
            "7.5'x7.5' with a cross-shaped gap of ~15\", 0.106\"/pixel, four 2048x2048 detectors; HAWK-I "
            "User Manual VLT-MAN-ESO-14800-3486 Issue 96 (2015-06-10) Appendix C.1 p.26: pointing in each "
            "quadrant's pixels (Q1 2163,2164; Q2 -37.5,2161.5; Q3 -42,-28; Q4 2158,-25.5); "
            "https://www.eso.org/sci/facilities/paranal/instruments/hawki.html"
        ),
        unconfirmed=(
            "Minus signs of the quadrant reference pixels were lost in the text reached and restored from "
            "the layout (fcmaker_hawki.py has the same values, Q2's y as 2165.5). The quadrants' small "
            "rotations (<0.13 deg) are not modelled. East left at PA 0 is assumed, as for FORS2."
        ),
    )
    muse_wfm = InstrumentMode(
        instrument="MUSE",
        mode="WFM",
        title="MUSE wide-field mode",
        field=rectangle("field", 60.0, 60.0),
        pa=_MUSE_PA,
        templates=("MUSE_wfm",),
        source=f'{_MUSE_PAPER} (wide-field mode); {_MUSE_PAGE}; fcmaker_muse.py draws the corners at ~31"',
        unconfirmed=(
            "MUSE User Manual (ESO-261650) not reachable: the as-built size is the design paper's; the "
            "field's slight tilt on the sky is not modelled."
        ),
    )
    muse_nfm = dataclasses.replace(
        muse_wfm,
        mode="NFM",
        title="MUSE narrow-field mode",
        field=rectangle("field", 7.5, 7.5),
        templates=("MUSE_nfm",),
        source=f"{_MUSE_PAPER} (narrow-field mode); {_MUSE_PAGE}",
        unconfirmed='MUSE User Manual not reachable: its as-built size (7.42"x7.43" as remembered) not read.',
    )
    xsh_slt = InstrumentMode(
        instrument="XSHOOTER",
        mode="SLT",
        title="X-shooter slit spectroscopy (UVB, VIS, NIR arms)",
        field=_XSH_AG,
        acquisition=_XSH_AG,
        slits=_XSH_SLITS,
        pa=_XSH_PA,
        templates=("XSHOOTER_slt",),
        source=_XSH_SOURCE,
        unconfirmed=_XSH_UNCONFIRMED,
    )
    xsh_ifu = dataclasses.replace(
        xsh_slt,
        mode="IFU",
        title="X-shooter integral-field unit",
        slits=(),
        apertures=(rectangle("IFU", 1.8, 4.0),),
        templates=("XSHOOTER_ifu",),
    )
    kmos = InstrumentMode(
        instrument="KMOS",
        mode="IFU",
        title="KMOS: 24 deployable IFUs in a 7.2' patrol field",
        field=circle("patrol field", 216.0),
        ifu=rectangle("IFU", 2.8, 2.8),
        ifu_count=24,
        pa=PositionAngleRule(
            parameter=None,
            sign=1,
            confirmed=False,
            note=(
                "KARMA sets the rotator angle of the OB (KARMA User Manual VLT-MAN-KMO-146606-002, "
                "'Telescope position/rotator angle'); the OB keyword and its relation to the sky PA were not "
                "found. The patrol "
                "field is a circle, so only the IFUs' orientation depends on it."
            ),
        ),
        templates=(),
        source=(
            "https://www.eso.org/sci/facilities/paranal/instruments/kmos/inst.html (24 pick-off arms "
            "patrolling a 7.2' diameter focal plane); Sharples et al. 2014, Proc. SPIE 9147, 91470W §1 "
            '(each arm a 2.8"x2.8" sub-field, 0.2" sampling)'
        ),
        unconfirmed="IFU positions are set per OB by KARMA; `ifu_outline` draws one where it is put.",
    )
    eris_nix27 = InstrumentMode(
        instrument="ERIS",
        mode="NIX_27MAS",
        title="ERIS/NIX imager, 27 mas/pixel",
        field=rectangle("field", 53.0, 53.0),
        pa=_ERIS_PA,
        source=_ERIS_SOURCE_NIX,
        unconfirmed="Design fields from the 2016 paper; the as-built figures were not found.",
    )
    eris_nix13 = dataclasses.replace(
        eris_nix27,
        mode="NIX_13MAS",
        title="ERIS/NIX imager, 13 mas/pixel",
        field=rectangle("field", 24.0, 24.0),
    )
    eris_spiffier = [
        InstrumentMode(
            instrument="ERIS",
            mode=f"SPIFFIER_{scale}MAS",
            title=f"ERIS/SPIFFIER integral field, {scale} mas spaxels",
            field=rectangle("field", size, size),
            pa=_ERIS_PA,
            source=_ERIS_SOURCE_SPIFFIER,
            unconfirmed="SPIFFI's fields, assumed unchanged in SPIFFIER (the ERIS manual was not reachable).",
        )
        for scale, size in ((250, 8.0), (100, 3.2), (25, 0.8))
    ]
    crires = InstrumentMode(
        instrument="CRIRES",
        mode="SPEC",
        title="CRIRES+ slit spectroscopy",
        field=rectangle("slit viewer", 22.8, 33.8, centre=(3.6, -0.2)),
        acquisition=rectangle("slit viewer", 22.8, 33.8, centre=(3.6, -0.2)),
        slits=(SlitSet("", None, 10.0, (0.2, 0.4), 0.2),),
        pa=PositionAngleRule(
            parameter="INS.DROT.POSANG",
            sign=1,
            confirmed=True,
            note=(
                "CRIRES User Manual ESO-323064 v2 §6.3.1 p.61: the position angle 'determines the PA of the "
                "slit when the SKY derotator mode is selected. The PA is counted from North (i.e., PA=0 deg) "
                "via East'; P109.4 manual §6.4.4 p.71: INS.DROT.POSANG.LIST, '0 corresponds to North and 90 "
                "to East'."
            ),
        ),
        templates=("CRIRES_spec",),
        source=(
            f'{_CRIRES_MANUAL} §4.4.1 pp.34-35 (slit viewer 22.8" across x 33.8" along the slit, 37.3 mas '
            'pixels; the slit 3.6" W and 0.2" N of the viewer\'s centre; the 0.4" slit\'s footprint '
            '0.4"x10"); CRIRES User Manual ESO-323064 v2 p.61 (PA); '
            "https://www.eso.org/sci/facilities/paranal/instruments/crires.html"
        ),
        unconfirmed=(
            "The acquisition template's keyword name was cut from the text reached (INS.DROT.POSANG from "
            "the spectro-astrometry template's list keyword); the slit's template parameter was not read. "
            'The viewer offset is given for the 0.2" slit; Fig. 27\'s caption gives the field as 22.8"x30.8" '
            'where the text says 22.8"x33.8".'
        ),
    )
    uves_slit = InstrumentMode(
        instrument="UVES",
        mode="SLIT",
        title="UVES slit spectroscopy (blue and red arms)",
        field=_UVES_VIEWER,
        acquisition=_UVES_VIEWER,
        slits=_UVES_SLITS,
        pa=_UVES_PA,
        templates=("UVES_blue_acq_slit", "UVES_red_acq_slit"),
        source=(
            f'{_UVES_MANUAL}: §2.2.1 p.15-16 (derotator, PA; slit viewer field ~45" diameter); §2.2.2 p.17 '
            '(slit width 0.15-20", deckers up to 30"); Table 3.2 p.33 (recommended slit lengths 3-16" by '
            "cross-disperser and wavelength)"
        ),
        unconfirmed=(
            'The slit length is set per setting by the decker (Table 3.2): 10" is drawn by default. The '
            "slit parameter's name was not read."
        ),
    )
    uves_imsl = dataclasses.replace(
        uves_slit,
        mode="IMSL",
        title="UVES with an image slicer",
        slits=(),
        apertures=(rectangle("IS#1", 2.1, 2.6), rectangle("IS#2", 1.8, 2.0), rectangle("IS#3", 1.5, 2.0)),
        templates=("UVES_blue_acq_imsl", "UVES_red_acq_imsl"),
        source=f'{_UVES_MANUAL}: Table 2.1 p.15 (image slicer apertures 2.1"x2.6", 1.8"x2", 1.5"x2")',
        unconfirmed="The apertures' orientation is not stated in the table: drawn with v along the slit.",
    )
    espresso = [
        InstrumentMode(
            instrument="ESPRESSO",
            mode=mode,
            title=f"ESPRESSO {mode}",
            field=circle("fibre A", diameter / 2.0),
            apertures=(circle("fibre A", diameter / 2.0),),
            pa=_ESPRESSO_PA,
            templates=(f"ESPRESSO_{prefix}",),
            source=_ESPRESSO_SOURCE,
            unconfirmed=_ESPRESSO_UNCONFIRMED,
        )
        for mode, prefix, diameter in (
            ("HR", "singleHR", 1.0),
            ("UHR", "singleUHR", 0.5),
            ("MR", "multiMR", 1.0),
        )
    ]
    visir_img = InstrumentMode(
        instrument="VISIR",
        mode="IMG",
        title="VISIR imaging, small-field objective",
        field=rectangle("field", 38.0, 38.0),
        pa=_VISIR_PA,
        templates=("VISIR_img",),
        source=(
            f'{_VISIR_MANUAL}: §3.1.1 p.10 (AQUARIUS detector, small field 38.0"x38.0" at 0.045"/pixel, '
            "the standard set-up; intermediate field 1'x1' at 0.076\"); §4.2.1 pp.24-25 (PA); "
            "https://www.eso.org/sci/facilities/paranal/instruments/visir.html"
        ),
    )
    visir_if = dataclasses.replace(
        visir_img,
        mode="IMG_IF",
        title="VISIR imaging, intermediate-field objective",
        field=rectangle("field", 60.0, 60.0),
        templates=(),
    )
    visir_spec = dataclasses.replace(
        visir_img,
        mode="SPEC",
        title="VISIR long-slit spectroscopy",
        field=rectangle("spectrometer field", 14.0, 34.0),
        slits=(SlitSet("", "INS.SLIT1.WIDTH", 34.0, (0.4, 0.75, 1.0), None),),
        templates=("VISIR_spec",),
        source=(
            f'{_VISIR_MANUAL}: §3.2.1 p.14 (\'The long slits have a length of 34"\'; widths 0.4", 0.75", '
            '1"); p.17 (the spectrometer images through its wide slit a 14"x34" field); template '
            "tables p.54 (INS.SLIT1.WIDTH 0.40 0.75 1.00, no default); §4.2.1 pp.24-25 (slit north-south "
            "at TEL.ROT.OFFANGLE 0, PA = 360 - TEL.ROT.OFFANGLE)"
        ),
        unconfirmed=(
            "INS.SLIT1.WIDTH has no default: `slit_outlines` needs the OB's width. Issue 95 (2014) gave "
            '32.5" for the long slits; Issue 110 gives 34".'
        ),
    )
    sphere = [
        InstrumentMode(
            instrument="SPHERE",
            mode=mode,
            title=f"SPHERE/{mode}",
            field=rectangle("field", width, height),
            pa=_SPHERE_PA,
            source=_SPHERE_PAGE,
            unconfirmed=_SPHERE_UNCONFIRMED,
        )
        for mode, width, height in (("IRDIS", 11.0, 12.5), ("IFS", 1.73, 1.73), ("ZIMPOL", 3.5, 3.5))
    ]
    return (
        fors2_img,
        fors2_hr,
        fors2_lss,
        hawki,
        muse_wfm,
        muse_nfm,
        xsh_slt,
        xsh_ifu,
        kmos,
        eris_nix27,
        eris_nix13,
        *eris_spiffier,
        crires,
        uves_slit,
        uves_imsl,
        *espresso,
        visir_img,
        visir_if,
        visir_spec,
        *sphere,
    )


_TABLE: tuple[InstrumentMode, ...] = _rows()
_BY_INSTRUMENT: dict[str, tuple[InstrumentMode, ...]] = {}
for _row in _TABLE:
    _BY_INSTRUMENT[_row.instrument] = (*_BY_INSTRUMENT.get(_row.instrument, ()), _row)
# The first row of each instrument is its default mode.

# Spellings p2 and people use besides p2's own ("HAWK-I", "X-shooter", "CRIRES+").
_ALIASES = {"HAWKI": "HAWKI", "XSHOOTER": "XSHOOTER", "CRIRES": "CRIRES", "CRIRESPLUS": "CRIRES"}


def _key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper().replace("+", "PLUS"))


def _instrument_key(instrument: str) -> str:
    key = _key(instrument)
    key = _ALIASES.get(key, key)
    if key not in _BY_INSTRUMENT:
        raise UnknownInstrument(instrument)
    return key


def instruments() -> tuple[str, ...]:
    """The p2 instrument names the table covers."""
    return tuple(_BY_INSTRUMENT)


def all_modes() -> tuple[InstrumentMode, ...]:
    return _TABLE


def modes(instrument: str) -> tuple[InstrumentMode, ...]:
    """An instrument's modes, its default first."""
    return _BY_INSTRUMENT[_instrument_key(instrument)]


def lookup(instrument: str, mode: str | None = None) -> InstrumentMode:
    """The row for p2's instrument name (case and punctuation ignored) and a mode, else its default."""
    rows = modes(instrument)
    if mode is None:
        return rows[0]
    for row in rows:
        if _key(row.mode) == _key(mode):
            return row
    raise UnknownInstrument(instrument, mode)


def mode_for_template(instrument: str, template: str) -> InstrumentMode:
    """The mode an OB template (e.g. "FORS2_lss_acq_fast") belongs to; the default when none claims it."""
    rows = modes(instrument)
    name = template.lower()
    for row in rows:
        if any(name.startswith(prefix.lower()) for prefix in row.templates):
            return row
    return rows[0]


def sky_position_angle(mode: InstrumentMode, value: float) -> float | None:
    """The sky PA (deg, north through east) for the OB's value of the mode's PA parameter.

    None when the value asks for the parallactic angle, which depends on the time of observation.
    """
    return mode.pa.sky_pa(value)


# ---------------------------------------------------------------------------------------------
# Geometry on the sphere.
# ---------------------------------------------------------------------------------------------


def _rotate(points: Iterable[Point], pa_deg: float) -> list[tuple[float, float]]:
    """Focal-plane (u, v) to (east, north) arcsec for a sky PA: v goes to the PA, north through east."""
    theta = math.radians(pa_deg)
    c, s = math.cos(theta), math.sin(theta)
    return [(u * c + v * s, -u * s + v * c) for u, v in points]


def _basis(ra_deg: float, dec_deg: float) -> tuple[tuple[float, float, float], ...]:
    """The unit vector to (ra, dec) and the local east and north unit vectors there.

    At a pole "north" is the direction of the meridian ra + 180 deg, as the limit from below gives.
    """
    a, d = math.radians(ra_deg), math.radians(dec_deg)
    point = (math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d))
    east = (-math.sin(a), math.cos(a), 0.0)
    north = (-math.sin(d) * math.cos(a), -math.sin(d) * math.sin(a), math.cos(d))
    return point, east, north


def _radec(x: float, y: float, z: float) -> tuple[float, float]:
    # atan2 throughout: well conditioned at the poles, where asin is not.
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.atan2(z, math.hypot(x, y)))


def _deproject(ra_deg: float, dec_deg: float, east: float, north: float) -> tuple[float, float]:
    """Inverse gnomonic projection of standard coordinates (arcsec) about (ra, dec).

    The tangent-plane point p0 + xi e + eta n, seen from the sphere's centre.
    """
    p0, e, n = _basis(ra_deg, dec_deg)
    xi, eta = east * ARCSEC, north * ARCSEC
    return _radec(*(p0[i] + xi * e[i] + eta * n[i] for i in range(3)))


def _offset_by(ra_deg: float, dec_deg: float, pa_deg: float, sep_arcsec: float) -> tuple[float, float]:
    """The point `sep` arcsec from (ra, dec) along the great circle towards position angle `pa`."""
    p0, e, n = _basis(ra_deg, dec_deg)
    phi, r = math.radians(pa_deg), sep_arcsec * ARCSEC
    c, s = math.cos(r), math.sin(r)
    return _radec(*(c * p0[i] + s * (math.cos(phi) * n[i] + math.sin(phi) * e[i]) for i in range(3)))


def focal_to_sky(
    ra_deg: float, dec_deg: float, pa_deg: float, points: Iterable[Point]
) -> tuple[tuple[float, float], ...]:
    """Focal-plane points (u, v arcsec) to (ra, dec) degrees for a pointing and a sky PA."""
    _check_pointing(ra_deg, dec_deg, pa_deg)
    return tuple(_deproject(ra_deg, dec_deg, e, n) for e, n in _rotate(points, pa_deg))


def _check_pointing(ra_deg: float, dec_deg: float, pa_deg: float) -> None:
    if not all(math.isfinite(x) for x in (ra_deg, dec_deg, pa_deg)) or not -90.0 <= dec_deg <= 90.0:
        raise InvalidGeometry(f"bad pointing or PA: ra={ra_deg}, dec={dec_deg}, pa={pa_deg}")


def _to_sky(shape: Shape, role: Role, ra_deg: float, dec_deg: float, pa_deg: float) -> SkyPolygon:
    if shape.kind != "circle":
        return SkyPolygon(shape.name, role, focal_to_sky(ra_deg, dec_deg, pa_deg, shape.vertices))
    ((cra, cdec),) = focal_to_sky(ra_deg, dec_deg, pa_deg, [shape.centre])
    step = 360.0 / CIRCLE_VERTICES
    vertices = tuple(_offset_by(cra, cdec, k * step, shape.radius) for k in range(CIRCLE_VERTICES))
    return SkyPolygon(shape.name, role, vertices)


def _reference(
    mode: InstrumentMode, width: float | None, arm: str | None
) -> tuple[SlitSet | None, float, float]:
    """The chosen slit set, its width, and the slit's u offset (where the target is put)."""
    if not mode.slits:
        if width is not None or arm is not None:
            raise InvalidGeometry(f"{mode.instrument} {mode.mode} has no slit")
        return None, 0.0, 0.0
    slits = mode.slit_set(arm)
    chosen = slits.default_width_arcsec if width is None else width
    if chosen is None:
        raise InvalidGeometry(f"{mode.instrument} {mode.mode}: no slit width is documented; give one")
    if slits.widths_arcsec and chosen not in slits.widths_arcsec:
        offered = ", ".join(f"{w:g}" for w in slits.widths_arcsec)
        raise InvalidGeometry(
            f'{mode.instrument} {mode.mode} {slits.arm}: no {chosen:g}" slit (offered: {offered})'
        )
    if (
        slits.width_range_arcsec is not None
        and not slits.width_range_arcsec[0] <= chosen <= slits.width_range_arcsec[1]
    ):
        raise InvalidGeometry(f'{mode.instrument} {mode.mode}: slit width {chosen:g}" out of range')
    if not (chosen > 0 and math.isfinite(chosen)):
        raise InvalidGeometry(f"bad slit width {chosen!r}")
    return slits, chosen, slits.offset_of(chosen) if slits.widths_arcsec else 0.0


def _field_offset(mode: InstrumentMode, width: float | None, arm: str | None) -> float:
    """Where the field centre sits along u relative to the target: only slits at offsets move it."""
    if mode.slits and width is None and not mode.slit_set(arm).offsets_arcsec:
        return 0.0
    return _reference(mode, width, arm)[2]


def _slit_shape(slits: SlitSet, width: float) -> Shape:
    label = f'{slits.arm} {width:g}"x{slits.length_arcsec:g}"'.strip()
    return rectangle(
        label, width, slits.length_arcsec, (slits.offset_of(width) if slits.widths_arcsec else 0.0, 0.0)
    )


def field_outlines(
    mode: InstrumentMode,
    ra_deg: float,
    dec_deg: float,
    pa_deg: float,
    *,
    width: float | None = None,
    arm: str | None = None,
) -> tuple[SkyPolygon, ...]:
    """The field and each detector on the sky for a pointing (the target's position) and a sky PA.

    For a mode with slits at offsets (FORS2 LSS) the target sits on the chosen slit (`width`).
    """
    shift = (-_field_offset(mode, width, arm), 0.0)
    found = [_to_sky(mode.field.shifted(*shift), "field", ra_deg, dec_deg, pa_deg)]
    found += [_to_sky(d.shifted(*shift), "detector", ra_deg, dec_deg, pa_deg) for d in mode.detectors]
    return tuple(found)


def slit_outlines(
    mode: InstrumentMode,
    ra_deg: float,
    dec_deg: float,
    pa_deg: float,
    *,
    width: float | None = None,
    arm: str | None = None,
) -> tuple[SkyPolygon, ...]:
    """The slit on the sky, centred on the pointing, its length along the PA.

    With no `arm`, one slit per arm at each arm's default width (X-shooter draws three coaligned
    slits); with an `arm`, that arm's slit at `width` (default: the arm's default width).
    """
    if not mode.slits:
        return ()
    if arm is None and width is None:
        chosen = []
        for slits in mode.slits:
            _, w, _ = _reference(mode, None, slits.arm or None)
            chosen.append((slits, w))
    else:
        slits_, w, _ = _reference(mode, width, arm)
        assert slits_ is not None
        chosen = [(slits_, w)]
    found = []
    for slits, w in chosen:
        shape = _slit_shape(slits, w)
        found.append(_to_sky(shape.shifted(-shape.centre[0], 0.0), "slit", ra_deg, dec_deg, pa_deg))
    return tuple(found)


def ifu_outline(mode: InstrumentMode, ra_deg: float, dec_deg: float, pa_deg: float) -> SkyPolygon:
    """One deployable IFU (KMOS) centred at (ra, dec), oriented by the sky PA."""
    if mode.ifu is None:
        raise InvalidGeometry(f"{mode.instrument} {mode.mode} has no deployable IFU")
    return _to_sky(mode.ifu, "ifu", ra_deg, dec_deg, pa_deg)


def outlines(
    mode: InstrumentMode,
    ra_deg: float,
    dec_deg: float,
    pa_deg: float,
    *,
    width: float | None = None,
    arm: str | None = None,
) -> tuple[SkyPolygon, ...]:
    """Everything a finding chart draws: field, detectors, acquisition field, apertures, slit(s)."""
    offset = _field_offset(mode, width, arm)
    found = list(field_outlines(mode, ra_deg, dec_deg, pa_deg, width=width, arm=arm))
    if mode.acquisition is not None and mode.acquisition != mode.field:
        found.append(_to_sky(mode.acquisition.shifted(-offset, 0.0), "acquisition", ra_deg, dec_deg, pa_deg))
    found += [_to_sky(a, "aperture", ra_deg, dec_deg, pa_deg) for a in mode.apertures if a != mode.field]
    found += slit_outlines(mode, ra_deg, dec_deg, pa_deg, width=width, arm=arm)
    return tuple(found)


def bounding_radius_arcsec(mode: InstrumentMode) -> float:
    """The angular radius (arcsec) around the pointing that holds everything the mode draws.

    Takes the slit position farthest from the field centre (FORS2 LSS) so that any slit choice fits.
    """
    shapes = [mode.field, *mode.detectors, *mode.apertures]
    if mode.acquisition is not None:
        shapes.append(mode.acquisition)
    if mode.ifu is not None:
        shapes.append(mode.ifu)
    worst_offset = max((abs(o) for s in mode.slits for o in s.offsets_arcsec), default=0.0)
    reach = 0.0
    for slits in mode.slits:
        widest = max(slits.widths_arcsec or (slits.width_range_arcsec or (0.0, 0.0)))
        reach = max(reach, _angle(math.hypot(widest / 2.0, slits.length_arcsec / 2.0)))
    for shape in shapes:
        if shape.kind == "circle":
            # Drawn at its true angular radius around its projected centre.
            reach = max(reach, _angle(math.hypot(*shape.centre) + worst_offset) + shape.radius)
        else:
            reach = max(reach, _angle(shape.reach + worst_offset))
    return reach


def _angle(distance: float) -> float:
    """The angle on the sky (arcsec) of a focal-plane distance (arcsec): its arctangent (gnomonic)."""
    return math.degrees(math.atan(distance * ARCSEC)) * 3600.0


# ---- wavelengths ------------------------------------------------------------------------------------

# What each instrument observes (nm, rounded: the instruments' overview pages), to put the
# archive images of an OB's band first. Not a calibration.
_WAVELENGTHS_NM: dict[str, tuple[float, float]] = {
    "FORS2": (330.0, 1100.0),
    "HAWKI": (850.0, 2500.0),
    "MUSE": (465.0, 930.0),
    "XSHOOTER": (300.0, 2500.0),
    "KMOS": (800.0, 2500.0),
    "ERIS": (1000.0, 5000.0),
    "CRIRES": (950.0, 5300.0),
    "UVES": (300.0, 1100.0),
    "ESPRESSO": (380.0, 790.0),
    "VISIR": (7500.0, 20000.0),
    "SPHERE": (500.0, 2300.0),
}


def wavelengths_nm(instrument: str) -> tuple[float, float] | None:
    """The range (nm) the instrument observes, None when it is not in the table."""
    try:
        key = _instrument_key(instrument)
    except UnknownInstrument:
        return None
    return _WAVELENGTHS_NM.get(key)
