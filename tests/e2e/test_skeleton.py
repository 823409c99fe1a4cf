"""The whole path once, end to end: four processes, real gRPC, real PostgreSQL, HTTP.

Upload a generated 2048x2048 FITS through the gateway, find it in the
listing and its HiPS in the store; a target outside the image is refused
with TARGET_OUTSIDE_FIELD and changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.devrun import GRPC_SERVICES, Suite
from tests.conftest import suite_store
from tests.fitsgen import write_image

RUN = "p2:60.A-9001(A)"
OWNER = "p2:1001"


async def store_keys(suite: Suite) -> list[str]:
    return sorted([info.key async for info in suite_store(suite).list("")])


async def image_rows(suite: Suite) -> int:
    conn = await asyncpg.connect(suite.env["DATABASE_URL"])
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM images")
        return count
    finally:
        await conn.close()


async def upload(
    suite: Suite, path: Path, ob_id: int, run_id: str, target: tuple[float, float], user: str = OWNER
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("run_id", run_id)
    form.add_field("target_ra", str(target[0]))
    form.add_field("target_dec", str(target[1]))
    form.add_field("file", path.open("rb"), filename=path.name, content_type="application/fits")
    headers = {"Authorization": f"Bearer {suite.token(user)}"}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{suite.gateway_url}/api/v1/obs/{ob_id}/background-images", data=form, headers=headers
        )
        await resp.read()
        return resp


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fits") / "field 2048.fits"
    return write_image(path, ra=210.0, dec=-30.0, size=2048, scale_arcsec=0.3, filter_name="Ks")


async def test_upload_is_listed_and_its_hips_stored(suite: Suite, big_image: Path) -> None:
    suite.set_run(RUN, OWNER)
    resp = await upload(suite, big_image, 70001, RUN, (210.0, -30.0))
    body = await resp.json()
    assert resp.status == 201, body
    fits_hash = hashlib.sha256(big_image.read_bytes()).hexdigest()
    assert body["fits_hash"] == fits_hash
    assert body["file_name"] == "field 2048.fits"
    assert body["filter"] == "Ks"

    headers = {"Authorization": f"Bearer {suite.token(OWNER)}"}
    params = {"run_id": RUN, "target_ra": "210.01", "target_dec": "-30.01"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{suite.gateway_url}/api/v1/obs/70001/background-images", params=params, headers=headers
        ) as listing,
    ):
        assert listing.status == 200
        data = await listing.json()
    own = [img["fits_hash"] for img in data["own"]]
    assert own == [fits_hash]
    assert data["selected"]["value"] == fits_hash

    keys = await store_keys(suite)
    hips = [k for k in keys if k.startswith(f"content/{fits_hash}/") and "/hips/" in k]
    assert any(k.endswith("/hips/properties") for k in hips)
    properties = (
        Path(suite.env["STORE_DIR"]) / next(k for k in hips if k.endswith("properties"))
    ).read_text()
    order = int(re.search(r"^hips_order\s*=\s*(\d+)", properties, re.M).group(1))  # type: ignore[union-attr]
    deepest = [k for k in hips if re.search(rf"/Norder{order}/Dir\d+/Npix\d+\.fits$", k)]
    assert deepest, f"no order-{order} tiles in {hips[:20]}"
    assert not [k for k in keys if k.startswith("staging/")], "the staging object is left behind"


async def test_target_outside_changes_nothing(suite: Suite, tmp_path: Path) -> None:
    suite.set_run(RUN, OWNER)
    path = write_image(tmp_path / "elsewhere.fits", ra=10.0, dec=10.0, size=512)
    before_keys, before_rows = await store_keys(suite), await image_rows(suite)
    resp = await upload(suite, path, 70002, RUN, (11.0, 10.0))
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["code"] == "TARGET_OUTSIDE_FIELD"
    assert problem["status"] == 422
    assert await store_keys(suite) == before_keys
    assert await image_rows(suite) == before_rows


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
def test_health_and_reflection(suite: Suite, name: str) -> None:
    with grpc.insecure_channel(suite.address(name)) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        resp = health.Check(health_pb2.HealthCheckRequest(service=GRPC_SERVICES[name]), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        listed = {s.name for s in answers[0].list_services_response.service}
        assert {GRPC_SERVICES[name], "grpc.health.v1.Health"} <= listed


METHODS = {"validator": "Validate", "processor": "Process", "catalog": "SetRun"}


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
@pytest.mark.parametrize("token", [None, "wrong"])
def test_internal_calls_need_the_service_credential(suite: Suite, name: str, token: str | None) -> None:
    with grpc.insecure_channel(suite.address(name)) as ch:
        method = ch.unary_unary(
            f"/{GRPC_SERVICES[name]}/{METHODS[name]}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        metadata = () if token is None else (("x-service-token", token),)
        with pytest.raises(grpc.RpcError) as err:
            method(b"", metadata=metadata, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
