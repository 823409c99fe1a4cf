"""The OpenAPI document: valid OpenAPI 3.1, generated from the same route table the
router serves (the routes come from the app, not from a list here), and the contract
check that holds every API test's responses to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict
from openapi_spec_validator import validate
from pydantic import SecretStr

from services.gateway.app import DOCUMENT, GATEWAY, create_app
from services.gateway.openapi import error_codes
from services.shared.settings import GatewaySettings
from tests.contract import Contract, Mismatch, documented, routed

HASH = "a" * 64


async def built(**settings: Any) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The document of an app with these settings, and the routes its router serves."""
    app = create_app(GatewaySettings(dev_mode=True, hips_signing_key=SecretStr("k" * 32), **settings))
    try:
        return app[DOCUMENT], routed(app)
    finally:
        await app[GATEWAY].close()


@pytest.mark.parametrize(
    "extra",
    [{}, {"default_survey_dir": str(Path(__file__).parent), "p2fc_prefix": "/elsewhere"}],
    ids=["defaults", "survey-and-prefix"],
)
async def test_every_route_is_documented_and_every_documented_route_served(extra: dict[str, str]) -> None:
    document, served = await built(**extra)
    validate(document)  # OpenAPI 3.1
    assert document["openapi"] == "3.1.0"
    assert served == documented(document)


async def test_every_error_code_is_in_the_error_schemas() -> None:
    schemas = (await built())[0]["components"]["schemas"]
    for name in ("Problem", "P2fcError"):
        assert schemas[name]["properties"]["code"]["enum"] == error_codes()
    assert schemas["Finding"]["properties"]["code"]["enum"] == error_codes()


async def test_response_bodies_are_closed() -> None:
    """A key a builder adds without its model fails the check: bodies allow no others."""
    schemas = (await built())[0]["components"]["schemas"]
    for name in ("Image", "Listing", "Selection", "Tombstone", "HipsUrl", "Run", "ObInfo", "P2fcImage"):
        assert schemas[name]["additionalProperties"] is False, name


# ---- the contract check catches what it is there for ------------------------------------------


@pytest.fixture
async def contract() -> Contract:
    return Contract((await built(p2fc_prefix="/p2fc"))[0])


def _json(body: Any, content_type: str = "application/json") -> tuple[CIMultiDict[str], bytes]:
    return CIMultiDict({"Content-Type": content_type}), json.dumps(body).encode()


RUN = {"run_id": "p2:r", "owner_id": "p2:o", "delegate_ids": []}
PROBLEM = {"type": "https://x/p", "title": "t", "status": 404, "detail": "d", "code": "NOT_FOUND"}


def test_a_documented_response_passes(contract: Contract) -> None:
    contract.check("PUT", "/api/v1/runs/p2%3Ar", 200, *_json(RUN))
    contract.check("GET", f"/api/v1/images/{HASH}", 404, *_json(PROBLEM, "application/problem+json"))
    contract.check("GET", "/api/v1/nothing", 404, *_json(PROBLEM, "application/problem+json"))
    contract.check(
        "GET", "/p2fc//bkg_image", 400, *_json({"error": "e", "code": "INVALID_ARGUMENT", "status": 400})
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "content_type", "why"),
    [
        ("PUT", "/api/v1/runs/r", 200, {**RUN, "extra": 1}, "application/json", "does not match"),
        ("PUT", "/api/v1/runs/r", 200, {"run_id": "r"}, "application/json", "does not match"),
        ("PUT", "/api/v1/runs/r", 418, RUN, "application/json", "documents only"),
        ("PUT", "/api/v1/runs/r", 200, RUN, "text/plain", "the document declares"),
        ("GET", "/api/v1/undocumented", 200, RUN, "application/json", "not in the document"),
        ("PATCH", "/api/v1/runs/r", 200, RUN, "application/json", "documents only"),
        (
            "GET",
            f"/api/v1/images/{HASH}",
            404,
            {**PROBLEM, "code": "NO_SUCH_CODE"},
            "application/problem+json",
            "does not match",
        ),
        ("GET", "/p2fc/bkg_image", 200, {"x": {"fits_hash": HASH}}, "application/json", "does not match"),
    ],
)
def test_a_response_the_document_does_not_describe_fails(
    contract: Contract, method: str, path: str, status: int, body: Any, content_type: str, why: str
) -> None:
    with pytest.raises(Mismatch, match=why):
        contract.check(method, path, status, *_json(body, content_type))
