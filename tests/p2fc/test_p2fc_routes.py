"""The p2api face's routes in the real gateway app, for requests refused before any backend is used.

Nothing here reaches the catalog, validator or processor (their addresses
point nowhere): these are the answers given from the URL, the mode and p2.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.gateway.app import DOCUMENT, create_app
from services.gateway.p2fc import normalize_prefix
from services.shared.settings import GatewaySettings
from tests import contract
from tests.p2fc.p2_standin import P2StandIn, Trap

TOKEN = "tok-route-7c1d"


@pytest.fixture(scope="module")
def p2() -> Iterator[P2StandIn]:
    server = P2StandIn()
    server.add_user(81, TOKEN)
    server.add_run(8101, "60.A-9999(A)", 81)
    server.add_ob(8001, 8101, "10:00:00.000", "+02:00:00.00")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http(p2: P2StandIn) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    settings = GatewaySettings(
        p2_api_bases=f"p2={p2.url}",
        p2fc_prefix="/p2fcdemo",
        p2_timeout_s=2.0,
        dev_mode=True,
        hips_signing_key=SecretStr("k" * 32),
        validator_addr="127.0.0.1:9",
        processor_addr="127.0.0.1:9",
        catalog_addr="127.0.0.1:9",
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        contract.watch(str(client.make_url("/")), client.app[DOCUMENT])
        yield client


def test_prefix_normalization() -> None:
    assert normalize_prefix("/p2fc/") == "/p2fc/"
    assert normalize_prefix("p2fc") == "/p2fc/"
    assert normalize_prefix("/a/b") == "/a/b/"
    for bad in ("/", "", "/{x}/"):
        with pytest.raises(ValueError):
            normalize_prefix(bad)


async def test_configured_prefix_with_doubled_slash(http: TestClient, p2: P2StandIn, trap: Trap) -> None:  # type: ignore[type-arg]
    ob_url = f"{trap.url}/cop/api/v1/obsBlocks/8001"
    for path in ("/p2fcdemo//bkg_image", "/p2fcdemo/bkg_image"):
        resp = await http.get(f"{path}?url={ob_url}&access_token={TOKEN}&mode=get_ob")
        assert resp.status == 403
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["code"] == "FORBIDDEN"
        assert "trusts" in body["error"]
    # The default prefix is not served when another is configured.
    resp = await http.get(f"/p2fc//bkg_image?url={ob_url}&access_token={TOKEN}&mode=get_ob")
    assert resp.status == 404
    assert trap.seen == []


async def test_mode_and_method_errors_are_json(http: TestClient, p2: P2StandIn) -> None:  # type: ignore[type-arg]
    ob_url = f"{p2.url}/obsBlocks/8001"
    cases = [
        (
            "GET",
            f"/p2fcdemo//bkg_image?url={ob_url}&access_token={TOKEN}&mode=everything",
            400,
            "INVALID_ARGUMENT",
        ),
        ("GET", f"/p2fcdemo//bkg_image?url={ob_url}&access_token={TOKEN}", 400, "INVALID_ARGUMENT"),
        ("PUT", "/p2fcdemo//bkg_image", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/p2fcdemo//", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/p2fcdemo", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/p2fcdemo//../api/v1/openapi.json", 404, "NOT_FOUND"),
        (
            "DELETE",
            f"/p2fcdemo//bkg_image_delete?url={ob_url}&access_token={TOKEN}&fits_hash=abc",
            400,
            "INVALID_ARGUMENT",
        ),
    ]
    asked = len(p2.seen)
    for method, path, status, code in cases:
        resp = await http.request(method, path)
        assert resp.status == status, path
        assert resp.content_type == "application/json", path
        body = await resp.json()
        assert body["code"] == code, path
        assert body["error"], path
    assert p2.seen[asked:] == []


async def test_form_without_mode_is_a_finding_chart_request(http: TestClient, p2: P2StandIn) -> None:  # type: ignore[type-arg]
    asked = len(p2.seen)
    resp = await http.post(
        "/p2fcdemo//",
        data={"url": f"{p2.url}/obsBlocks/8001", "access_token": TOKEN, "pmin": "2.5", "survey": "NOPE"},
    )
    # generateFindingChart: an unknown survey is refused with the known names, before p2 is asked.
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "INVALID_ARGUMENT" and "2MASS-K" in body["error"]
    assert p2.seen[asked:] == []


async def test_p2_answers_reach_the_client_as_json(http: TestClient, p2: P2StandIn) -> None:  # type: ignore[type-arg]
    ob_url = f"{p2.url}/obsBlocks/8001"
    resp = await http.post(
        "/p2fcdemo//",
        data={"url": ob_url, "access_token": "wrong", "mode": "set_ob_info", "value": "default"},
    )
    assert resp.status == 401
    assert (await resp.json())["error"] == "p2 did not accept the access token (expired or wrong?)"
    resp = await http.get(
        f"/p2fcdemo//bkg_image?url={p2.url}/obsBlocks/9999&access_token={TOKEN}&mode=get_ob"
    )
    assert resp.status == 404
    assert (await resp.json())["error"] == "p2 knows no OB 9999"
