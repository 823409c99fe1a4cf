"""The upload, for both faces: stage the file while hashing it, then have it
validated, processed and recorded, under an upload lease; the bounds on uploads
in progress. Nothing is left behind when any step fails."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from bgimages.common.v1 import common_pb2
from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from bgimages.validator.v1 import validator_pb2, validator_pb2_grpc
from services.gateway.arguments import Caller, ObContext
from services.gateway.metrics import Metrics
from services.shared.admission import Admission, PerKeyLimit
from services.shared.errors import Code, ServiceError
from services.shared.failpoints import failpoint
from services.shared.grpc_client import call
from services.shared.store import ObjectStore

log = logging.getLogger(__name__)

STAGE_CHUNK = 1 << 20  # bytes hashed and written at a time while staging
ABORT_RETRY_S = 300.0  # how long an abort is retried while the catalog is unreachable


@dataclasses.dataclass(frozen=True)
class UploadFile:
    """The file of an upload as a face received it, not read yet. The body reader
    (`forms.UploadBody`) bounds `chunks` by the size limit."""

    chunks: AsyncIterator[bytes]
    file_name: str = ""


@dataclasses.dataclass(frozen=True)
class UploadTarget:
    """What the upload is for: the OB, and the bandpass the caller gave; `generated` when
    the suite made the file itself (a Gaia image), to be stored as a system-owned image."""

    ob: ObContext
    bandpass: str = ""
    generated: catalog_pb2.Generated | None = None
    keep_selection: bool = False  # the OB keeps its selection (an image sent for finding charts)


# The target, or how to learn it once the file is staged (the native API reads
# form fields that follow the file).
Target = UploadTarget | Callable[[], Awaitable[UploadTarget]]


@dataclasses.dataclass(frozen=True)
class StagedUpload:
    """An uploaded body in the staging area, hashed."""

    key: str
    fits_hash: str
    size: int


@dataclasses.dataclass(frozen=True)
class UploadOutcome:
    image: catalog_pb2.Image
    # True when the bytes were stored already (no processing was needed).
    reused_content: bool
    # Seconds spent in each step: staging, begin, validate, process, complete.
    timings: dict[str, float]


class ValidationFailed(ServiceError):
    """The validator refused the file (or, before sending, its headers); carries every finding."""

    def __init__(self, report: validator_pb2.ValidationReport) -> None:
        first = report.errors[0] if report.errors else None
        code_name = common_pb2.ErrorCode.Name(first.code) if first is not None else Code.BAD_HEADER
        if code_name == "ERROR_CODE_UNSPECIFIED":
            code_name = Code.BAD_HEADER
        findings = [
            {
                "code": common_pb2.ErrorCode.Name(e.code),
                **({"hdu": e.hdu} if e.HasField("hdu") else {}),
                "message": e.message,
            }
            for e in report.errors
        ]
        message = "; ".join(e.message for e in report.errors) or "the file was refused"
        details: dict[str, Any] = {"errors": findings}
        if report.after_upload:
            details["after_upload"] = after_upload_json(report)
        super().__init__(Code(code_name), message, **details)
        self.report = report


def after_upload_json(report: validator_pb2.ValidationReport) -> list[dict[str, Any]]:
    """The checks the headers alone could not answer (the check before sending)."""
    return [
        {
            "codes": [common_pb2.ErrorCode.Name(c) for c in a.codes],
            **({"hdu": a.hdu} if a.HasField("hdu") else {}),
            "message": a.message,
        }
        for a in report.after_upload
    ]


@dataclasses.dataclass(frozen=True)
class HeaderSegment:
    """One HDU's header as a client read it from its file, for the check before sending."""

    offset: int
    header: bytes
    data_bytes: int


class Uploads:
    """Uploads over the store, the validator, the processor and the catalog."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        validator: validator_pb2_grpc.ValidatorServiceAsyncStub,
        processor: processor_pb2_grpc.ProcessorServiceAsyncStub,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        metrics: Metrics,
        max_uploads: int,
        max_uploads_per_user: int,
        retry_after_s: float,
    ) -> None:
        self.store = store
        self.validator = validator
        self.processor = processor
        self.catalog = catalog
        self.metrics = metrics
        # Uploads in progress on this gateway: in all (each holds a staging object, buffers
        # and a connection) and per user. Beyond: BUSY (503) and TOO_MANY_UPLOADS (429).
        self.in_all = Admission(
            "the gateway", max_uploads, 0, retry_after_s, on_refused=metrics.upload_refused
        )
        self.per_user = PerKeyLimit(
            max_uploads_per_user,
            retry_after_s,
            Code.TOO_MANY_UPLOADS,
            "uploads",
            on_refused=metrics.upload_refused,
        )
        self._background: set[asyncio.Task[None]] = set()

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A place among the uploads in progress on this gateway (BUSY beyond)."""
        return self.in_all.slot()

    def user_slot(self, user_id: str) -> contextlib.AbstractContextManager[None]:
        """A place among this user's uploads in progress (TOO_MANY_UPLOADS beyond)."""
        return self.per_user.slot(user_id)

    @contextlib.asynccontextmanager
    async def admitted(self, user_id: str) -> AsyncIterator[None]:
        """Both places, before a byte of the body is read."""
        async with self.slot():
            with self.user_slot(user_id):
                yield

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()

    async def check_headers(
        self, caller: Caller, target: UploadTarget, segments: list[HeaderSegment], file_size: int
    ) -> validator_pb2.ValidationReport:
        """The check before sending: what the upload would be told of the file's headers, and
        of the caller's access to the OB's run, before a byte of its data is sent. Raises
        ValidationFailed as the upload would; nothing is stored. Advice only: the upload is
        validated in full."""
        await call(
            self.catalog.GetSelection,
            catalog_pb2.GetSelectionRequest(caller=caller, ob_id=target.ob.ob_id, run_id=target.ob.run_id),
        )
        response = await call(
            self.validator.CheckHeaders,
            validator_pb2.CheckHeadersRequest(
                hdus=[
                    validator_pb2.HeaderSegment(offset=s.offset, header=s.header, data_bytes=s.data_bytes)
                    for s in segments
                ],
                file_size=file_size,
                ob=target.ob,
                bandpass=target.bandpass.strip()[:64],
            ),
        )
        if not response.report.ok:
            self.metrics.header_checks.labels(outcome="refused").inc()
            raise ValidationFailed(response.report)
        self.metrics.header_checks.labels(outcome="passed").inc()
        return response.report

    async def upload(self, caller: Caller, file: UploadFile, target: Target) -> UploadOutcome:
        """The whole upload: stage while hashing, then validate, process, record.

        The new image becomes the OB's selection. Raises ValidationFailed (with
        per-HDU findings) when the validator refuses the file.
        """
        t0 = time.perf_counter()
        staged = await self.stage(file.chunks)
        try:
            if not isinstance(target, UploadTarget):
                target = await target()
        except BaseException:
            await _shielded(self.store.delete(staged.key))
            raise
        staging = time.perf_counter() - t0
        outcome = await self.finish(caller, target, staged, file.file_name)
        outcome.timings["staging"] = staging
        return outcome

    async def stage(self, chunks: AsyncIterator[bytes]) -> StagedUpload:
        """Streams a body to a staging object while hashing it. Nothing is left
        behind on failure (what `chunks` raises, TOO_LARGE say, passes through)."""
        key = f"staging/{uuid.uuid4().hex}"
        hasher = hashlib.sha256()
        total = 0

        def counted(block: bytes) -> None:
            nonlocal total
            total += len(block)
            self.metrics.upload_bytes.inc(len(block))

        async def hashed() -> AsyncIterator[bytes]:
            first = True
            async for block in hashed_blocks(chunks, hasher, counted):
                yield block
                if first:
                    first = False
                    await failpoint("upload.staging")

        try:
            await self.store.put_stream(key, hashed(), "application/fits")
        except BaseException as exc:
            await _shielded(self.store.delete(key))
            if isinstance(exc, ServiceError):
                self.metrics.upload_refused(exc.code)
                if exc.code == Code.STORE_UNAVAILABLE:
                    self.metrics.store_writable.set(0)
            raise
        if total == 0:
            await _shielded(self.store.delete(key))
            raise ServiceError(Code.NOT_FITS, "the upload is empty")
        return StagedUpload(key=key, fits_hash=hasher.hexdigest(), size=total)

    async def finish(
        self, caller: Caller, target: UploadTarget, staged: StagedUpload, file_name: str
    ) -> UploadOutcome:
        """Begin (the lease), validate, process unless the content is stored already,
        complete; removes the staging object in every case. A one-shot upload and a
        resumable one's last PATCH end here."""
        ob = target.ob
        timings: dict[str, float] = {}
        lease_id = ""
        heartbeat: asyncio.Task[None] | None = None
        try:
            file_name = clean_name(file_name)
            t0 = time.perf_counter()
            begun = await call(
                self.catalog.BeginUpload,
                catalog_pb2.BeginUploadRequest(
                    caller=caller,
                    ob=ob,
                    fits_hash=staged.fits_hash,
                    size_bytes=staged.size,
                    staging_key=staged.key,
                    generated=target.generated,
                ),
            )
            lease_id = begun.lease_id
            heartbeat = asyncio.create_task(self._keep_lease(lease_id, begun.lease_ttl_seconds))
            t1 = time.perf_counter()
            timings["begin"] = t1 - t0
            validated = await call(
                self.validator.Validate,
                validator_pb2.ValidateRequest(
                    object_key=staged.key, ob=ob, bandpass=target.bandpass.strip()[:64]
                ),
            )
            report = validated.report
            t2 = time.perf_counter()
            timings["validate"] = t2 - t1
            if not report.ok:
                raise ValidationFailed(report)
            complete = catalog_pb2.CompleteUploadRequest(
                caller=caller,
                ob=ob,
                lease_id=lease_id,
                fits_hash=staged.fits_hash,
                file_name=file_name,
                filter=report.filter,
                object_name=report.object_name,
                footprints=[
                    catalog_pb2.Footprint(
                        hdu=h.index, corners=list(h.footprint), pixel_scale_arcsec=h.pixel_scale_arcsec
                    )
                    for h in report.hdus
                    if h.displayable
                ],
                generated=target.generated,
                keep_selection=target.keep_selection,
            )
            reused = begun.action == catalog_pb2.BeginUploadResponse.REUSE_CONTENT
            if not reused:
                processed = await call(
                    self.processor.Process,
                    processor_pb2.ProcessRequest(
                        source_key=staged.key,
                        report=report,
                        output_prefix=begun.output_prefix,
                        title=report.object_name or file_name,
                    ),
                )
                complete.fits_key = processed.fits_key
                complete.preview_key = processed.preview_key
                complete.hips_prefix = processed.hips_prefix
                complete.hips_order = processed.hips_order
                complete.cut_low = processed.pixel_cut.low
                complete.cut_high = processed.pixel_cut.high
                complete.stored_bytes = processed.stored_bytes
            t3 = time.perf_counter()
            timings["process"] = t3 - t2
            image = await call(self.catalog.CompleteUpload, complete)
            lease_id = ""
            timings["complete"] = time.perf_counter() - t3
            self.metrics.uploads.labels(outcome="reused" if reused else "processed").inc()
            return UploadOutcome(image=image, reused_content=reused, timings=timings)
        except BaseException as exc:
            if heartbeat is not None:
                heartbeat.cancel()
            if isinstance(exc, ServiceError):
                self.metrics.upload_refused(exc.code)
            if lease_id:
                await _shielded(self._abort(lease_id))
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            await _shielded(self.store.delete(staged.key))

    async def _keep_lease(self, lease_id: str, ttl_s: int) -> None:
        """Renews the upload's lease every TTL/4 while it is validated and
        processed, so a lease outlives a slow upload but not a dead gateway."""
        interval = max(ttl_s / 4, 0.5) if ttl_s > 0 else 30.0
        while True:
            await asyncio.sleep(interval)
            try:
                request = catalog_pb2.RenewLeaseRequest(lease_id=lease_id)
                await call(self.catalog.RenewLease, request, timeout=interval)
            except ServiceError as err:
                log.warning("renewing upload lease failed: %s", err.message)

    async def _abort(self, lease_id: str) -> None:
        """Ends a lease and removes what the upload wrote. While the catalog is
        unreachable the abort is retried in the background (for about a lease
        TTL); after that the lease expires and the sweep removes the rest."""
        try:
            await call(self.catalog.AbortUpload, catalog_pb2.AbortUploadRequest(lease_id=lease_id))
        except ServiceError as err:
            if err.code != Code.UNAVAILABLE:
                log.warning("AbortUpload failed: %s", err.message)
                return
            log.warning("AbortUpload failed (%s); retrying in the background", err.message)
            task = asyncio.create_task(self._abort_later(lease_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _abort_later(self, lease_id: str) -> None:
        deadline = time.monotonic() + ABORT_RETRY_S
        delay = 1.0
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await call(self.catalog.AbortUpload, catalog_pb2.AbortUploadRequest(lease_id=lease_id))
                log.info("upload lease %s aborted after a retry", lease_id)
                return
            except ServiceError as err:
                if err.code != Code.UNAVAILABLE:
                    log.warning("AbortUpload failed: %s", err.message)
                    return
            delay = min(delay * 2, 15.0)
        log.warning("gave up aborting lease %s: it expires, and the sweep removes its objects", lease_id)


async def hashed_blocks(
    chunks: AsyncIterator[bytes], hasher: Any, on_block: Callable[[bytes], None]
) -> AsyncIterator[bytes]:
    """The chunks regrouped into blocks of about STAGE_CHUNK, each hashed on the way: the hash
    of block N runs in a thread while the store writes block N and the next block is read
    from the client, so hashing costs little wall time. `on_block` sees each block first."""
    hashing: asyncio.Future[None] | None = None
    try:
        async for block in _blocks(chunks, STAGE_CHUNK):
            on_block(block)
            if hashing is not None:
                await hashing
            hashing = asyncio.ensure_future(asyncio.to_thread(hasher.update, block))
            yield block
        if hashing is not None:
            await hashing
    finally:
        if hashing is not None and not hashing.done():
            with contextlib.suppress(BaseException):
                await hashing


async def _blocks(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroups a stream into blocks of about `size` bytes (fewer thread hops, one copy)."""
    parts: list[bytes] = []
    held = 0
    async for chunk in chunks:
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


async def _shielded(aw: Coroutine[Any, Any, None]) -> None:
    """Runs clean-up to its end even when the request is cancelled; logs failures."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
    except Exception as exc:
        log.warning("clean-up failed: %s", exc)


def clean_name(name: str) -> str:
    """A file name as the user gave it, minus any folder and control characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "upload.fits"
