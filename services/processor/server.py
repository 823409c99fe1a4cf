"""gRPC transport of the processor: parse the request, run the job, answer keys and figures."""

from __future__ import annotations

import logging

import grpc

from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from services.processor.processing import Processor, job_from_request
from services.shared.admission import Admission
from services.shared.errors import Code, ServiceError
from services.shared.grpc_edge import GrpcServer, servicer_errors
from services.shared.store import check_key

log = logging.getLogger(__name__)

SERVICE_NAME = processor_pb2.DESCRIPTOR.services_by_name["ProcessorService"].full_name


class ProcessorServicer(processor_pb2_grpc.ProcessorServiceServicer):
    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        # Jobs run PROCESSOR_MAX_JOBS at a time; at most PROCESSOR_MAX_QUEUED wait for a
        # turn, one more is refused at once (BUSY: the gateway answers 503 with Retry-After).
        settings = processor.settings
        self.admission = Admission(
            "the processor", settings.max_jobs, settings.max_queued, settings.retry_after_s
        )

    @servicer_errors
    async def Process(  # noqa: N802 - the contract's name
        self, request: processor_pb2.ProcessRequest, context: grpc.aio.ServicerContext
    ) -> processor_pb2.ProcessResponse:
        check_key(request.source_key)
        if not request.output_prefix.endswith("/"):
            raise ServiceError(
                Code.INVALID_ARGUMENT, "output_prefix must end with '/'", field="output_prefix"
            )
        check_key(request.output_prefix.rstrip("/"))
        async with self.admission.slot():
            outcome = await self.processor.process(job_from_request(request))
        log.info(
            "processed",
            extra={
                "source_key": request.source_key,
                "output_prefix": request.output_prefix,
                "hips_order": outcome.hips_order,
                "tiles": outcome.tile_count,
                "stored_bytes": outcome.stored_bytes,
                "mosaic": outcome.mosaic,
            },
        )
        return processor_pb2.ProcessResponse(
            fits_key=outcome.fits_key,
            preview_key=outcome.preview_key,
            hips_prefix=outcome.hips_prefix,
            hips_order=outcome.hips_order,
            pixel_cut=processor_pb2.PixelCut(low=outcome.cut.low, high=outcome.cut.high),
            stored_bytes=outcome.stored_bytes,
            tile_count=outcome.tile_count,
        )


def add_to(server: GrpcServer, processor: Processor) -> ProcessorServicer:
    servicer = ProcessorServicer(processor)
    server.add(processor_pb2_grpc.add_ProcessorServiceServicer_to_server, servicer, SERVICE_NAME)
    return servicer
