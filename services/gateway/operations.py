"""What a user can do through the gateway: one method per action.

The native HTTP API (`app.py`) and the p2api face (`p2fc.py`) both call these
methods; they differ only in how they learn who the caller is (a JWT, or p2's
answer, which also gives `Caller.runs`). The methods orchestrate the
validator, processor and catalog over gRPC and the object store; they hold
no HTTP types and raise `ServiceError` with a stable code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from bgimages.common.v1 import common_pb2
from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from bgimages.validator.v1 import validator_pb2, validator_pb2_grpc
from services.gateway.hips_tokens import HipsGrant, HipsTokens
from services.gateway.metrics import Metrics
from services.shared.admission import Admission, PerKeyLimit
from services.shared.errors import ServiceError
from services.shared.failpoints import failpoint
from services.shared.grpc_edge import WithDeadline, call, channel
from services.shared.settings import GatewaySettings
from services.shared.store import ObjectStore, can_write, open_store

log = logging.getLogger(__name__)

Caller = catalog_pb2.Caller
ObContext = common_pb2.ObContext

_HASH = re.compile(r"^[0-9a-f]{64}$")
# The HiPS files a client may ask for; nothing else under the prefix is served.
_HIPS_PATH = re.compile(
    r"^(properties|Moc\.fits|Norder3/Allsky\.(fits|png|jpg)"
    r"|Norder([0-9]|[12][0-9])/Dir[0-9]{1,9}/Npix[0-9]{1,12}\.(fits|png|jpg))$"
)
_CONTENT_TYPES = {
    "fits": "application/fits",
    "png": "image/png",
    "jpg": "image/jpeg",
    "properties": "text/plain; charset=utf-8",
}

# Selections in p2api's vocabulary: "default", "gaia", "survey|NAME",
# "eso_im|DPID", "user_bkg_image|<fits_hash>".
_KIND_OF_TAG = {
    "default": catalog_pb2.SELECTION_KIND_DEFAULT,
    "gaia": catalog_pb2.SELECTION_KIND_GAIA,
    "survey": catalog_pb2.SELECTION_KIND_SURVEY,
    "eso_im": catalog_pb2.SELECTION_KIND_ESO_IMAGE,
    "user_bkg_image": catalog_pb2.SELECTION_KIND_USER_IMAGE,
}
_TAG_OF_KIND = {kind: tag for tag, kind in _KIND_OF_TAG.items()}
_SELECTION_VALUE = re.compile(r"^[A-Za-z0-9_.:+/()\[\] -]{1,200}$")

STAGE_CHUNK = 1 << 20  # bytes hashed and written at a time while staging
DISPLAY_BATCH = 5000  # fits_hashes per RecordDisplays call
ABORT_RETRY_S = 300.0  # how long an abort is retried while the catalog is unreachable


def parse_selection(text: str) -> tuple[catalog_pb2.SelectionKind.ValueType, str]:
    """Splits a selection string into (kind, value); INVALID_ARGUMENT if malformed."""
    tag, sep, value = text.partition("|")
    kind = _KIND_OF_TAG.get(tag)
    if kind is None:
        raise ServiceError(
            "INVALID_ARGUMENT",
            f"unknown selection {text[:80]!r}: expected default, gaia, survey|NAME, eso_im|DPID "
            "or user_bkg_image|<fits_hash>",
        )
    if kind in (catalog_pb2.SELECTION_KIND_DEFAULT, catalog_pb2.SELECTION_KIND_GAIA):
        if sep:
            raise ServiceError("INVALID_ARGUMENT", f"selection {tag!r} takes no value")
        return kind, ""
    if not value:
        raise ServiceError("INVALID_ARGUMENT", f"selection {tag!r} needs a value after '|'")
    if kind == catalog_pb2.SELECTION_KIND_USER_IMAGE:
        return kind, check_hash(value)
    if not _SELECTION_VALUE.match(value):
        raise ServiceError("INVALID_ARGUMENT", f"malformed {tag} value")
    return kind, value


def format_selection(selection: catalog_pb2.Selection) -> str:
    """The p2api string of a selection ("default" when unset)."""
    tag = _TAG_OF_KIND.get(selection.kind, "default")
    if selection.kind in (catalog_pb2.SELECTION_KIND_DEFAULT, catalog_pb2.SELECTION_KIND_GAIA):
        return tag
    if selection.kind == catalog_pb2.SELECTION_KIND_UNSPECIFIED:
        return "default"
    return f"{tag}|{selection.value}"


def check_hash(fits_hash: str) -> str:
    """A fits_hash is 64 lowercase hex digits (the SHA-256 of the uploaded bytes)."""
    if not _HASH.match(fits_hash):
        raise ServiceError("INVALID_ARGUMENT", "fits_hash must be 64 lowercase hexadecimal digits")
    return fits_hash


# Numbers as requests may write them: ASCII digits only. float() and int() also read
# other scripts' digits ("١٥٠" is 150), underscores ("1_50"), spaces, "nan" and "inf".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_INTEGER = re.compile(r"[0-9]{1,19}")


def decimal_number(value: object, name: str) -> float:
    """A finite number from a JSON number or ASCII decimal text; INVALID_ARGUMENT otherwise."""
    number: float | None = None
    written = isinstance(value, str) and _DECIMAL.fullmatch(value) is not None
    if written or (isinstance(value, int | float) and not isinstance(value, bool)):
        number = float(value)  # type: ignore[arg-type]
    if number is None or not math.isfinite(number):
        raise ServiceError("INVALID_ARGUMENT", f"{name} must be a decimal number in ASCII digits")
    return number


def decimal_integer(value: object, name: str) -> int:
    """A non-negative integer from a JSON integer or ASCII digits; INVALID_ARGUMENT otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise ServiceError("INVALID_ARGUMENT", f"{name} must be an integer in ASCII digits")


def ob_context(
    ob_id: int | str,
    run_id: str,
    target_ra: float | str | None,
    target_dec: float | str | None,
    boa_ra: float | str | None = None,
    boa_dec: float | str | None = None,
) -> ObContext:
    """Builds and checks an OB context from loosely typed request values."""
    ob = decimal_integer(ob_id, "ob_id")
    if ob <= 0 or ob >= 1 << 62:
        raise ServiceError("INVALID_ARGUMENT", "ob_id must be a positive integer")
    if not run_id or len(run_id) > 200 or not run_id.isprintable():
        raise ServiceError("INVALID_ARGUMENT", "run_id is required")
    context = ObContext(ob_id=ob, run_id=run_id, target=sky_position("target", target_ra, target_dec))
    if (boa_ra is None or boa_ra == "") != (boa_dec is None or boa_dec == ""):
        raise ServiceError("INVALID_ARGUMENT", "boa_ra and boa_dec go together")
    if boa_ra is not None and boa_ra != "":
        context.boa_star.CopyFrom(sky_position("boa", boa_ra, boa_dec))
    return context


def sky_position(name: str, ra: float | str | None, dec: float | str | None) -> common_pb2.SkyPosition:
    """A checked ICRS position in degrees."""
    if ra is None or dec is None or ra == "" or dec == "":
        raise ServiceError("INVALID_ARGUMENT", f"{name}_ra and {name}_dec are required (degrees)")
    ra_deg, dec_deg = decimal_number(ra, f"{name}_ra"), decimal_number(dec, f"{name}_dec")
    if not (0.0 <= ra_deg < 360.0):
        raise ServiceError("INVALID_ARGUMENT", f"{name}_ra must be in [0, 360) degrees")
    if not (-90.0 <= dec_deg <= 90.0):
        raise ServiceError("INVALID_ARGUMENT", f"{name}_dec must be in [-90, 90] degrees")
    return common_pb2.SkyPosition(ra_deg=ra_deg, dec_deg=dec_deg)


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
    # Seconds spent in each step: staging, validate, process, complete.
    timings: dict[str, float]


@dataclasses.dataclass
class ObjectStream:
    """An object to send to a client, chunk by chunk."""

    chunks: AsyncIterator[bytes]
    size: int
    content_type: str
    # Seconds a client may cache it; 0 for no caching.
    max_age: int = 0


@dataclasses.dataclass(frozen=True)
class HipsAccess:
    """What the HiPS endpoint answers: a token and when it expires."""

    token: str
    expires_at: int  # seconds since the epoch
    fits_hash: str


class ValidationFailed(ServiceError):
    """The validator refused the file; carries every finding."""

    def __init__(self, report: validator_pb2.ValidationReport) -> None:
        first = report.errors[0] if report.errors else None
        code_name = common_pb2.ErrorCode.Name(first.code) if first is not None else "BAD_HEADER"
        if code_name == "ERROR_CODE_UNSPECIFIED":
            code_name = "BAD_HEADER"
        findings = [
            {
                "code": common_pb2.ErrorCode.Name(e.code),
                **({"hdu": e.hdu} if e.HasField("hdu") else {}),
                "message": e.message,
            }
            for e in report.errors
        ]
        message = "; ".join(e.message for e in report.errors) or "the file was refused"
        super().__init__(code_name, message, errors=findings)
        self.report = report


class Operations:
    """The gateway's actions, over the three gRPC services and the store."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        store: ObjectStore,
        validator: validator_pb2_grpc.ValidatorServiceStub,
        processor: processor_pb2_grpc.ProcessorServiceStub,
        catalog: catalog_pb2_grpc.CatalogServiceStub,
        hips_tokens: HipsTokens,
        metrics: Metrics | None = None,
        channels: Iterable[Any] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.validator: Any = WithDeadline(validator, settings.validate_timeout_s)
        self.processor: Any = WithDeadline(processor, settings.process_timeout_s)
        self.catalog: Any = WithDeadline(catalog, settings.catalog_timeout_s)
        self.hips_tokens = hips_tokens
        self.metrics = metrics or Metrics()
        # Uploads in progress on this gateway: in all (each holds a staging object, buffers
        # and a connection) and per user. Beyond: BUSY (503) and TOO_MANY_UPLOADS (429).
        self.uploads = Admission(
            "the gateway",
            settings.max_uploads,
            0,
            settings.upload_retry_after_s,
            on_refused=self.metrics.upload_refused,
        )
        self.uploaders = PerKeyLimit(
            settings.max_uploads_per_user,
            settings.upload_retry_after_s,
            "TOO_MANY_UPLOADS",
            "uploads",
            on_refused=self.metrics.upload_refused,
        )
        self._channels = list(channels)
        self._displayed: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(
        cls, settings: GatewaySettings, store: ObjectStore | None = None, metrics: Metrics | None = None
    ) -> Operations:
        """Opens the gRPC channels and the store the settings name."""
        channels = {
            name: channel(addr, settings.service_token.get_secret_value())
            for name, addr in (
                ("validator", settings.validator_addr),
                ("processor", settings.processor_addr),
                ("catalog", settings.catalog_addr),
            )
        }
        return cls(
            settings=settings,
            store=store if store is not None else open_store(settings),
            validator=validator_pb2_grpc.ValidatorServiceStub(channels["validator"]),
            processor=processor_pb2_grpc.ProcessorServiceStub(channels["processor"]),
            catalog=catalog_pb2_grpc.CatalogServiceStub(channels["catalog"]),
            hips_tokens=HipsTokens.from_settings(settings),
            metrics=metrics,
            channels=channels.values(),
        )

    async def start(self) -> None:
        """Starts the background flush of display records."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_displays_forever())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception):
            await self.flush_displays()
        for ch in self._channels:
            await ch.close()

    # ---- upload ---------------------------------------------------------------------------

    async def stage(self, chunks: AsyncIterator[bytes], declared_size: int | None = None) -> StagedUpload:
        """Streams a body to a staging object while hashing it (step 1).

        TOO_LARGE (413) before more than MAX_UPLOAD_BYTES are written, or at
        once when the declared size is over the limit. Nothing is left behind
        on failure.
        """
        limit = self.settings.max_upload_bytes
        if declared_size is not None and declared_size > limit:
            self.metrics.upload_refused("TOO_LARGE")
            raise ServiceError(
                "TOO_LARGE", f"the file is larger than the limit of {limit} bytes", limit=limit
            )
        key = f"staging/{uuid.uuid4().hex}"
        hasher = hashlib.sha256()
        total = 0

        async def hashed() -> AsyncIterator[bytes]:
            # The hash of block N runs in a thread while the store writes block N and
            # the next block is read from the client: hashing costs little wall time.
            nonlocal total
            hashing: asyncio.Future[None] | None = None
            try:
                async for block in _blocks(chunks, STAGE_CHUNK):
                    if total + len(block) > limit:
                        raise ServiceError(
                            "TOO_LARGE", f"the file is larger than the limit of {limit} bytes", limit=limit
                        )
                    total += len(block)
                    if hashing is not None:
                        await hashing
                    hashing = asyncio.ensure_future(asyncio.to_thread(hasher.update, block))
                    self.metrics.upload_bytes.inc(len(block))
                    yield block
                    if total == len(block):
                        await failpoint("upload.staging")
                if hashing is not None:
                    await hashing
            finally:
                if hashing is not None and not hashing.done():
                    with contextlib.suppress(BaseException):
                        await hashing

        try:
            await self.store.put_stream(key, hashed(), "application/fits")
        except BaseException as exc:
            await _shielded(self.store.delete(key))
            if isinstance(exc, ServiceError):
                self.metrics.upload_refused(exc.code)
                if exc.code == "STORE_UNAVAILABLE":
                    self.metrics.store_writable.set(0)
            raise
        if total == 0:
            await _shielded(self.store.delete(key))
            raise ServiceError("NOT_FITS", "the upload is empty")
        return StagedUpload(key=key, fits_hash=hasher.hexdigest(), size=total)

    async def discard(self, staged: StagedUpload) -> None:
        """Removes a staged body that will not be used."""
        await _shielded(self.store.delete(staged.key))

    async def finish_upload(
        self, caller: Caller, ob: ObContext, staged: StagedUpload, *, file_name: str, bandpass: str = ""
    ) -> UploadOutcome:
        """Steps 2-5 of the upload protocol for a staged body; removes the staging object.

        The new image becomes the OB's selection. Raises ValidationFailed
        (with per-HDU findings) when the validator refuses the file.
        """
        timings: dict[str, float] = {}
        lease_id = ""
        heartbeat: asyncio.Task[None] | None = None
        try:
            file_name = _clean_name(file_name)
            bandpass = bandpass.strip()[:64]
            t0 = time.perf_counter()
            begun = await call(
                self.catalog.BeginUpload,
                catalog_pb2.BeginUploadRequest(
                    caller=caller,
                    ob=ob,
                    fits_hash=staged.fits_hash,
                    size_bytes=staged.size,
                    staging_key=staged.key,
                ),
            )
            lease_id = begun.lease_id
            heartbeat = asyncio.create_task(self._keep_lease(lease_id, begun.lease_ttl_seconds))
            t1 = time.perf_counter()
            timings["begin"] = t1 - t0
            validated = await call(
                self.validator.Validate,
                validator_pb2.ValidateRequest(object_key=staged.key, ob=ob, bandpass=bandpass),
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

    async def upload(
        self,
        caller: Caller,
        ob: ObContext,
        chunks: AsyncIterator[bytes],
        *,
        file_name: str,
        bandpass: str = "",
        declared_size: int | None = None,
    ) -> UploadOutcome:
        """The whole upload: stage while hashing, then validate, process, record."""
        t0 = time.perf_counter()
        staged = await self.stage(chunks, declared_size)
        staging = time.perf_counter() - t0
        outcome = await self.finish_upload(caller, ob, staged, file_name=file_name, bandpass=bandpass)
        outcome.timings["staging"] = staging
        return outcome

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
            if err.code != "UNAVAILABLE":
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
                if err.code != "UNAVAILABLE":
                    log.warning("AbortUpload failed: %s", err.message)
                    return
            delay = min(delay * 2, 15.0)
        log.warning("gave up aborting lease %s: it expires, and the sweep removes its objects", lease_id)

    # ---- the selector -----------------------------------------------------------------------

    async def list_images(self, caller: Caller, ob: ObContext) -> catalog_pb2.ListImagesResponse:
        """What the selector shows for one OB: own and shared compatible images,
        the selection, and the caller's tombstones."""
        response: catalog_pb2.ListImagesResponse = await call(
            self.catalog.ListImages, catalog_pb2.ListImagesRequest(caller=caller, ob=ob)
        )
        return response

    async def select(self, caller: Caller, ob: ObContext, selection: str) -> catalog_pb2.Selection:
        """Uses a background for the OB; `selection` in p2api's vocabulary."""
        kind, value = parse_selection(selection)
        chosen: catalog_pb2.Selection = await call(
            self.catalog.Select, catalog_pb2.SelectRequest(caller=caller, ob=ob, kind=kind, value=value)
        )
        return chosen

    async def get_selection(self, caller: Caller, ob_id: int, run_id: str = "") -> catalog_pb2.Selection:
        """The OB's current selection (display rule: access to the OB's run)."""
        selection: catalog_pb2.Selection = await call(
            self.catalog.GetSelection,
            catalog_pb2.GetSelectionRequest(caller=caller, ob_id=ob_id, run_id=run_id),
        )
        return selection

    async def get_image(self, caller: Caller, fits_hash: str) -> catalog_pb2.Image:
        """One image the caller owns or may list (NOT_FOUND otherwise, GONE if removed)."""
        image: catalog_pb2.Image = await call(
            self.catalog.GetImage, catalog_pb2.GetImageRequest(caller=caller, fits_hash=check_hash(fits_hash))
        )
        return image

    async def delete(self, caller: Caller, fits_hash: str) -> catalog_pb2.Tombstone:
        """Deletes the caller's own image (the catalog removes the objects after its commit)."""
        response = await call(
            self.catalog.DeleteImage,
            catalog_pb2.DeleteImageRequest(caller=caller, fits_hash=check_hash(fits_hash)),
        )
        tombstone: catalog_pb2.Tombstone = response.tombstone
        return tombstone

    # ---- runs (admin) -----------------------------------------------------------------------

    async def set_run(self, run_id: str, owner_id: str, delegate_ids: list[str]) -> catalog_pb2.Run:
        """Sets a run's owner and delegates, as p2 pushes them (admin)."""
        for name, value in [
            ("run_id", run_id),
            ("owner_id", owner_id),
            *(("delegate", d) for d in delegate_ids),
        ]:
            if not value or len(value) > 200 or not value.isprintable():
                raise ServiceError("INVALID_ARGUMENT", f"{name} must be a non-empty printable string")
        run: catalog_pb2.Run = await call(
            self.catalog.SetRun,
            catalog_pb2.SetRunRequest(run_id=run_id, owner_id=owner_id, delegate_ids=delegate_ids),
        )
        return run

    async def remove_run(self, run_id: str) -> None:
        await call(self.catalog.RemoveRun, catalog_pb2.RemoveRunRequest(run_id=run_id))

    # ---- display: HiPS, preview, FITS -------------------------------------------------------

    async def authorize_display(
        self, caller: Caller, fits_hash: str, ob_id: int | None = None
    ) -> catalog_pb2.Image:
        """The image if the caller may display it (list rule, or the OB's selection)."""
        request = catalog_pb2.AuthorizeDisplayRequest(caller=caller, fits_hash=check_hash(fits_hash))
        if ob_id is not None:
            request.ob_id = ob_id
        image: catalog_pb2.Image = await call(self.catalog.AuthorizeDisplay, request)
        return image

    async def hips_access(self, caller: Caller, fits_hash: str, ob_id: int | None = None) -> HipsAccess:
        """A signed, expiring token opening this image's HiPS only."""
        image = await self.authorize_display(caller, fits_hash, ob_id)
        if not image.hips_prefix:
            raise ServiceError("NOT_FOUND", "this image has no HiPS")
        token, expires = self.hips_tokens.issue(image.fits_hash, image.hips_prefix)
        self._displayed.add(image.fits_hash)
        return HipsAccess(token=token, expires_at=expires, fits_hash=image.fits_hash)

    async def hips_file(self, fits_hash: str, token: str, path: str) -> ObjectStream:
        """One HiPS file under a token: FORBIDDEN for a bad or expired token or
        another image's, NOT_FOUND for a path outside the HiPS, GONE when the
        image was removed."""
        grant: HipsGrant = self.hips_tokens.verify(token, fits_hash)
        if not _HIPS_PATH.match(path):
            raise ServiceError("NOT_FOUND", "no such HiPS file")
        key = grant.hips_prefix + path
        info = await self.store.stat(key)
        if info is None:
            if await self.store.stat(grant.hips_prefix + "properties") is None:
                raise ServiceError("GONE", "this image was deleted or culled; please upload it again")
            raise ServiceError("NOT_FOUND", "no such HiPS tile")
        self._displayed.add(grant.fits_hash)
        ext = "properties" if path == "properties" else path.rsplit(".", 1)[1]
        max_age = max(0, min(grant.expires_at - int(time.time()), 86400))
        return ObjectStream(self.store.stream(key), info.size, _CONTENT_TYPES[ext], max_age)

    async def preview(self, caller: Caller, fits_hash: str, ob_id: int | None = None) -> ObjectStream:
        """The image's preview PNG."""
        image = await self.authorize_display(caller, fits_hash, ob_id)
        return await self._object(image.preview_key, "image/png")

    async def fits(self, caller: Caller, fits_hash: str, ob_id: int | None = None) -> ObjectStream:
        """The stored FITS (the mosaic for a MEF, else the uploaded file), streamed."""
        image = await self.authorize_display(caller, fits_hash, ob_id)
        return await self._object(image.fits_key, "application/fits")

    async def _object(self, key: str, content_type: str) -> ObjectStream:
        if not key:
            raise ServiceError("NOT_FOUND", "no such object")
        info = await self.store.stat(key)
        if info is None:
            raise ServiceError("GONE", "this image was deleted or culled; please upload it again")
        return ObjectStream(self.store.stream(key), info.size, content_type)

    async def flush_displays(self) -> None:
        """Sends the displays seen since the last flush to the catalog (one call)."""
        if not self._displayed:
            return
        pending, self._displayed = sorted(self._displayed), set()
        for start in range(0, len(pending), DISPLAY_BATCH):
            batch = pending[start : start + DISPLAY_BATCH]
            try:
                await call(self.catalog.RecordDisplays, catalog_pb2.RecordDisplaysRequest(fits_hashes=batch))
            except ServiceError:
                self._displayed.update(pending[start:])  # kept for the next round
                raise

    async def _flush_displays_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.display_flush_s)
            try:
                await self.flush_displays()
            except ServiceError as err:
                log.warning("recording displays failed: %s", err.message)

    async def usage(self) -> catalog_pb2.Usage:
        """The catalog's storage usage and cull count."""
        usage: catalog_pb2.Usage = await call(
            self.catalog.GetUsage, catalog_pb2.GetUsageRequest(), timeout=2.0
        )
        return usage

    # ---- health -----------------------------------------------------------------------------

    async def store_writable(self) -> bool:
        """Whether the store takes a write now (the metric follows). Reads may work
        when writes do not: that is no reason to stop serving tiles."""
        try:
            ok = await asyncio.wait_for(can_write(self.store), 5.0)
        except TimeoutError:
            ok = False
        self.metrics.store_writable.set(1 if ok else 0)
        return ok

    async def readiness(self) -> dict[str, bool]:
        """Whether each dependency answers: the three services (the catalog's
        health covers its database) and the store."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async def serving(ch: Any, service: str) -> bool:
            try:
                stub = health_pb2_grpc.HealthStub(ch)
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            except Exception:
                return False

        async def store_ok() -> bool:
            try:
                return await asyncio.wait_for(self.store.ping(), 2.0)
            except Exception:
                return False

        names = ["validator", "processor", "catalog"]
        services = [
            "bgimages.validator.v1.ValidatorService",
            "bgimages.processor.v1.ProcessorService",
            "bgimages.catalog.v1.CatalogService",
        ]
        checks = [serving(ch, svc) for ch, svc in zip(self._channels, services, strict=False)]
        results = await asyncio.gather(*checks, store_ok())
        out = dict(zip(names[: len(checks)], results[:-1], strict=True))
        out["store"] = results[-1]
        return out


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


async def _shielded(aw: Any) -> None:
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


def _clean_name(name: str) -> str:
    """A file name as the user gave it, minus any folder and control characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "upload.fits"
