"""The gRPC plumbing: health names, the service credential during a rotation, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared.errors import Code, ServiceError
from services.shared.grpc_client import call, channel
from services.shared.grpc_edge import LIVENESS, GrpcServer, servicer_errors

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAME = "bgimages.catalog.v1.CatalogService"


class Refusing(catalog_pb2_grpc.CatalogServiceServicer):
    @servicer_errors
    async def SetRun(self, request: catalog_pb2.SetRunRequest, context: grpc.aio.ServicerContext) -> None:
        raise ServiceError(Code.UNKNOWN_RUN, f"no run {request.run_id}", run_id=request.run_id)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = GrpcServer("127.0.0.1", 0, "new-token,old-token", grace_s=1)
    srv.add(catalog_pb2_grpc.add_CatalogServiceServicer_to_server, Refusing(), NAME)  # type: ignore[abstract]
    await srv.start()
    yield srv
    await srv.stop()


async def test_liveness_stays_serving_when_readiness_drops(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert (await health.Check(health_pb2.HealthCheckRequest(service=NAME))).status == SERVING
        await server.set_serving(False)
        assert (await health.Check(health_pb2.HealthCheckRequest(service=NAME))).status == NOT_SERVING
        assert (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == NOT_SERVING
        assert (await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS))).status == SERVING


@pytest.mark.parametrize("token", ["old-token", "new-token,old-token", "new-token"])
async def test_every_listed_token_is_accepted_and_errors_keep_their_code(
    server: GrpcServer, token: str
) -> None:
    async with channel(f"127.0.0.1:{server.port}", token) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        with pytest.raises(ServiceError) as err:
            await call(stub.SetRun, catalog_pb2.SetRunRequest(run_id="p2:1"))
    assert err.value.code == "UNKNOWN_RUN"
    assert err.value.message == "no run p2:1"
    assert err.value.details == {"run_id": "p2:1"}


async def test_a_token_not_listed_is_refused(server: GrpcServer) -> None:
    async with channel(f"127.0.0.1:{server.port}", "stolen") as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        with pytest.raises(ServiceError) as err:
            await call(stub.SetRun, catalog_pb2.SetRunRequest(run_id="p2:1"))
    # A refused credential is our misconfiguration, not the user's fault: INTERNAL, saying why.
    assert err.value.code == "INTERNAL"
    assert "UNAUTHENTICATED" in err.value.message
