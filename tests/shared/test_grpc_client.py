"""The client half of the gRPC edge: a channel's CallPolicy gives each call its
deadline and retries the listed (idempotent) methods on UNAVAILABLE, and no other."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared.errors import ServiceError
from services.shared.grpc_client import CallPolicy, call, channel
from services.shared.grpc_edge import GrpcServer

NAME = "bgimages.catalog.v1.CatalogService"
TOKEN = "client-token"


class Flaky(catalog_pb2_grpc.CatalogServiceServicer):
    """GetImage and Select fail UNAVAILABLE twice, then answer; ListImages never answers."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def _flaky(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def GetImage(
        self, request: catalog_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        await self._flaky("GetImage", context)
        return catalog_pb2.Image(fits_hash=request.fits_hash)

    async def Select(
        self, request: catalog_pb2.SelectRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Selection:
        await self._flaky("Select", context)
        return catalog_pb2.Selection(value=request.value)

    async def ListImages(
        self, request: catalog_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListImagesResponse:
        await asyncio.sleep(60)
        return catalog_pb2.ListImagesResponse()


POLICY = CallPolicy(NAME, 30.0, retried=frozenset({"GetImage"}), timeouts={"ListImages": 0.5})


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, catalog_pb2_grpc.CatalogServiceAsyncStub]]:
    servicer = Flaky()  # type: ignore[abstract]
    srv = GrpcServer("127.0.0.1", 0, TOKEN, grace_s=0)
    srv.add(catalog_pb2_grpc.add_CatalogServiceServicer_to_server, servicer, NAME)  # type: ignore[abstract]
    await srv.start()
    async with channel(f"127.0.0.1:{srv.port}", TOKEN, POLICY) as ch:
        yield servicer, catalog_pb2_grpc.CatalogServiceStub(ch)
    await srv.stop(0)


def test_the_service_config_retries_the_listed_methods_only() -> None:
    config = json.loads(POLICY.service_config())
    assert [c["name"] for c in config["methodConfig"]] == [[{"service": NAME, "method": "GetImage"}]]
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    # Deadlines are the interceptor's (grpcio applies a service-config timeout early).
    assert "timeout" not in config["methodConfig"][0]


def test_deadlines_per_method() -> None:
    assert POLICY.deadline(f"/{NAME}/GetImage", None) == 30.0
    assert POLICY.deadline(f"/{NAME}/ListImages", None) == 0.5
    assert POLICY.deadline(f"/{NAME}/ListImages", 0.1) == 0.1
    assert POLICY.deadline(f"/{NAME}/GetImage", 60.0) == 30.0
    assert POLICY.deadline("/grpc.health.v1.Health/Check", 2.0) == 2.0


async def test_a_listed_method_is_retried_on_unavailable(
    flaky: tuple[Flaky, catalog_pb2_grpc.CatalogServiceAsyncStub],
) -> None:
    servicer, stub = flaky
    image = await call(stub.GetImage, catalog_pb2.GetImageRequest(fits_hash="a" * 64))
    assert image.fits_hash == "a" * 64
    assert servicer.calls["GetImage"] == 3


async def test_another_method_is_not_retried(
    flaky: tuple[Flaky, catalog_pb2_grpc.CatalogServiceAsyncStub],
) -> None:
    servicer, stub = flaky
    with pytest.raises(ServiceError) as err:
        await call(stub.Select, catalog_pb2.SelectRequest(value="x"))
    assert err.value.code == "UNAVAILABLE"
    assert servicer.calls["Select"] == 1


async def test_the_deadline_comes_from_the_channel(
    flaky: tuple[Flaky, catalog_pb2_grpc.CatalogServiceAsyncStub],
) -> None:
    _, stub = flaky
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as err:
        await call(stub.ListImages, catalog_pb2.ListImagesRequest())
    assert err.value.code == "UNAVAILABLE", err.value.message
    assert 0.4 < time.monotonic() - t0 < 5
    # A deadline given with the call is kept when it is the shorter.
    t0 = time.monotonic()
    with pytest.raises(ServiceError):
        await call(stub.ListImages, catalog_pb2.ListImagesRequest(), timeout=0.1)
    assert time.monotonic() - t0 < 0.4
