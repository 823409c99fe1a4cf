"""The suite the gateway's API, client and browser tests run against, and helpers.

One suite of real processes for the session, with settings of its own: a
small upload limit, few HDUs allowed, a default survey HiPS built here
(there is no internet) and served by the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import itertools
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import numpy as np
import pytest
from astropy.io import fits

from services import devrun
from services.devrun import Suite
from services.shared.store import WRITE_PROBE_KEY, LocalStore
from tests.fitsgen import sky_image, tan_wcs, write_image

MAX_UPLOAD = 6 << 20
MAX_HDUS = 8
MAX_HEADER_CARDS = 2000
CHECK_MAX_HEADER_BYTES = 64 << 10  # the check before sending takes headers of ~800 cards
SURVEY_CENTRE = (150.0, 2.0)
SURVEY_NAME = "Test survey (checkerboard)"
_ob_ids = itertools.count(int.from_bytes(os.urandom(3), "big") * 1000 + 1)


def build_survey(folder: Path) -> Path:
    """A small HiPS (FITS tiles, orders 0-4) of a checkerboard around SURVEY_CENTRE."""
    from reproject import reproject_interp
    from reproject.hips import reproject_to_hips

    size = 256
    w = tan_wcs(SURVEY_CENTRE[0], SURVEY_CENTRE[1], 3.0 * 3600 / size, (size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    board = ((xx // 16 + yy // 16) % 2 * 120 + 60).astype(np.float32)
    out = folder / "survey"
    reproject_to_hips(
        (board, w),
        coord_system_out="equatorial",
        reproject_function=reproject_interp,
        output_directory=str(out),
        level=4,
        tile_size=128,
        properties={"obs_title": SURVEY_NAME},
    )
    return out


def gateway_env(tmp: Path) -> dict[str, str]:
    survey = build_survey(tmp)
    return {
        "MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "MAX_HDUS": str(MAX_HDUS),
        "MAX_HEADER_CARDS": str(MAX_HEADER_CARDS),
        "CHECK_MAX_HEADER_BYTES": str(CHECK_MAX_HEADER_BYTES),
        "DEFAULT_SURVEY_DIR": str(survey),
        "DEFAULT_SURVEY_NAME": SURVEY_NAME,
        # The named surveys as `make run` has them (local folders, no internet), DEMO-K smaller.
        "SURVEYS": devrun.local_surveys(tmp, survey, size=512, scale_arcsec=12.0, order=5),
        "CHART_SURVEY_OPTICAL": "DEMO-R",
        "CHART_SURVEY_INFRARED": "DEMO-K",
        "DISPLAY_FLUSH_S": "1",
    }


def new_ob() -> int:
    return next(_ob_ids)


def new_user() -> str:
    return f"p2:{uuid.uuid4().hex[:10]}"


def new_run() -> str:
    return f"p2:60.A-{uuid.uuid4().hex[:6]}(A)"


class Gateway:
    """A running suite seen from outside: its URL, tokens, store and database."""

    def __init__(self, suite: Suite, url: str = "") -> None:
        self.suite = suite
        self.url = url or suite.gateway_url  # another: a proxy in front of it

    def token(self, user: str, scope: str = "", **claims: Any) -> str:
        return self.suite.token(user, scope, **claims)

    def auth(self, user: str, scope: str = "") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, scope)}"}

    def new_run(self, owner: str, delegates: tuple[str, ...] = ()) -> str:
        run = new_run()
        self.suite.set_run(run, owner, list(delegates))
        return run

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.suite.env["STORE_DIR"])

    async def store_keys(self) -> list[str]:
        """The store's keys, less the readiness probe's (written now and then)."""
        return sorted([info.key async for info in self.store.list("") if info.key != WRITE_PROBE_KEY])

    async def image_rows(self) -> int:
        conn = await asyncpg.connect(self.suite.env["DATABASE_URL"])
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM images")
            return count
        finally:
            await conn.close()

    async def forget_uploads(self, user: str) -> None:
        """A test's clean-up: the user's resumable uploads expired and swept, so that none
        outlives the test (they would hold staging objects in the shared suite)."""
        from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc

        conn = await asyncpg.connect(self.suite.env["DATABASE_URL"])
        try:
            await conn.execute(
                "UPDATE resumable_uploads SET expires_at = now() - interval '1 second' WHERE owner_id = $1",
                user,
            )
        finally:
            await conn.close()
        with grpc.insecure_channel(self.suite.address("catalog")) as ch:
            metadata = (("x-service-token", self.suite.env["SERVICE_TOKEN"]),)
            catalog_pb2_grpc.CatalogServiceStub(ch).Sweep(
                catalog_pb2.SweepRequest(min_age_seconds=3600), metadata=metadata, timeout=60
            )

    def sweep_and_check(self) -> None:
        """What an SRE runs after a fault: one sweep (min-age 0), then the
        consistency check, which must find nothing either way."""
        from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc

        with grpc.insecure_channel(self.suite.address("catalog")) as ch:
            stub = catalog_pb2_grpc.CatalogServiceStub(ch)
            metadata = (("x-service-token", self.suite.env["SERVICE_TOKEN"]),)
            stub.Sweep(catalog_pb2.SweepRequest(min_age_seconds=0), metadata=metadata, timeout=60)
            found = stub.CheckConsistency(
                catalog_pb2.CheckConsistencyRequest(min_age_seconds=0), metadata=metadata, timeout=60
            )
        assert list(found.unheld_objects) == [] and list(found.missing_objects) == [], found

    async def upload(
        self,
        http: aiohttp.ClientSession,
        path: Path,
        ob_id: int,
        run_id: str,
        target: tuple[float, float],
        user: str,
        *,
        boa: tuple[float, float] | None = None,
        bandpass: str | None = None,
        file_name: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[aiohttp.ClientResponse, Any]:
        """A multipart upload as the page sends it; returns the response and its JSON."""
        form = aiohttp.FormData()
        form.add_field("run_id", run_id)
        form.add_field("target_ra", repr(target[0]))
        form.add_field("target_dec", repr(target[1]))
        if boa is not None:
            form.add_field("boa_ra", repr(boa[0]))
            form.add_field("boa_dec", repr(boa[1]))
        if bandpass is not None:
            form.add_field("bandpass", bandpass)
        form.add_field(
            "file", path.read_bytes(), filename=file_name or path.name, content_type="application/fits"
        )
        async with http.post(
            f"{self.url}/api/v1/obs/{ob_id}/background-images",
            data=form,
            headers=headers if headers is not None else self.auth(user),
        ) as resp:
            body = await resp.json(content_type=None)
            return resp, body

    async def listing(
        self,
        http: aiohttp.ClientSession,
        ob_id: int,
        run_id: str,
        target: tuple[float, float],
        user: str,
        boa: tuple[float, float] | None = None,
    ) -> Any:
        params = {"run_id": run_id, "target_ra": repr(target[0]), "target_dec": repr(target[1])}
        if boa is not None:
            params.update(boa_ra=repr(boa[0]), boa_dec=repr(boa[1]))
        async with http.get(
            f"{self.url}/api/v1/obs/{ob_id}/background-images", params=params, headers=self.auth(user)
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


# ---- FITS files -------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def field(
    folder: Path,
    name: str = "field.fits",
    ra: float = 150.0,
    dec: float = 2.0,
    size: int = 256,
    filter_name: str | None = "R",
    seed: int | None = None,
) -> Path:
    """A single-HDU TAN image (unique bytes unless `seed` is given)."""
    seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
    return write_image(
        folder / name, ra=ra, dec=dec, size=size, filter_name=filter_name, extra={"SEED": seed}
    )


def paw_print(folder: Path, name: str = "pawprint.fits", ra: float = 150.0, dec: float = 2.0) -> Path:
    """Two chips side by side, east and west of (ra, dec), with a gap of ~16 arcsec between them."""
    size, scale = 256, 0.36
    half = size * scale / 3600 / 2
    offset = (half + 8 / 3600) / np.cos(np.deg2rad(dec))
    hdus: list[Any] = [fits.PrimaryHDU(header=fits.Header([("FILTER", "Ks"), ("OBJECT", "paw print")]))]
    for n, sign in enumerate((-1, 1), start=1):
        w = tan_wcs(ra + sign * offset, dec, scale, (size, size))
        header = w.to_header()
        header["EXTNAME"] = f"CHIP{n}"
        hdus.append(fits.ImageHDU(sky_image((size, size), w, seed=n), header))
    path = folder / name
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def many_hdus(folder: Path, count: int) -> Path:
    w = tan_wcs(150.0, 2.0, 0.5, (32, 32))
    hdus: list[Any] = [fits.PrimaryHDU(header=fits.Header([("FILTER", "R")]))]
    hdus += [fits.ImageHDU(np.zeros((32, 32), np.float32), w.to_header()) for _ in range(count)]
    path = folder / f"many{count}.fits"
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def many_cards(folder: Path, count: int) -> Path:
    """A good image whose header holds `count` more cards (ESO-like HIERARCH filler)."""
    path = field(folder, f"cards{count}.fits", size=32)
    with fits.open(path) as hdul:
        header = hdul[0].header
        for i in range(count):
            header[f"HIERARCH ESO DET FILL{i:05d}"] = i
        hdul.writeto(path, overwrite=True)
    return path


def no_wcs(folder: Path) -> Path:
    header = fits.Header([("FILTER", "R"), ("OBJECT", "no wcs")])
    path = folder / "nowcs.fits"
    fits.PrimaryHDU(np.ones((64, 64), np.float32), header).writeto(path, overwrite=True)
    return path


def table_only(folder: Path) -> Path:
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="E", array=np.arange(5, dtype=np.float32))]
    )
    path = folder / "table.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("FILTER", "R")])), table]).writeto(
        path, overwrite=True
    )
    return path


def _rewrite_card(path: Path, start: bytes, new: bytes) -> Path:
    """Replaces the header card that starts with `start` by `new` (padded to 80 bytes)."""
    data = bytearray(path.read_bytes())
    at = data.index(start)
    assert at % 80 == 0, start
    data[at : at + 80] = new.ljust(80)
    path.write_bytes(bytes(data))
    return path


def bad_bitpix(folder: Path) -> Path:
    """BITPIX = 7: a value FITS 4.0 forbids (NONSTANDARD_HEADER)."""
    return _rewrite_card(
        field(folder, "bitpix.fits", size=32), b"BITPIX  =", b"BITPIX  =                    7"
    )


def simple_false(folder: Path) -> Path:
    """SIMPLE = F: a file that says it does not conform to FITS (NONSTANDARD_HEADER)."""
    return _rewrite_card(field(folder, "simple_f.fits", size=32), b"SIMPLE  =", b"SIMPLE  =" + b"F".rjust(21))


def non_ascii_header(folder: Path) -> Path:
    """A Latin-1 byte in a header card: a malformed header (BAD_HEADER)."""
    return _rewrite_card(field(folder, "latin1.fits", size=32), b"OBJECT  =", b"OBJECT  = 'Ca\xf1on'")


def free_format(folder: Path) -> Path:
    """SIMPLE and BITPIX in free format, as some ESO and Gemini writers put them: accepted."""
    path = field(folder, "free_format.fits", size=32)
    _rewrite_card(path, b"SIMPLE  =", b"SIMPLE  = T / free format")
    return _rewrite_card(path, b"BITPIX  =", b"BITPIX  = -32")


def truncated(folder: Path) -> Path:
    good = field(folder, "cut.fits", size=128)
    data = good.read_bytes()
    path = folder / "truncated.fits"
    path.write_bytes(data[: len(data) - 20000])
    return path


def gzipped(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


def corrupt_gzip(folder: Path) -> Path:
    data = bytearray(gzip.compress(field(folder, "to-corrupt.fits", size=128).read_bytes()))
    data[10] = 0x07  # the first deflate block: final, of the reserved (invalid) type
    path = folder / "corrupt.fits.gz"
    path.write_bytes(bytes(data))
    return path


def bzip2(folder: Path) -> Path:
    import bz2

    path = folder / "field.fits.bz2"
    path.write_bytes(bz2.compress(field(folder, "to-bzip.fits", size=64).read_bytes()))
    return path


def not_fits(folder: Path) -> Path:
    path = folder / "notes.fits"
    path.write_bytes(b"This is not a FITS file, just some text.\n" * 100)
    return path


FileMaker = Callable[[Path], Path]


@pytest.fixture(scope="session")
def gateway(suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    """The session's suite with the gateway tests' settings."""
    return Gateway(suite_factory(gateway_env(tmp_path_factory.mktemp("gw"))))


# ---- resumable uploads -----------------------------------------------------------------------


def big_file(folder: Path, megabytes: int, name: str = "big.fits") -> Path:
    """A small sky image and a large error plane (not displayed): `megabytes` MB to send,
    little to process."""
    path = field(folder, "sky.fits", size=128)
    side = int(np.sqrt(megabytes * (1 << 20) / 4))
    err = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", side)])
    err.update([("NAXIS2", side), ("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", "ERR")])
    rng = np.random.default_rng(int.from_bytes(os.urandom(2), "big"))
    out = folder / name
    with out.open("wb") as f:
        f.write(path.read_bytes())
        f.write(err.tostring().encode())
        rows = max(1, (4 << 20) // (side * 4))
        for start in range(0, side, rows):
            f.write(rng.normal(1, 0.1, (min(rows, side - start), side)).astype(">f4").tobytes())
        f.write(b"\0" * (-f.tell() % 2880))
    return out


class CuttingProxy:
    """A TCP proxy on loopback that cuts its connection to the gateway once, after `cut_at`
    bytes from the client: a dropped link, as from Chile. With `stay_down` it then refuses
    connections until `down` is set False (the link comes back)."""

    def __init__(self, upstream: str, cut_at: int, stay_down: bool = False) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host.rsplit("/", 1)[-1], int(port))
        self.cut_at = cut_at
        self.cut = False
        self.stay_down = stay_down
        self.down = False
        self.forwarded = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counted: bool) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(1 << 16):
                    if counted:
                        self.forwarded += len(data)  # all that went up, the cut one's too
                    if counted and not self.cut and self.forwarded >= self.cut_at:
                        self.cut = True
                        self.down = self.stay_down
                        for w in (writer, up_writer):
                            w.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
