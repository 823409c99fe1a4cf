"""Every place that lists error codes lists the same ones: the contract's enum, the
domain errors, the OpenAPI document, the gateway's HTTP mapping and the client's hints."""

from __future__ import annotations

from bgimages_client.cli import HINTS

from bgimages.common.v1 import common_pb2
from services.gateway import problems
from services.gateway.openapi import EDGE_CODES, error_codes
from services.shared import errors

# Codes only the HTTP edges make (aiohttp's own errors, the p2api face's 501): no domain
# error carries them.
HTTP_ONLY = {"METHOD_NOT_ALLOWED", "UNSUPPORTED_MEDIA_TYPE", "NOT_SUPPORTED"}
ERROR_CODES = error_codes()


def test_the_contract_and_the_domain_errors_agree() -> None:
    contract = set(common_pb2.ErrorCode.keys()) - {"ERROR_CODE_UNSPECIFIED"}
    assert contract == set(errors._CODES)


def test_the_openapi_document_lists_every_code() -> None:
    assert set(ERROR_CODES) == set(errors._CODES) | HTTP_ONLY == set(errors._CODES) | set(EDGE_CODES)
    assert len(ERROR_CODES) == len(set(ERROR_CODES))


def test_the_gateway_maps_http_errors_to_listed_codes() -> None:
    assert set(problems._HTTP_CODES.values()) <= set(ERROR_CODES)
    assert set(problems._OPAQUE) <= set(errors._CODES)


def test_the_client_explains_every_domain_code() -> None:
    assert set(errors._CODES) <= set(HINTS)
