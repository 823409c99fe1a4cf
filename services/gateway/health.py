"""Whether the gateway can serve: each service it calls, by name (their own health
follows their databases and stores), the store, its writes, and the catalog's usage
figures for the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import grpc
from grpc_health.v1 import health_pb2

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.metrics import Metrics
from services.shared.grpc_client import call
from services.shared.store import ObjectStore, can_write

PROBE_TIMEOUT_S = 2.0
WRITE_PROBE_TIMEOUT_S = 5.0

Probe = Callable[[], Awaitable[bool]]


class ServingCheck:
    """Whether one gRPC service says SERVING on its channel (standard health check)."""

    def __init__(self, channel: grpc.aio.Channel, service: str) -> None:
        self.service = service
        self._check: grpc.aio.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    async def __call__(self) -> bool:
        try:
            response = await self._check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=PROBE_TIMEOUT_S
            )
        except Exception:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING


class Health:
    """Readiness checks and the store's state, as the probes and metrics read them."""

    def __init__(
        self,
        *,
        services: Mapping[str, Probe],
        store: ObjectStore,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        metrics: Metrics,
    ) -> None:
        self.services = dict(services)
        self.store = store
        self.catalog = catalog
        self.metrics = metrics

    async def readiness(self) -> dict[str, bool]:
        """Whether each dependency answers: the services, by name, and the store."""

        async def store_ok() -> bool:
            try:
                return await asyncio.wait_for(self.store.ping(), PROBE_TIMEOUT_S)
            except Exception:
                return False

        checks = {**self.services, "store": store_ok}
        results = await asyncio.gather(*(check() for check in checks.values()))
        return dict(zip(checks, results, strict=True))

    async def store_writable(self) -> bool:
        """Whether the store takes a write now (the metric follows). Reads may work
        when writes do not: that is no reason to stop serving tiles."""
        try:
            ok = await asyncio.wait_for(can_write(self.store), WRITE_PROBE_TIMEOUT_S)
        except TimeoutError:
            ok = False
        self.metrics.store_writable.set(1 if ok else 0)
        return ok

    async def usage(self) -> catalog_pb2.Usage:
        """The catalog's storage usage and cull count (deadline: the channel's, for GetUsage)."""
        return await call(self.catalog.GetUsage, catalog_pb2.GetUsageRequest())
