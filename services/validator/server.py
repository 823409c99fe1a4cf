"""gRPC transport of the validator: parse the request, run the checks in a thread, answer the report."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from bgimages.validator.v1 import validator_pb2, validator_pb2_grpc
from services.shared.admission import Admission
from services.shared.errors import Code, ServiceError
from services.shared.failpoints import failpoint
from services.shared.fits_header import Limits
from services.shared.grpc_edge import GrpcServer, servicer_errors
from services.shared.settings import ValidatorSettings
from services.shared.store import ObjectStore, check_key
from services.validator.fits_checks import Target, check_position, validate_object
from services.validator.header_check import Segment, check_headers

log = logging.getLogger(__name__)

SERVICE_NAME = validator_pb2.DESCRIPTOR.services_by_name["ValidatorService"].full_name


def limits_of(settings: ValidatorSettings) -> Limits:
    return Limits(
        max_hdus=settings.max_hdus,
        max_header_cards=settings.max_header_cards,
        max_total_header_cards=settings.max_total_header_cards,
        max_decompressed_bytes=settings.max_decompressed_bytes,
    )


def target_of(request: validator_pb2.ValidateRequest | validator_pb2.CheckHeadersRequest) -> Target:
    """The OB's positions, refused when malformed."""
    if not request.HasField("ob") or not request.ob.HasField("target"):
        raise ServiceError(Code.INVALID_ARGUMENT, "ob.target is required", field="ob.target")
    target = check_position("ob.target", request.ob.target.ra_deg, request.ob.target.dec_deg)
    boa = None
    if request.ob.HasField("boa_star"):
        boa = check_position("ob.boa_star", request.ob.boa_star.ra_deg, request.ob.boa_star.dec_deg)
    return Target(target, boa)


class ValidatorServicer(validator_pb2_grpc.ValidatorServiceServicer):
    def __init__(
        self,
        store: ObjectStore,
        limits: Limits,
        max_concurrent: int = 4,
        max_queued: int = 16,
        retry_after_s: float = 10,
    ) -> None:
        self.store = store
        self.limits = limits
        # Each validation is a thread (and, for a compressed file, a gzip process): bound
        # them, and the calls waiting for one (BUSY beyond: the gateway answers 503).
        self.admission = Admission("the validator", max_concurrent, max_queued, retry_after_s)

    @servicer_errors
    async def Validate(  # noqa: N802 - the contract's name
        self, request: validator_pb2.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> validator_pb2.ValidateResponse:
        key = check_key(request.object_key)
        where = target_of(request)
        async with self.admission.slot():
            started = time.perf_counter()
            report = await asyncio.to_thread(
                validate_object, self.store, key, where, request.bandpass, self.limits
            )
            await failpoint("upload.validate")
        log.info(
            "validated",
            extra={
                "object_key": key,
                "ok": report.ok,
                "codes": [e.code for e in report.errors],
                "warnings": [w.code for w in report.warnings],
                "compression": report.compression,
                "hdus": len(report.hdus),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return validator_pb2.ValidateResponse(report=report.to_proto())

    @servicer_errors
    async def CheckHeaders(  # noqa: N802 - the contract's name
        self, request: validator_pb2.CheckHeadersRequest, context: grpc.aio.ServicerContext
    ) -> validator_pb2.ValidateResponse:
        where = target_of(request)
        segments = [Segment(h.offset, h.header, h.data_bytes) for h in request.hdus]
        async with self.admission.slot():
            started = time.perf_counter()
            report = await asyncio.to_thread(
                check_headers, segments, request.file_size, where, request.bandpass, self.limits
            )
        log.info(
            "headers checked",
            extra={
                "ok": report.ok,
                "codes": [e.code for e in report.errors],
                "hdus": len(report.hdus),
                "after_upload": len(report.after_upload),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return validator_pb2.ValidateResponse(report=report.to_proto())


def add_to(
    server: GrpcServer,
    store: Any,
    limits: Limits,
    max_concurrent: int = 4,
    max_queued: int = 16,
    retry_after_s: float = 10,
) -> ValidatorServicer:
    servicer = ValidatorServicer(store, limits, max_concurrent, max_queued, retry_after_s)
    server.add(validator_pb2_grpc.add_ValidatorServiceServicer_to_server, servicer, SERVICE_NAME)
    return servicer
