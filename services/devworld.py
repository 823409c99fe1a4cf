"""The demo world of `make run`: a few p2 users, two runs and their OBs, and files to upload.

It mirrors the seed's situation of DESIGN.md ("Who may list, use and display an
image"): Bob uploads for an OB of run A, whose PI Alice did not upload; Carol is
a delegate of runs A and B (the seed's D1); Dave is a delegate of run B only (the
seed's D2, the delegate of a delegate); Erin is a stranger. The launcher
(services/devrun.py) loads it into the development p2 (services/devp2.py) and the
catalog, and prints it. DEVELOPMENT ONLY: no service imports this.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from pathlib import Path
from typing import Any

INSTANCE = "p2"  # the p2 instance name the gateway namespaces ids with
PASSWORD = "demo"  # every demo user's password at the development p2's login


@dataclasses.dataclass(frozen=True)
class DemoUser:
    name: str  # the p2 username, also what `python -m services.devrun token --user` takes
    user_id: int  # p2's numeric userId
    first: str
    last: str
    role: str

    @property
    def subject(self) -> str:
        """The identity the suite knows the user by (a JWT's `sub`, the catalog's user id)."""
        return f"{INSTANCE}:{self.user_id}"


@dataclasses.dataclass(frozen=True)
class DemoRun:
    run_id: int  # p2's runId
    prog_id: str
    pi: str
    delegates: tuple[str, ...]
    instrument: str
    telescope: str

    @property
    def catalog_id(self) -> str:
        return f"{INSTANCE}:{self.run_id}"


@dataclasses.dataclass(frozen=True)
class DemoOb:
    ob_id: int
    run: DemoRun
    name: str
    target: tuple[float, float]  # degrees, ICRS
    boa: tuple[float, float] | None  # the BOA reference star, when the OB has one
    note: str

    def p2_coordinates(self) -> tuple[str, str, tuple[float, float] | None]:
        """How p2 holds it: with a blind offset, the OB's coordinates are the BOA star's and
        the acquisition template carries the offset (arcsec) to the target."""
        if self.boa is None:
            return (*sexagesimal(*self.target), None)
        east = (self.target[0] - self.boa[0]) * math.cos(math.radians(self.boa[1])) * 3600.0
        north = (self.target[1] - self.boa[1]) * 3600.0
        return (*sexagesimal(*self.boa), (round(east, 3), round(north, 3)))


USERS = (
    DemoUser("alice", 52001, "Alice", "Lindqvist", "PI of run A (she does not upload)"),
    DemoUser("bob", 52002, "Bob", "Okafor", "delegate of run A; uploads the images"),
    DemoUser("carol", 52003, "Carol", "Mendes", "delegate of runs A and B (the seed's D1)"),
    DemoUser("dave", 52004, "Dave", "Kowalski", "delegate of run B only (the seed's D2)"),
    DemoUser("frank", 52006, "Frank", "Ibarra", "PI of run B"),
    DemoUser("erin", 52005, "Erin", "Novak", "a stranger: no runs"),
)
BY_NAME = {u.name: u for u in USERS}

RUN_A = DemoRun(60925201, "60.A-9252(A)", "alice", ("bob", "carol"), "FORS2", "UT1")
RUN_B = DemoRun(60925302, "60.A-9253(B)", "frank", ("carol", "dave"), "HAWKI", "UT4")
RUNS = (RUN_A, RUN_B)

# The demo files' fields (see write_files): the single image covers (150, 2) out to
# 0.07 deg; the paw-print's four chips lie around (150.5, 2.5) with 15" gaps between them.
FIELD = (150.0, 2.0)
PAW_CENTRE = (150.5, 2.5)
PAW_CHIP_PX, PAW_SCALE, PAW_GAP_ARCSEC = 512, 0.4, 15.0
_CHIP_DEG = PAW_CHIP_PX * PAW_SCALE / 3600.0
_CHIP_CENTRE_OFFSET = (_CHIP_DEG + PAW_GAP_ARCSEC / 3600.0) / 2  # from the paw-print's centre


def paw_chip_centre(east: int, north: int) -> tuple[float, float]:
    dec = PAW_CENTRE[1] + north * _CHIP_CENTRE_OFFSET
    ra = PAW_CENTRE[0] + east * _CHIP_CENTRE_OFFSET / math.cos(math.radians(PAW_CENTRE[1]))
    return ra, dec


OBS = (
    DemoOb(1001, RUN_A, "NGC 3115 field", FIELD, None, "no BOA star; sample.fits covers it"),
    DemoOb(
        1002,
        RUN_A,
        "Faint QSO, blind offset",
        (150.012, 2.006),
        (150.004, 1.998),
        "a BOA star; sample.fits covers both",
    ),
    DemoOb(1003, RUN_A, "Empty field", (210.0, -30.0), None, "no image covers it"),
    DemoOb(2001, RUN_B, "HAWK-I field", paw_chip_centre(1, 1), None, "on chip 4 of pawprint.fits"),
    DemoOb(
        2002, RUN_B, "HAWK-I gap", (PAW_CENTRE[0], PAW_CENTRE[1]), None, "in the chip gap of pawprint.fits"
    ),
    DemoOb(2003, RUN_B, "NGC 3115 field (run B)", FIELD, None, "the field of OB 1001, in run B"),
)
BY_OB = {ob.ob_id: ob for ob in OBS}


def sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    """p2's coordinate strings: "10:00:00.000", "+02:00:00.00"."""
    s = round(ra / 15.0 * 3600.0, 3)
    h, rem = divmod(s, 3600.0)
    m, sec = divmod(rem, 60.0)
    sign = "-" if dec < 0 else "+"
    d_s = round(abs(dec) * 3600.0, 2)
    d, drem = divmod(d_s, 3600.0)
    dm, dsec = divmod(drem, 60.0)
    return f"{int(h):02d}:{int(m):02d}:{sec:06.3f}", f"{sign}{int(d):02d}:{int(dm):02d}:{dsec:05.2f}"


def p2_tokens() -> dict[str, str]:
    """A fresh p2 access token per user for this launch, shaped as p2's may be (with "+",
    "/" and "="), which p2api sends unencoded in its queries."""
    return {u.name: f"{u.name}+{secrets.token_urlsafe(12)}/{secrets.token_hex(4)}=" for u in USERS}


def load_p2(p2: Any, tokens: dict[str, str]) -> None:
    """The world into a development p2 (services.devp2.DevP2)."""
    for u in USERS:
        p2.add_user(u.user_id, tokens[u.name], u.first, u.last, username=u.name, password=PASSWORD)
    for run in RUNS:
        pi = BY_NAME[run.pi]
        p2.add_run(
            run.run_id,
            run.prog_id,
            pi.user_id,
            tuple(BY_NAME[d].user_id for d in run.delegates),
            instrument=run.instrument,
            telescope=run.telescope,
            pi_name=(pi.first, pi.last),
        )
    for ob in OBS:
        ra, dec, offset = ob.p2_coordinates()
        p2.add_ob(ob.ob_id, ob.run.run_id, ra, dec, name=ob.name, blind_offset=offset)


def write_files(folder: Path) -> dict[str, Path]:
    """The demo's files: a single image with a filter, the same without one, a paw-print."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "sample": folder / "sample.fits",
        "nofilter": folder / "nofilter.fits",
        "pawprint": folder / "pawprint.fits",
    }
    if not out["sample"].exists():
        fits.PrimaryHDU(*sky(FIELD, 1024, 0.5, seed=0, filter_name="R", name="NGC 3115 field")).writeto(
            out["sample"]
        )
    if not out["nofilter"].exists():
        fits.PrimaryHDU(*sky(FIELD, 512, 0.5, seed=1, filter_name="", name="no filter")).writeto(
            out["nofilter"]
        )
    if not out["pawprint"].exists():
        hdus: list[Any] = [
            fits.PrimaryHDU(header=fits.Header([("FILTER", "Ks"), ("OBJECT", "HAWK-I paw-print")]))
        ]
        for n, (east, north) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1)), start=1):
            data, header = sky(paw_chip_centre(east, north), PAW_CHIP_PX, PAW_SCALE, seed=10 + n)
            header["EXTNAME"] = f"CHIP{n}.INT1"
            hdus.append(fits.ImageHDU(data, header))
        fits.HDUList(hdus).writeto(out["pawprint"])
    return out


def write_field(
    path: Path,
    centre: tuple[float, float],
    size: int,
    scale_arcsec: float,
    filter_name: str = "",
    name: str = "",
    seed: int = 0,
) -> Path:
    """A single-image FITS file of `sky` (`seed` draws another sky)."""
    from astropy.io import fits

    fits.PrimaryHDU(*sky(centre, size, scale_arcsec, seed=seed, filter_name=filter_name, name=name)).writeto(
        path, overwrite=True
    )
    return path


def sky(
    centre: tuple[float, float],
    size: int,
    scale_arcsec: float,
    seed: int,
    filter_name: str = "",
    name: str = "",
) -> tuple[Any, Any]:
    """A TAN image of stars on a noisy sky, centred on `centre`."""
    import numpy as np
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(centre)
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cd = np.array([[-scale_arcsec / 3600, 0.0], [0.0, scale_arcsec / 3600]])
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 5.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(size // 12):
        x, y, f = rng.uniform(0, size), rng.uniform(0, size), rng.lognormal(6.0, 1.2)
        data += (f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)).astype(np.float32)
    header = w.to_header()
    if filter_name:
        header["FILTER"] = filter_name
    if name:
        header["OBJECT"] = name
    return data, header


def describe(tokens: dict[str, str]) -> str:
    """The world as the launcher prints it."""
    lines = ["Demo world (every user's p2 password: demo):"]
    for u in USERS:
        lines.append(f"  {u.name:<6} {u.subject:<9} {u.first} {u.last}: {u.role}")
        lines.append(f"         p2 token {tokens[u.name]}")
    for run in RUNS:
        members = ", ".join((f"PI {run.pi}", *run.delegates))
        lines.append(f"  run {run.catalog_id} = {run.prog_id} ({run.instrument}): {members}")
    for ob in OBS:
        boa = f", BOA star {ob.boa[0]:.4f} {ob.boa[1]:+.4f}" if ob.boa else ""
        lines.append(
            f"  OB {ob.ob_id} ({ob.run.prog_id}) {ob.name!r}: target {ob.target[0]:.4f} {ob.target[1]:+.4f}"
            f"{boa}; {ob.note}"
        )
    return "\n".join(lines)


def gaia_catalogue() -> Any:
    """The development TAP service's Gaia-like table: sources around each demo field
    (`services.devtap.demo_table`), the same every time."""
    from astropy.table import vstack

    from services.devtap import demo_table

    fields = [(FIELD, 900.0, 3000), (PAW_CENTRE, 900.0, 3000), ((210.0, -30.0), 600.0, 1000)]
    return vstack([demo_table(ra, dec, radius, count) for (ra, dec), radius, count in fields])
