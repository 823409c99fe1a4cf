"""The gRPC face of the catalog: parse the request, call the domain, map the answer.

Errors are ServiceError with codes of common.v1.ErrorCode, turned into a
gRPC status with ErrorInfo by `servicer_errors`.
"""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from bgimages.common.v1 import common_pb2
from services.catalog import consistency
from services.catalog.culling import Culler
from services.catalog.images import Images
from services.catalog.model import (
    Caller,
    FootprintIn,
    Generated,
    ImageView,
    ObRef,
    SelectionKind,
    SelectionView,
    SkyPoint,
    TombstoneView,
    UsageView,
    check_run_id,
)
from services.catalog.repository import Repository
from services.catalog.resumable import Record, Resumables
from services.catalog.sweep import Sweeper
from services.catalog.uploads import Described, Processed, Uploads
from services.shared.errors import Code, ServiceError
from services.shared.grpc_edge import servicer_errors

SERVICE_NAME = "bgimages.catalog.v1.CatalogService"


# Requests -> domain ----------------------------------------------------------


def caller_of(msg: catalog_pb2.Caller) -> Caller:
    runs = tuple(msg.runs.run_ids) if msg.HasField("runs") else None
    return Caller(msg.user_id, runs)


def point_of(msg: common_pb2.SkyPosition) -> SkyPoint:
    return SkyPoint(msg.ra_deg, msg.dec_deg)


def ob_of(msg: common_pb2.ObContext) -> ObRef:
    return ObRef(
        ob_id=msg.ob_id,
        run_id=msg.run_id,
        target=point_of(msg.target) if msg.HasField("target") else None,
        boa_star=point_of(msg.boa_star) if msg.HasField("boa_star") else None,
    )


def resumable_pb(record: Record) -> catalog_pb2.Resumable:
    expires = timestamp_pb2.Timestamp()
    expires.FromDatetime(record.expires_at)
    return catalog_pb2.Resumable(
        upload_id=record.upload_id,
        ob=common_pb2.ObContext.FromString(record.ob),
        bandpass=record.bandpass,
        file_name=record.file_name,
        length_bytes=record.length_bytes,
        staging_key=record.staging_key,
        multipart_id=record.multipart_id,
        expires_at=expires,
        claim_token=record.claim_token,
        owner_id=record.owner_id,
    )


def footprint_of(msg: catalog_pb2.Footprint) -> FootprintIn:
    return FootprintIn(msg.hdu, tuple(point_of(c) for c in msg.corners), msg.pixel_scale_arcsec)


def generated_of(msg: catalog_pb2.Generated) -> Generated:
    return Generated(msg.owner_id, msg.source_key, kind_of(msg.kind), msg.value)


def kind_of(value: int) -> SelectionKind:
    try:
        return SelectionKind(value)
    except ValueError:
        raise ServiceError(Code.INVALID_ARGUMENT, "selection kind is unspecified or unknown") from None


# Domain -> responses ---------------------------------------------------------


def timestamp(value: object) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)  # type: ignore[arg-type]
    return ts


def image_pb(i: ImageView) -> catalog_pb2.Image:
    return catalog_pb2.Image(
        fits_hash=i.fits_hash,
        owner_id=i.owner_id,
        file_name=i.file_name,
        filter=i.filter,
        object_name=i.object_name,
        file_bytes=i.file_bytes,
        stored_bytes=i.stored_bytes,
        footprints=[
            catalog_pb2.Footprint(
                hdu=f.hdu,
                corners=[common_pb2.SkyPosition(ra_deg=ra, dec_deg=dec) for ra, dec in f.corners],
                pixel_scale_arcsec=f.pixel_scale_arcsec,
            )
            for f in i.footprints
        ],
        hips_order=i.hips_order,
        cut_low=i.cut_low,
        cut_high=i.cut_high,
        created_at=timestamp(i.created_at),
        last_used_at=timestamp(i.last_used_at),
        run_ids=list(i.run_ids),
        fits_key=i.fits_key,
        preview_key=i.preview_key,
        hips_prefix=i.hips_prefix,
        owned_by_caller=i.owned_by_caller,
        source_key=i.source_key,
    )


def selection_pb(s: SelectionView) -> catalog_pb2.Selection:
    msg = catalog_pb2.Selection(kind=int(s.kind), value=s.value)  # type: ignore[arg-type]
    if s.image is not None:
        msg.image.CopyFrom(image_pb(s.image))
    return msg


def tombstone_pb(t: TombstoneView) -> catalog_pb2.Tombstone:
    return catalog_pb2.Tombstone(
        fits_hash=t.fits_hash,
        owner_id=t.owner_id,
        file_name=t.file_name,
        removed_at=timestamp(t.removed_at),
        reason=int(t.reason),  # type: ignore[arg-type]
    )


def usage_pb(u: UsageView) -> catalog_pb2.Usage:
    return catalog_pb2.Usage(
        used_bytes=u.used_bytes,
        capacity_bytes=u.capacity_bytes,
        high_water_bytes=u.high_water_bytes,
        low_water_bytes=u.low_water_bytes,
        image_count=u.image_count,
        content_count=u.content_count,
        culled_images=u.culled_images,
    )


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(
        self,
        repo: Repository,
        uploads: Uploads,
        images: Images,
        culler: Culler,
        sweeper: Sweeper,
        sweep_min_age_s: int,
    ) -> None:
        self.repo = repo
        self.uploads = uploads
        self.resumables = Resumables(repo, uploads.store)
        self.images = images
        self.culler = culler
        self.sweeper = sweeper
        self.sweep_min_age_s = sweep_min_age_s

    @servicer_errors
    async def SetRun(
        self, request: catalog_pb2.SetRunRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Run:
        check_run_id(request.run_id)
        people = [request.owner_id, *request.delegate_ids]
        if any(not p or len(p) > 200 for p in people):
            raise ServiceError(Code.INVALID_ARGUMENT, "owner_id and every delegate id must be non-empty")
        await self.repo.set_run(request.run_id, request.owner_id, list(request.delegate_ids))
        return catalog_pb2.Run(
            run_id=request.run_id, owner_id=request.owner_id, delegate_ids=list(request.delegate_ids)
        )

    @servicer_errors
    async def RemoveRun(
        self, request: catalog_pb2.RemoveRunRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.RemoveRunResponse:
        check_run_id(request.run_id)
        if not await self.repo.remove_run(request.run_id):
            raise ServiceError(Code.UNKNOWN_RUN, f"unknown run {request.run_id!r}", run_id=request.run_id)
        return catalog_pb2.RemoveRunResponse()

    @servicer_errors
    async def BeginUpload(
        self, request: catalog_pb2.BeginUploadRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.BeginUploadResponse:
        begun = await self.uploads.begin(
            caller_of(request.caller),
            ob_of(request.ob),
            request.fits_hash,
            request.size_bytes,
            request.staging_key,
            generated_of(request.generated) if request.HasField("generated") else None,
        )
        resp = catalog_pb2.BeginUploadResponse(
            action=int(begun.action),  # type: ignore[arg-type]
            lease_id=begun.lease_id,
            output_prefix=begun.output_prefix,
            generation=begun.generation,
            lease_ttl_seconds=begun.lease_ttl_s,
        )
        if begun.existing is not None:
            resp.existing.CopyFrom(image_pb(begun.existing))
        return resp

    @servicer_errors
    async def CompleteUpload(
        self, request: catalog_pb2.CompleteUploadRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        image = await self.uploads.complete(
            caller_of(request.caller),
            ob_of(request.ob),
            request.lease_id,
            request.fits_hash,
            Described(
                file_name=request.file_name,
                filter=request.filter,
                object_name=request.object_name,
                footprints=tuple(footprint_of(f) for f in request.footprints),
            ),
            Processed(
                fits_key=request.fits_key,
                preview_key=request.preview_key,
                hips_prefix=request.hips_prefix,
                hips_order=request.hips_order,
                cut_low=request.cut_low,
                cut_high=request.cut_high,
                stored_bytes=request.stored_bytes,
            ),
            generated_of(request.generated) if request.HasField("generated") else None,
            request.keep_selection,
        )
        return image_pb(image)

    @servicer_errors
    async def AbortUpload(
        self, request: catalog_pb2.AbortUploadRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.AbortUploadResponse:
        await self.uploads.abort(request.lease_id)
        return catalog_pb2.AbortUploadResponse()

    @servicer_errors
    async def RenewLease(
        self, request: catalog_pb2.RenewLeaseRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.RenewLeaseResponse:
        return catalog_pb2.RenewLeaseResponse(lease_ttl_seconds=await self.uploads.renew(request.lease_id))

    @servicer_errors
    async def CreateResumable(
        self, request: catalog_pb2.CreateResumableRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Resumable:
        record = await self.resumables.create(
            caller_of(request.caller),
            ob_of(request.ob),
            request.ob.SerializeToString(),
            request.length_bytes,
            request.bandpass,
            request.file_name,
            request.ttl_seconds,
            request.max_per_user,
        )
        return resumable_pb(record)

    @servicer_errors
    async def GetResumable(
        self, request: catalog_pb2.GetResumableRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Resumable:
        return resumable_pb(await self.resumables.get(caller_of(request.caller), request.upload_id))

    @servicer_errors
    async def ClaimResumable(
        self, request: catalog_pb2.ClaimResumableRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Resumable:
        record = await self.resumables.claim(
            caller_of(request.caller), request.upload_id, request.claim_seconds, request.ttl_seconds
        )
        return resumable_pb(record)

    @servicer_errors
    async def ReleaseResumable(
        self, request: catalog_pb2.ReleaseResumableRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Resumable:
        record = await self.resumables.release(
            request.upload_id, request.claim_token, request.renew, request.claim_seconds, request.multipart_id
        )
        return resumable_pb(record)

    @servicer_errors
    async def EndResumable(
        self, request: catalog_pb2.EndResumableRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.EndResumableResponse:
        await self.resumables.end(caller_of(request.caller), request.upload_id, request.remove_objects)
        return catalog_pb2.EndResumableResponse()

    @servicer_errors
    async def ListImages(
        self, request: catalog_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListImagesResponse:
        listing = await self.images.listing(
            caller_of(request.caller), ob_of(request.ob), list(request.source_keys)
        )
        return catalog_pb2.ListImagesResponse(
            own=[image_pb(i) for i in listing.own],
            shared=[image_pb(i) for i in listing.shared],
            selected=selection_pb(listing.selected),
            tombstones=[tombstone_pb(t) for t in listing.tombstones],
            generated=[image_pb(i) for i in listing.generated],
        )

    @servicer_errors
    async def GetImage(
        self, request: catalog_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        return image_pb(await self.images.get(caller_of(request.caller), request.fits_hash))

    @servicer_errors
    async def Select(
        self, request: catalog_pb2.SelectRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Selection:
        selection = await self.images.select(
            caller_of(request.caller),
            ob_of(request.ob),
            kind_of(request.kind),
            request.value,
            request.source_key,
        )
        return selection_pb(selection)

    @servicer_errors
    async def GetSelection(
        self, request: catalog_pb2.GetSelectionRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Selection:
        selection = await self.images.get_selection(caller_of(request.caller), request.ob_id, request.run_id)
        return selection_pb(selection)

    @servicer_errors
    async def AuthorizeDisplay(
        self, request: catalog_pb2.AuthorizeDisplayRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        ob_id = request.ob_id if request.HasField("ob_id") else None
        image = await self.images.authorize_display(caller_of(request.caller), request.fits_hash, ob_id)
        return image_pb(image)

    @servicer_errors
    async def RecordDisplays(
        self, request: catalog_pb2.RecordDisplaysRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.RecordDisplaysResponse:
        await self.images.record_displays(list(request.fits_hashes))
        return catalog_pb2.RecordDisplaysResponse()

    @servicer_errors
    async def DeleteImage(
        self, request: catalog_pb2.DeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.DeleteImageResponse:
        tombstone = await self.images.delete(caller_of(request.caller), request.fits_hash)
        return catalog_pb2.DeleteImageResponse(tombstone=tombstone_pb(tombstone))

    @servicer_errors
    async def Cull(
        self, request: catalog_pb2.CullRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.CullResponse:
        result = await self.culler.cull(force=request.force)
        return catalog_pb2.CullResponse(
            culled=[tombstone_pb(t) for t in result.culled],
            freed_bytes=result.freed_bytes,
            usage=usage_pb(result.usage),
        )

    @servicer_errors
    async def Sweep(
        self, request: catalog_pb2.SweepRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.SweepResponse:
        if request.min_age_seconds < 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "min_age_seconds is negative")
        min_age = request.min_age_seconds if request.HasField("min_age_seconds") else self.sweep_min_age_s
        result = await self.sweeper.sweep(min_age)
        return catalog_pb2.SweepResponse(
            removed_objects=result.removed_objects, removed_bytes=result.removed_bytes
        )

    @servicer_errors
    async def CheckConsistency(
        self, request: catalog_pb2.CheckConsistencyRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.CheckConsistencyResponse:
        if request.min_age_seconds < 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "min_age_seconds is negative")
        found = await consistency.check(self.repo, self.sweeper.store, request.min_age_seconds)
        return catalog_pb2.CheckConsistencyResponse(
            unheld_objects=found.unheld,
            missing_objects=found.missing,
            objects_checked=found.objects_checked,
            contents_checked=found.contents_checked,
        )

    @servicer_errors
    async def GetUsage(
        self, request: catalog_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Usage:
        return usage_pb(await self.culler.usage(reconcile=request.reconcile))
