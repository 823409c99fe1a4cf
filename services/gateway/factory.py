"""Builds the gateway's parts once per process: the gRPC channels to the three
services (each named, with its deadlines and retry policy), the store, and the
services the handlers call, each handed its collaborators."""

from __future__ import annotations

import dataclasses

import grpc

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from bgimages.validator.v1 import validator_pb2, validator_pb2_grpc
from services.gateway.archive_images import ArchiveImages, ArchiveLimits
from services.gateway.displays import Displays
from services.gateway.finding_charts import FindingCharts
from services.gateway.gaia_images import GaiaImages, GaiaLimits
from services.gateway.health import Health, ServingCheck
from services.gateway.hips import Hips
from services.gateway.hips_tokens import HipsTokens
from services.gateway.images import Images
from services.gateway.metrics import Metrics
from services.gateway.resumable import Policy, Resumable, spool_dir
from services.gateway.runs import Runs
from services.gateway.selector import Selector
from services.gateway.surveys import Surveys
from services.gateway.uploads import Uploads
from services.shared.eso_archive import EsoArchive
from services.shared.gaia import GaiaCatalogue
from services.shared.grpc_client import CallPolicy, channel
from services.shared.settings import GatewaySettings
from services.shared.store import ObjectStore, open_store

VALIDATOR = validator_pb2.DESCRIPTOR.services_by_name["ValidatorService"].full_name
PROCESSOR = processor_pb2.DESCRIPTOR.services_by_name["ProcessorService"].full_name
CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
USAGE_TIMEOUT_S = 2.0  # a metrics scrape does not wait longer for the catalog's figures


def policies(settings: GatewaySettings) -> dict[str, CallPolicy]:
    """Deadlines and retries per service. Only reads are retried (on UNAVAILABLE):
    never BeginUpload, CompleteUpload, Process and the other calls that change state."""
    return {
        "validator": CallPolicy(VALIDATOR, settings.validate_timeout_s, retried=frozenset({"Validate"})),
        "processor": CallPolicy(PROCESSOR, settings.process_timeout_s),
        "catalog": CallPolicy(
            CATALOG,
            settings.catalog_timeout_s,
            retried=frozenset({"ListImages", "GetImage", "GetSelection", "AuthorizeDisplay", "GetUsage"}),
            timeouts={"GetUsage": USAGE_TIMEOUT_S},
        ),
    }


@dataclasses.dataclass
class Backends:
    """The channels to the three services, by name, and their typed stubs."""

    channels: dict[str, grpc.aio.Channel]
    validator: validator_pb2_grpc.ValidatorServiceAsyncStub
    processor: processor_pb2_grpc.ProcessorServiceAsyncStub
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub

    @classmethod
    def connect(cls, settings: GatewaySettings) -> Backends:
        addresses = {
            "validator": settings.validator_addr,
            "processor": settings.processor_addr,
            "catalog": settings.catalog_addr,
        }
        channels = {
            name: channel(addresses[name], settings.service_token.get_secret_value(), policy)
            for name, policy in policies(settings).items()
        }
        return cls(
            channels=channels,
            validator=validator_pb2_grpc.ValidatorServiceStub(channels["validator"]),
            processor=processor_pb2_grpc.ProcessorServiceStub(channels["processor"]),
            catalog=catalog_pb2_grpc.CatalogServiceStub(channels["catalog"]),
        )

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close(None)


@dataclasses.dataclass
class Gateway:
    """The gateway's services, as the handlers of both faces get them."""

    uploads: Uploads
    resumable: Resumable
    selector: Selector
    surveys: Surveys
    images: Images
    hips: Hips
    runs: Runs
    health: Health
    displays: Displays
    metrics: Metrics
    backends: Backends
    gaia: GaiaImages
    archive: ArchiveImages
    charts: FindingCharts

    async def start(self) -> None:
        await self.displays.start()
        await self.archive.start()

    async def close(self) -> None:
        await self.uploads.close()
        await self.displays.close()
        await self.archive.close()
        await self.backends.close()
        if self.gaia.catalogue is not None:
            self.gaia.catalogue.close()


def archive_images(
    settings: GatewaySettings, uploads: Uploads, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub
) -> ArchiveImages:
    """The archive source of the selector (none when ARCHIVE_TAP_URL is empty)."""
    archive = None
    if settings.archive_tap_url and settings.archive_file_base:
        archive = EsoArchive(
            settings.archive_tap_url,
            settings.archive_file_base,
            connect_timeout_s=min(settings.archive_query_timeout_s, 5.0),
            read_timeout_s=settings.archive_query_timeout_s,
        )
    limits = ArchiveLimits(
        query_deadline_s=settings.archive_query_timeout_s,
        cache_s=settings.archive_cache_s,
        max_file_bytes=min(settings.archive_max_file_bytes, settings.max_upload_bytes),
        fetch_timeout_s=settings.archive_fetch_timeout_s,
    )
    return ArchiveImages(archive=archive, uploads=uploads, catalog=catalog, limits=limits)


def gaia_images(settings: GatewaySettings, uploads: Uploads) -> GaiaImages:
    """The Gaia source of the selector, on the TAP service GAIA_TAP_URL names (none: empty)."""
    catalogue = None
    if settings.gaia_tap_url:
        catalogue = GaiaCatalogue(
            settings.gaia_tap_url,
            table=settings.gaia_table,
            connect_timeout_s=min(settings.gaia_timeout_s, 5.0),
            read_timeout_s=settings.gaia_timeout_s,
        )
    limits = GaiaLimits(
        mag_limit=settings.gaia_mag_limit,
        max_sources=settings.gaia_max_sources,
        query_deadline_s=settings.gaia_timeout_s,
        probe_deadline_s=settings.gaia_probe_timeout_s,
        status_ttl_s=settings.gaia_status_ttl_s,
        field_radius_arcsec=settings.gaia_field_radius_arcsec,
    )
    return GaiaImages(catalogue=catalogue, uploads=uploads, limits=limits)


def build(
    settings: GatewaySettings,
    *,
    store: ObjectStore | None = None,
    metrics: Metrics | None = None,
    backends: Backends | None = None,
) -> Gateway:
    """The gateway's parts, connected to the services and the store the settings name."""
    store = store if store is not None else open_store(settings)
    metrics = metrics if metrics is not None else Metrics()
    backends = backends if backends is not None else Backends.connect(settings)
    catalog = backends.catalog
    surveys = Surveys.from_setting(settings.surveys)
    images = Images(catalog=catalog, store=store)
    displays = Displays(catalog=catalog, flush_s=settings.display_flush_s)
    probes = {
        "validator": ServingCheck(backends.channels["validator"], VALIDATOR),
        "processor": ServingCheck(backends.channels["processor"], PROCESSOR),
        "catalog": ServingCheck(backends.channels["catalog"], CATALOG),
    }
    uploads = Uploads(
        store=store,
        validator=backends.validator,
        processor=backends.processor,
        catalog=catalog,
        metrics=metrics,
        max_uploads=settings.max_uploads,
        max_uploads_per_user=settings.max_uploads_per_user,
        retry_after_s=settings.upload_retry_after_s,
    )
    gaia = gaia_images(settings, uploads)
    archive = archive_images(settings, uploads, catalog)
    resumable = Resumable(
        uploads,
        catalog,
        store,
        Policy(
            max_bytes=settings.max_upload_bytes,
            ttl_s=settings.resumable_ttl_s,
            claim_s=settings.resumable_claim_s,
            max_per_user=settings.resumable_max_per_user,
            spool_dir=spool_dir(settings.spool_dir),
        ),
    )
    return Gateway(
        uploads=uploads,
        resumable=resumable,
        selector=Selector(catalog=catalog, gaia=gaia, archive=archive, surveys=surveys),
        surveys=surveys,
        images=images,
        hips=Hips(images=images, tokens=HipsTokens.from_settings(settings), store=store, displays=displays),
        runs=Runs(catalog=catalog),
        health=Health(services=probes, store=store, catalog=catalog, metrics=metrics),
        displays=displays,
        metrics=metrics,
        backends=backends,
        gaia=gaia,
        archive=archive,
        charts=FindingCharts(
            catalog=catalog,
            processor=backends.processor,
            images=images,
            gaia=gaia,
            surveys=surveys,
            optical_survey=settings.chart_survey_optical,
            infrared_survey=settings.chart_survey_infrared,
        ),
    )
