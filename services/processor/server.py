"""gRPC transport of the processor: parse the request, run the job, answer keys and figures."""

from __future__ import annotations

import logging

import grpc

from bgimages.common.v1 import common_pb2
from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from services.processor import charts
from services.processor.finding_chart import ChartContext, Display
from services.processor.processing import Processor, job_from_request
from services.shared.admission import Admission
from services.shared.errors import Code, ServiceError
from services.shared.grpc_edge import GrpcServer, servicer_errors
from services.shared.store import check_key

log = logging.getLogger(__name__)

SERVICE_NAME = processor_pb2.DESCRIPTOR.services_by_name["ProcessorService"].full_name


def _position(msg: common_pb2.SkyPosition) -> tuple[float, float]:
    return (msg.ra_deg, msg.dec_deg)


def chart_specs(request: processor_pb2.RenderChartsRequest) -> list[charts.ChartSpec]:
    """The charts a request asks for, checked."""
    ob = request.ob
    if not request.sources or len(request.sources) > 5:
        raise ServiceError(Code.INVALID_ARGUMENT, "1 to 5 charts a request")
    specs = []
    for source in request.sources:
        if bool(source.fits_key) == bool(source.hips):
            raise ServiceError(Code.INVALID_ARGUMENT, "each chart needs a fits_key or a hips, not both")
        d = source.display
        try:
            display = Display(
                stretch=d.stretch or "linear",
                exponent=d.exponent or 2.0,
                pmin=d.pmin if d.HasField("pmin") else 0.25,
                pmax=d.pmax if d.HasField("pmax") else 99.75,
            )
        except ValueError as err:
            raise ServiceError(Code.INVALID_ARGUMENT, str(err)) from None
        ctx = ChartContext(
            prog_id=ob.prog_id,
            pi_name=ob.pi_name,
            ob_name=ob.ob_name,
            target_name=ob.target_name,
            target=_position(ob.target),
            instrument=ob.instrument,
            mode=ob.mode or None,
            position_angle_deg=ob.position_angle_deg,
            band=source.band,
            image_name=source.title,
            boa_star=_position(ob.boa_star) if ob.HasField("boa_star") else None,
            guide_star=_position(ob.guide_star) if ob.HasField("guide_star") else None,
        )
        specs.append(charts.ChartSpec(ctx, display, source.fits_key, source.hdu, source.hips))
    return specs


class ProcessorServicer(processor_pb2_grpc.ProcessorServiceServicer):
    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.charts = charts.ChartWorkers(
            processor.settings.chart_timeout_s, processor.settings.chart_memory_bytes
        )
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

    @servicer_errors
    async def RenderCharts(  # noqa: N802 - the contract's name
        self, request: processor_pb2.RenderChartsRequest, context: grpc.aio.ServicerContext
    ) -> processor_pb2.RenderChartsResponse:
        specs = chart_specs(request)
        async with self.admission.slot():
            rendered = await charts.render_all(
                specs, self.processor.store, self.charts, self.processor.settings.scratch_dir or None
            )
        log.info("charts rendered", extra={"charts": len(rendered), "bytes": sum(map(len, rendered))})
        return processor_pb2.RenderChartsResponse(
            charts=[
                processor_pb2.RenderedChart(title=s.title, jpeg=jpeg)
                for s, jpeg in zip(request.sources, rendered, strict=True)
            ]
        )


def add_to(server: GrpcServer, processor: Processor) -> ProcessorServicer:
    servicer = ProcessorServicer(processor)
    server.add(processor_pb2_grpc.add_ProcessorServiceServicer_to_server, servicer, SERVICE_NAME)
    return servicer
