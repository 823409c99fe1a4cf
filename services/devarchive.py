"""Development ESO archive: ObsCore rows and archive-like files on loopback, for `make run`
and the tests.

ESO's Science Archive cannot be reached here. This DEVELOPMENT SERVER is the
development TAP service (`services.devtap.DevTap`, which evaluates the
queries it gets, here `CONTAINS(POINT(...), s_region)` on each row's polygon,
`dataproduct_type = 'image'` and the release date) over an `ivoa.ObsCore`
table with ESO's own columns (`dp_id`, `filter`, `abmaglim`) beside the
standard ones, and a file endpoint `GET /files/<dp_id>` as the archive's
data portal has one. `demo_archive()` makes real small archive-like files for
the demo fields (`services.devworld`): a FORS2 product (ADP) whose primary
HDU is the image, with ERR and CONF extensions; a raw HAWK-I MEF (a header
only primary, four chips with 15" gaps); and rows that must not be offered:
a proprietary image (released next year) and one of another field.

Faults for the tests: `file_status` (an HTTP status the file endpoint
answers), `file_delay_s` (seconds before each MB), `redirect_to` (a URL the
file endpoint redirects to); `file_requests` records the DP ids asked for. It
is never part of a service: services reach the archive through its
configured URLs only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
from typing import Any

import numpy as np
from aiohttp import web
from astropy.io import fits
from astropy.table import Table

from services import devworld
from services.devtap import DevTap

MJD_EPOCH = dt.datetime(1858, 11, 17, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class ArchiveFile:
    """One archive product: its ObsCore row's values and its bytes."""

    dp_id: str
    instrument: str
    filter: str
    observed: dt.datetime
    released: dt.datetime
    depth_abmag: float
    em_nm: tuple[float, float]
    corners: tuple[tuple[float, float], ...]
    data: bytes = b""


def _mjd(when: dt.datetime) -> float:
    return (when - MJD_EPOCH).total_seconds() / 86400.0


def stc_polygon(corners: tuple[tuple[float, float], ...]) -> str:
    return "POLYGON ICRS " + " ".join(f"{ra:.7f} {dec:.7f}" for ra, dec in corners)


def obscore_table(files: list[ArchiveFile]) -> Table:
    return Table(
        {
            "dp_id": [f.dp_id for f in files],
            "dataproduct_type": ["image"] * len(files),
            "instrument_name": [f.instrument for f in files],
            "filter": [f.filter for f in files],
            "t_min": [_mjd(f.observed) for f in files],
            "obs_release_date": [f.released.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z" for f in files],
            "abmaglim": [f.depth_abmag for f in files],
            "em_min": [f.em_nm[0] * 1e-9 for f in files],
            "em_max": [f.em_nm[1] * 1e-9 for f in files],
            "s_region": [stc_polygon(f.corners) for f in files],
        }
    )


def _footprint(header: Any, shape: tuple[int, int]) -> list[tuple[float, float]]:
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(header)
    xs, ys = [0.5, nx + 0.5, nx + 0.5, 0.5], [0.5, 0.5, ny + 0.5, ny + 0.5]  # pixel edges (1-based)
    ra, dec = w.all_pix2world(xs, ys, 1)
    return [(float(r), float(d)) for r, d in zip(ra, dec, strict=True)]


def _fits_bytes(hdus: list[Any]) -> bytes:
    out = io.BytesIO()
    fits.HDUList(hdus).writeto(out)
    return out.getvalue()


def product(
    dp_id: str, centre: tuple[float, float], filter_name: str, size: int = 600
) -> tuple[bytes, list[tuple[float, float]]]:
    """An ADP: the image in the primary HDU, its ERR and CONF planes as extensions; its bytes
    and its footprint."""
    data, header = devworld.sky(centre, size, 0.25, seed=21, filter_name=filter_name, name="NGC 3115 field")
    header["ARCFILE"] = f"{dp_id}.fits"
    header["ORIGIN"] = "ESO-PARANAL"
    header["PRODCATG"] = "SCIENCE.IMAGE"
    err = fits.ImageHDU(np.sqrt(np.abs(data)).astype(np.float32), header.copy())
    err.header["EXTNAME"] = "ERR"
    conf = fits.ImageHDU(np.full(data.shape, 100, dtype=np.int16), header.copy())
    conf.header["EXTNAME"] = "CONF"
    return _fits_bytes([fits.PrimaryHDU(data, header), err, conf]), _footprint(header, data.shape)


def _raw_mef(dp_id: str) -> tuple[bytes, list[tuple[float, float]]]:
    """A raw HAWK-I exposure: a header-only primary, four chips around the paw-print's centre."""
    primary = fits.Header([("ORIGIN", "ESO-PARANAL"), ("INSTRUME", "HAWKI"), ("ARCFILE", f"{dp_id}.fits")])
    primary["HIERARCH ESO INS FILT1 NAME"] = "Ks"
    primary["HIERARCH ESO INS FILT2 NAME"] = "OPEN"
    hdus: list[Any] = [fits.PrimaryHDU(header=primary)]
    corners: list[tuple[float, float]] = []
    for n, (east, north) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1)), start=1):
        data, header = devworld.sky(
            devworld.paw_chip_centre(east, north), devworld.PAW_CHIP_PX, devworld.PAW_SCALE, seed=30 + n
        )
        header["EXTNAME"] = f"CHIP{n}.INT1"
        hdus.append(fits.ImageHDU(data, header))
        corners += _footprint(header, data.shape)
    ras, decs = [c[0] for c in corners], [c[1] for c in corners]
    envelope = [(min(ras), min(decs)), (max(ras), min(decs)), (max(ras), max(decs)), (min(ras), max(decs))]
    return _fits_bytes(hdus), envelope


def demo_archive(now: dt.datetime | None = None) -> list[ArchiveFile]:
    """The development archive's products for the demo fields (the same every time, but for
    the proprietary one's dates, which follow `now`)."""
    now = now or dt.datetime.now(dt.UTC)
    # The id p2api's docstring names (`bkg_image_set_ob_info(obId, 'eso_im|ADP.2015-05-11T10:19:53.607')`).
    when = dt.datetime(2015, 5, 11, 10, 19, 53, 607000, tzinfo=dt.UTC)
    adp_id = "ADP.2015-05-11T10:19:53.607"
    adp, adp_corners = product(adp_id, devworld.FIELD, "R")
    raw_id = "HAWKI.2019-05-06T07:08:09.123"
    raw, raw_corners = _raw_mef(raw_id)
    secret_id = "ADP.2026-01-02T03:04:05.678"
    far_id = "ADP.2019-01-01T00:00:00.000"
    far_centre = (200.0, -30.0)
    far_when = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    far, far_corners = product(far_id, far_centre, "V")
    return [
        ArchiveFile(
            adp_id,
            "FORS2",
            "R",
            when,
            when + dt.timedelta(days=365),
            25.1,
            (570.0, 730.0),
            tuple(adp_corners),
            adp,
        ),
        ArchiveFile(
            raw_id,
            "HAWKI",
            "Ks",
            dt.datetime(2019, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC),
            dt.datetime(2020, 5, 6, tzinfo=dt.UTC),
            21.4,
            (1990.0, 2310.0),
            tuple(raw_corners),
            raw,
        ),
        # Proprietary: released next year, so never offered (nor fetched).
        ArchiveFile(
            secret_id,
            "FORS2",
            "B",
            now - dt.timedelta(days=30),
            now + dt.timedelta(days=365),
            26.0,
            (390.0, 490.0),
            tuple(adp_corners),
            adp,
        ),
        # Another field: no demo OB's target is in it.
        ArchiveFile(far_id, "FORS2", "V", far_when, far_when, 24.0, (500.0, 590.0), tuple(far_corners), far),
    ]


class DevArchive(DevTap):
    """ObsCore at `url` (`/tap_obs`, as ESO's `archive.eso.org/tap_obs`) and the files at
    `file_base` (`/files/`), on loopback."""

    def __init__(self, files: list[ArchiveFile] | None = None, port: int = 0) -> None:
        self.archive = files if files is not None else demo_archive()
        super().__init__(obscore_table(self.archive), "ivoa.ObsCore", prefix="/tap_obs", port=port)
        self.files = {f.dp_id: f.data for f in self.archive}
        self.file_requests: list[str] = []
        self.file_status: int | None = None
        self.file_delay_s = 0.0
        self.redirect_to: str | None = None
        self.app.router.add_get("/files/{dp_id}", self._file)

    @property
    def file_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    async def _file(self, request: web.Request) -> web.StreamResponse:
        dp_id = request.match_info["dp_id"]
        self.file_requests.append(dp_id)
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to)
        if self.file_status is not None:
            return web.Response(status=self.file_status, text="development archive: failing as asked")
        data = self.files.get(dp_id)
        if data is None:
            return web.Response(status=404, text=f"no file {dp_id}")
        response = web.StreamResponse(headers={"Content-Type": "application/fits"})
        response.content_length = len(data)
        await response.prepare(request)
        for start in range(0, len(data), 1 << 20):
            if self.file_delay_s:
                await asyncio.sleep(self.file_delay_s)
            await response.write(data[start : start + (1 << 20)])
        await response.write_eof()
        return response
