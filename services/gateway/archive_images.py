"""ESO archive images in the selector (DESIGN.md, "Other sources in the selector").

Finding: the archive's ObsCore through pyvo (`services.shared.eso_archive`),
the images holding the OB's target and BOA star, released by now, ranked;
answers are kept for ARCHIVE_CACHE_S per field, and a listing waits at most
ARCHIVE_QUERY_TIMEOUT_S for a new one (past it, or when the archive fails, the
entry says so with a code and the rest of the selector answers).

Choosing one (`eso_im|DPID`): the DP id is checked (`check_dp_id`) before
anything else; when the image is stored, the catalog selects it at once;
otherwise a background job fetches it: the archive's own row is looked up by
the DP id (so the id must be a released image there), the file is streamed
from `file_url(ARCHIVE_FILE_BASE, dp_id)` (same-host redirects only, size and
time bounded) through the upload path (validated with the row's filter when
the header names none, processed, recorded as a system-owned image of key
`eso_im|DPID`), and every OB that chose it meanwhile is given it. One job per
image on a gateway, however many users ask. The OB's selection changes only
once the image is stored; a failed job leaves nothing and is told in the
listing (its code and message) for FAILED_TTL_S, and choosing the image again
starts a new job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import aiohttp

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.arguments import Caller, ObContext
from services.gateway.uploads import UploadFile, Uploads, UploadTarget
from services.shared import instruments
from services.shared.errors import Code, ServiceError
from services.shared.eso_archive import ArchiveImage, EsoArchive, check_dp_id, fetch, file_url, rank
from services.shared.grpc_client import call

log = logging.getLogger(__name__)

SYSTEM_OWNER = "system:eso"
MAX_LISTED = 20
FAILED_TTL_S = 600.0


def source_key(dp_id: str) -> str:
    """The catalog's key of an archive image: its selection string."""
    return f"eso_im|{dp_id}"


@dataclasses.dataclass(frozen=True)
class ArchiveLimits:
    """The settings of the archive source (ARCHIVE_*)."""

    query_deadline_s: float = 5.0
    cache_s: float = 600.0
    max_file_bytes: int = 2 << 30
    fetch_timeout_s: float = 600.0


@dataclasses.dataclass(frozen=True)
class ArchiveFound:
    """What the archive answered for one OB: the images, or why there are none."""

    images: tuple[ArchiveImage, ...]
    available: bool = True
    code: Code | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class JobState:
    """A fetch of one image: running (`failed` None) or failed with a code."""

    started: float
    code: Code | None = None
    message: str = ""

    @property
    def preparing(self) -> bool:
        return self.code is None


def _points(ob: ObContext) -> list[tuple[float, float]]:
    points = [(ob.target.ra_deg, ob.target.dec_deg)]
    if ob.HasField("boa_star"):
        points.append((ob.boa_star.ra_deg, ob.boa_star.dec_deg))
    return points


class ArchiveImages:
    """The archive's images for OBs: found, fetched, selected."""

    def __init__(
        self,
        *,
        archive: EsoArchive | None,
        uploads: Uploads,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        limits: ArchiveLimits,
    ) -> None:
        self.archive = archive
        self.uploads = uploads
        self.catalog = catalog
        self.limits = limits
        self._found: dict[tuple[tuple[float, float], ...], tuple[float, ArchiveFound]] = {}
        self._jobs: dict[str, JobState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, list[tuple[Caller, ObContext]]] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.archive is not None:
            self.archive.close()

    # ---- finding ---------------------------------------------------------------------------

    async def find(self, ob: ObContext) -> ArchiveFound:
        """The released archive images holding the OB's target and BOA star, most useful
        first (kept per field for ARCHIVE_CACHE_S; failures for a tenth of it)."""
        if self.archive is None:
            return ArchiveFound((), False, Code.UNAVAILABLE, "no ESO archive is configured (ARCHIVE_TAP_URL)")
        key = tuple((round(ra, 6), round(dec, 6)) for ra, dec in _points(ob))
        hit = self._found.get(key)
        if hit is not None and time.monotonic() < hit[0]:
            return hit[1]
        try:
            images = await self.archive.find(_points(ob), self.limits.query_deadline_s)
        except ServiceError as err:
            found = ArchiveFound((), False, err.code, err.message)
            ttl = self.limits.cache_s / 10
        else:
            band = instruments.wavelengths_nm(ob.instrument) if ob.instrument else None
            found = ArchiveFound(tuple(rank(images, band)[:MAX_LISTED]))
            ttl = self.limits.cache_s
        if len(self._found) > 4096:
            self._found.clear()
        self._found[key] = (time.monotonic() + ttl, found)
        return found

    def job(self, dp_id: str) -> JobState | None:
        """The state of this gateway's fetch of `dp_id`, if one runs or failed lately."""
        state = self._jobs.get(dp_id)
        if state is not None and state.code is not None and time.monotonic() - state.started > FAILED_TTL_S:
            self._jobs.pop(dp_id, None)
            return None
        return state

    # ---- choosing one ----------------------------------------------------------------------

    async def select(self, caller: Caller, ob: ObContext, dp_id: str) -> catalog_pb2.Selection | None:
        """Selects the stored image of `dp_id` for the OB; when it is not stored, starts (or
        joins) the job that fetches it and answers None: the selection follows once it is."""
        check_dp_id(dp_id)
        request = catalog_pb2.SelectRequest(
            caller=caller,
            ob=ob,
            kind=catalog_pb2.SELECTION_KIND_ESO_IMAGE,
            value=dp_id,
            source_key=source_key(dp_id),
        )
        try:
            # Access to the OB's run is checked here, before anything is fetched.
            return await call(self.catalog.Select, request)
        except ServiceError as err:
            if err.code != Code.NOT_FOUND:
                raise
        if self.archive is None:
            raise ServiceError(Code.UNAVAILABLE, "no ESO archive is configured (ARCHIVE_TAP_URL)")
        # One start at a time per image: a second asker waits for the first's row lookup.
        lock = self._starting.setdefault(dp_id, asyncio.Lock())
        async with lock:
            running = self._tasks.get(dp_id)
            if running is None or running.done():
                # The archive's own row, before any job: an id it does not have is NOT_FOUND
                # now, an archive that does not answer UNAVAILABLE now.
                row = await self.archive.image(dp_id, self.limits.query_deadline_s)
                self._waiting.setdefault(dp_id, []).append((caller, ob))
                self._jobs[dp_id] = JobState(time.monotonic())
                task = asyncio.create_task(self._fetch(caller, ob, row))
                self._tasks[dp_id] = task
                task.add_done_callback(lambda _: self._tasks.pop(dp_id, None))
            else:
                self._waiting.setdefault(dp_id, []).append((caller, ob))
        if not lock.locked():
            self._starting.pop(dp_id, None)
        return None

    async def _fetch(self, caller: Caller, ob: ObContext, row: ArchiveImage) -> None:
        assert self.archive is not None and self._session is not None
        dp_id = row.dp_id
        t0 = time.perf_counter()
        try:
            chunks = fetch(
                self._session,
                file_url(self.archive.file_base, dp_id),
                self.limits.max_file_bytes,
                self.limits.fetch_timeout_s,
            )
            generated = catalog_pb2.Generated(
                owner_id=SYSTEM_OWNER,
                source_key=source_key(dp_id),
                kind=catalog_pb2.SELECTION_KIND_ESO_IMAGE,
                value=dp_id,
            )
            async with self.uploads.slot():
                outcome = await self.uploads.upload(
                    caller,
                    UploadFile(chunks=chunks, file_name=f"{dp_id}.fits"),
                    UploadTarget(ob, row.filter, generated),
                )
        except ServiceError as err:
            log.warning("fetching archive image %s failed: %s %s", dp_id, err.code, err.message)
            self._jobs[dp_id] = JobState(time.monotonic(), err.code, err.message)
            self._waiting.pop(dp_id, None)
            return
        except Exception as exc:  # a bug: told as INTERNAL, never lost
            log.exception("fetching archive image %s failed", dp_id)
            self._jobs[dp_id] = JobState(
                time.monotonic(), Code.INTERNAL, f"internal error: {type(exc).__name__}"
            )
            self._waiting.pop(dp_id, None)
            return
        log.info(
            "archive image stored",
            extra={
                "dp_id": dp_id,
                "fits_hash": outcome.image.fits_hash,
                "s": round(time.perf_counter() - t0, 3),
            },
        )
        self._jobs.pop(dp_id, None)
        # Every OB that chose it meanwhile shows it now.
        for waiting_caller, waiting_ob in self._waiting.pop(dp_id, []):
            try:
                await self.select(waiting_caller, waiting_ob, dp_id)
            except ServiceError as err:
                log.warning(
                    "selecting archive image %s for OB %s failed: %s", dp_id, waiting_ob.ob_id, err.message
                )
