"""One Process job: from the staged upload to the stored mosaic, HiPS and preview.

Reads the staged object into a private scratch folder (uncompressing gzip
and .Z), decides from the validator's report between the single image and a
SWarp mosaic of the displayable chips, builds HiPS and preview, and writes
everything under the output prefix, tiles concurrently. On any failure it
removes what it wrote and raises PROCESSING_FAILED, or STORE_UNAVAILABLE when
the store failed it (the user should try again later, nothing is wrong with
the file).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from services.processor import display, hips, mosaic, preview, sampling, source
from services.processor.observation import Observation
from services.shared.errors import Code, ServiceError
from services.shared.failpoints import failpoint
from services.shared.settings import ProcessorSettings
from services.shared.store import ObjectStore, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

ORIGINAL = "original.fits"
MOSAIC = "mosaic.fits"
PREVIEW = "preview.png"
HIPS = "hips/"
JOB_FOLDER_PREFIX = "process-"  # a job's private folder in the scratch folder
CREATOR = "ivo://eso.org/bgimages"
_CONTENT_HASH = re.compile(r"(?:^|/)([0-9a-f]{64})(?:/|$)")
# Encoded files waiting for the store at most (back-pressure on the tile threads).
MAX_IN_FLIGHT = 32
# Failures reported as they are; any other becomes PROCESSING_FAILED. A store that
# cannot be written is a 503 to the user (try later), not a broken file (500).
PASSED_THROUGH = (Code.PROCESSING_FAILED, Code.STORE_UNAVAILABLE)


@dataclasses.dataclass(frozen=True)
class HduChoice:
    """What the processor needs of the validator's report on one HDU."""

    index: int
    displayable: bool
    pixel_scale_arcsec: float


@dataclasses.dataclass(frozen=True)
class Job:
    source_key: str
    output_prefix: str
    title: str  # the user's file name or OBJECT: never written into the HiPS
    hdus: list[HduChoice]
    filter_name: str = ""
    object_name: str = ""
    resampling: str = sampling.BILINEAR


@dataclasses.dataclass(frozen=True)
class Outcome:
    fits_key: str
    preview_key: str
    hips_prefix: str
    hips_order: int
    cut: display.Cut
    stored_bytes: int
    tile_count: int
    mosaic: bool


async def _settled(write: Awaitable[T]) -> T:
    """Awaits a store operation to its end even when the job is cancelled
    meanwhile: a write still running after the clean-up would leave an orphan."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([task])
        raise


class StoreSink:
    """A HiPS sink that writes to the object store from the tile threads,
    many objects at once, through the event loop."""

    def __init__(self, store: ObjectStore, prefix: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.prefix = prefix
        self.loop = loop
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._futures: list[concurrent.futures.Future[None]] = []
        self._lock = threading.Lock()
        self.bytes = 0
        self.failed: BaseException | None = None

    def put(self, path: str, data: bytes | bytearray, content_type: str) -> None:
        if self.failed is not None:
            raise StoreUnavailable(f"could not store HiPS files: {self.failed}")
        self._slots.acquire()
        payload = bytes(data)
        future = asyncio.run_coroutine_threadsafe(
            self.store.put_bytes(self.prefix + path, payload, content_type), self.loop
        )
        future.add_done_callback(self._done)
        with self._lock:
            self._futures.append(future)
            self.bytes += len(payload)

    def abort(self) -> None:
        """Makes every further put fail (the job was cancelled)."""
        if self.failed is None:
            self.failed = asyncio.CancelledError("the job was cancelled")

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is not None and self.failed is None:
            self.failed = future.exception()

    def drain(self) -> None:
        """Blocks until every write has finished."""
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            with contextlib.suppress(BaseException):
                future.result()

    def wait(self) -> None:
        """Blocks until every write has finished; raises the first failure."""
        self.drain()
        if self.failed is not None:
            raise StoreUnavailable(f"could not store HiPS files: {self.failed}")


class Processor:
    """Runs Process jobs; one per core pair at a time (they are CPU bound)."""

    def __init__(self, settings: ProcessorSettings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self._jobs = asyncio.Semaphore(max(1, settings.max_jobs))
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max(1, settings.max_jobs), thread_name_prefix="process"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def remove_stale_scratch(self) -> int:
        """Removes job folders an earlier run of this processor left when it was
        killed (a pod's emptyDir outlives a container restart); returns how many.
        Only in a SCRATCH_DIR of its own: the system's temp folder may be shared."""
        if not self.settings.scratch_dir or not Path(self.settings.scratch_dir).is_dir():
            return 0
        stale = [p for p in Path(self.settings.scratch_dir).glob(f"{JOB_FOLDER_PREFIX}*") if p.is_dir()]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        return len(stale)

    async def process(self, job: Job) -> Outcome:
        if not job.output_prefix.endswith("/") or not job.source_key:
            raise ServiceError(Code.INVALID_ARGUMENT, "output_prefix must end with '/' and source_key be set")
        async with self._jobs:
            scratch = self.settings.scratch_dir or None
            if scratch:
                Path(scratch).mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=JOB_FOLDER_PREFIX, dir=scratch))
            try:
                return await self._run(job, workdir)
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    await _settled(self.store.delete_prefix(job.output_prefix))
                if isinstance(exc, ServiceError) and exc.code in PASSED_THROUGH:
                    raise
                if isinstance(exc, ServiceError):
                    raise ServiceError(Code.PROCESSING_FAILED, f"processing failed: {exc.message}") from exc
                if isinstance(exc, Exception):
                    log.exception("processing %s failed", job.source_key)
                    # An OS error's text names paths and errnos of the pod: the log has it.
                    text = "" if isinstance(exc, OSError) else f": {exc}"
                    raise ServiceError(
                        Code.PROCESSING_FAILED, f"processing failed: {type(exc).__name__}{text}"
                    ) from exc
                raise
            finally:
                await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _run(self, job: Job, workdir: Path) -> Outcome:
        prefix = job.output_prefix
        upload = workdir / "upload"
        try:
            await _settled(self.store.download(job.source_key, upload))
        except StoreUnavailable:
            raise
        except ServiceError as err:
            raise ServiceError(Code.PROCESSING_FAILED, f"cannot read the upload: {err.message}") from err
        original_key = prefix + ORIGINAL
        stored = await _settled(self.store.put_file(original_key, upload, "application/fits"))
        await failpoint("upload.process")
        loop = asyncio.get_running_loop()
        sink = StoreSink(self.store, prefix + HIPS, loop)
        build = loop.run_in_executor(self._pool, self._build, job, workdir, upload, sink)
        try:
            built = await asyncio.shield(build)
            await asyncio.shield(asyncio.to_thread(sink.wait))
        except BaseException:
            # Failed, or the caller went away: stop the tile threads at their next
            # write and let every write end before the clean-up removes them.
            sink.abort()
            with contextlib.suppress(BaseException):
                await asyncio.wait([build])
                await asyncio.to_thread(sink.drain)
            raise
        result, preview_png, mosaic_path = built
        fits_key = original_key
        if mosaic_path is not None:
            fits_key = prefix + MOSAIC
            stored += await _settled(self.store.put_file(fits_key, mosaic_path, "application/fits"))
        preview_key = prefix + PREVIEW
        await _settled(self.store.put_bytes(preview_key, preview_png, "image/png"))
        stored += len(preview_png) + sink.bytes
        return Outcome(
            fits_key=fits_key,
            preview_key=preview_key,
            hips_prefix=prefix + HIPS,
            hips_order=result.order,
            cut=result.stats.cut,
            stored_bytes=stored,
            tile_count=result.tile_count,
            mosaic=mosaic_path is not None,
        )

    def _build(
        self, job: Job, workdir: Path, upload: Path, sink: StoreSink
    ) -> tuple[hips.HipsResult, bytes, Path | None]:
        """The CPU-bound part, in a worker thread."""
        plain = source.decompress(upload, workdir / "plain.fits")
        shown = [h for h in job.hdus if h.displayable]
        mosaic_path: Path | None = None
        scale: float | None = None
        if len(shown) > 1:
            mosaic_path = workdir / "mosaic.fits"
            scales = [h.pixel_scale_arcsec for h in shown if h.pixel_scale_arcsec > 0]
            made = mosaic.mosaic_file(
                plain,
                mosaic_path,
                [h.index for h in shown],
                pixel_scales=scales if len(scales) == len(shown) else None,
                filter_name=job.filter_name,
                swarp_bin=self.settings.swarp_bin,
                timeout_s=self.settings.swarp_timeout_s,
                scratch_dir=str(workdir),
                mem_max_mb=self.settings.swarp_mem_mb,
            )
            scale = made.pixel_scale_arcsec
            image, hdul, stats = source.open_image_stats(mosaic_path, 0)
        else:
            index = shown[0].index if shown else None
            if shown and shown[0].pixel_scale_arcsec > 0:
                scale = shown[0].pixel_scale_arcsec
            image, hdul, stats = source.open_image_stats(plain, index)
        with hdul:
            headers = [hdul[0].header, image.header] if image.header is not None else [hdul[0].header]
            result = hips.build_hips(
                image,
                sink,
                creator_did=f"{CREATOR}?{job.output_prefix.rstrip('/')}",
                observation=Observation.of(job.filter_name, headers, progenitor_of(job.output_prefix)),
                resampling=job.resampling,
                workers=self.settings.hips_workers,
                stats=stats,
                pixel_scale_arcsec=scale,
            )
            shot = preview.make_preview(image, stats.cut, pixel_scale_arcsec=scale)
        return result, shot.png, mosaic_path


def progenitor_of(output_prefix: str) -> str:
    """The HiPS's prov_progenitor: the uploaded file's SHA-256, which the
    output prefix names (`content/<sha256>/g<n>/`); never the file's name."""
    found = _CONTENT_HASH.search(output_prefix)
    return f"sha256:{found[1]} (uploaded file)" if found else ""


def job_from_request(request: Any) -> Job:
    """The job a ProcessRequest describes."""
    from bgimages.processor.v1 import processor_pb2

    report = request.report
    resampling = (
        sampling.NEAREST if request.resampling == processor_pb2.RESAMPLING_NEAREST else sampling.BILINEAR
    )
    return Job(
        source_key=request.source_key,
        output_prefix=request.output_prefix,
        title=request.title,
        hdus=[HduChoice(h.index, h.displayable, h.pixel_scale_arcsec) for h in report.hdus],
        filter_name=report.filter,
        object_name=report.object_name,
        resampling=resampling,
    )
