"""gRPC transport of the processor: parse the request, run the job, answer keys and figures."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from services.processor.processing import Processor, job_from_request
from services.shared import logs
from services.shared.admission import Admission
from services.shared.errors import ServiceError
from services.shared.grpc_edge import GrpcServer, follow_health, serve_until_signalled, servicer_errors
from services.shared.settings import ProcessorSettings
from services.shared.store import check_key, open_store

log = logging.getLogger(__name__)

SERVICE_NAME = processor_pb2.DESCRIPTOR.services_by_name["ProcessorService"].full_name
STORE_CHECK_INTERVAL_S = 10.0


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
            raise ServiceError("INVALID_ARGUMENT", "output_prefix must end with '/'", field="output_prefix")
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


async def serve(settings: ProcessorSettings) -> None:
    logs.configure("processor", settings.log_level, settings.log_format)
    store = open_store(settings)
    processor = Processor(settings, store)
    if stale := processor.remove_stale_scratch():
        log.info("removed %d job folders left by an earlier run", stale)
    server = GrpcServer(
        settings.bind_host,
        settings.port,
        settings.service_token.get_secret_value(),
        grace_s=settings.shutdown_grace_s,
    )
    add_to(server, processor)
    await server.start()
    log.info("processor listening", extra={"port": server.port})
    watcher = asyncio.create_task(follow_health(server, store.ping, STORE_CHECK_INTERVAL_S, "object store"))

    async def stop() -> None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        processor.close()

    await serve_until_signalled(server, stop)
