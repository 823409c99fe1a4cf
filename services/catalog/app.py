"""The catalog's parts and how they are put together: database (embedded when
DATABASE_URL is empty), migrations, object store, the servicer, and the
background rounds (health, culling, sweep)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from bgimages.catalog.v1 import catalog_pb2_grpc
from services.catalog.culling import Capacity, Culler
from services.catalog.images import Images
from services.catalog.repository import HOUSEKEEPING_LOCK, Repository, migrate
from services.catalog.server import SERVICE_NAME, CatalogServicer
from services.catalog.sweep import Sweeper
from services.catalog.uploads import Uploads
from services.shared.settings import CatalogSettings
from services.shared.startup import GrpcService
from services.shared.store import ObjectStore

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0


def database_url(settings: CatalogSettings) -> str:
    if url := settings.database_url.get_secret_value():
        return url
    from services.shared import embedded_pg

    return embedded_pg.start(settings.pg_data_dir)


@dataclasses.dataclass
class Catalog:
    """The catalog's parts, built once and handed to the servicer."""

    repo: Repository
    store: ObjectStore
    uploads: Uploads
    images: Images
    culler: Culler
    sweeper: Sweeper
    servicer: CatalogServicer


def build(settings: CatalogSettings, pool: asyncpg.Pool, store: ObjectStore) -> Catalog:
    repo = Repository(pool)
    uploads = Uploads(repo, store, settings.lease_ttl_s)
    images = Images(repo, store, settings.tombstone_days)
    culler = Culler(repo, store, Capacity(settings.capacity_bytes, settings.high_water, settings.low_water))
    sweeper = Sweeper(repo, store, settings.tombstone_days)
    servicer = CatalogServicer(repo, uploads, images, culler, sweeper, settings.sweep_min_age_s)
    return Catalog(repo, store, uploads, images, culler, sweeper, servicer)


async def housekeeping(
    catalog: Catalog, cull_interval_s: float, sweep_interval_s: float, sweep_min_age_s: int
) -> None:
    """Background rounds: culling every cull_interval_s, the sweep every
    sweep_interval_s; one replica at a time (an advisory lock)."""
    loop = asyncio.get_running_loop()
    next_sweep = loop.time() + sweep_interval_s
    while True:
        await asyncio.sleep(cull_interval_s)
        try:
            async with catalog.repo.connection() as conn:
                if not await catalog.repo.try_lock(conn, HOUSEKEEPING_LOCK):
                    continue  # another replica is at it
                try:
                    result = await catalog.culler.cull()
                    if result.culled:
                        log.info("culled %d images, freed %d bytes", len(result.culled), result.freed_bytes)
                    if loop.time() >= next_sweep:
                        next_sweep = loop.time() + sweep_interval_s
                        await catalog.sweeper.sweep(sweep_min_age_s)
                finally:
                    await catalog.repo.unlock(conn, HOUSEKEEPING_LOCK)
        except Exception:
            log.exception("culling/sweep round failed")


class CatalogServer:
    """The gRPC service with its background rounds, for `python -m services.catalog` and for tests."""

    def __init__(self, settings: CatalogSettings, pool: asyncpg.Pool, store: ObjectStore) -> None:
        self.settings = settings
        self.catalog = build(settings, pool, store)
        self.service = GrpcService.of(settings)
        self.grpc = self.service.server
        self.grpc.add(
            catalog_pb2_grpc.add_CatalogServiceServicer_to_server, self.catalog.servicer, SERVICE_NAME
        )

    @property
    def port(self) -> int:
        return self.grpc.port

    def on_stop(self, close: Callable[[], Any]) -> None:
        """Called once the server stopped (the pool is closed last)."""
        self.service.on_stop(close)

    async def start(self, background: bool = True, health_interval: float = HEALTH_INTERVAL_S) -> None:
        self.service.watch(self.catalog.repo.ping, health_interval, "database")
        if background:
            self.service.background(
                lambda: housekeeping(
                    self.catalog,
                    self.settings.cull_interval_s,
                    self.settings.sweep_interval_s,
                    self.settings.sweep_min_age_s,
                )
            )
        await self.service.start()

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.service.stop(grace_s)


async def apply_migrations(url: str) -> list[str]:
    """Brings the schema up to date (the `migrate` command, and every start-up)."""
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    log.info("migrations applied: %s", applied or "none needed")
    return applied


async def run_migrations(settings: CatalogSettings) -> None:
    await apply_migrations(await asyncio.to_thread(database_url, settings))
