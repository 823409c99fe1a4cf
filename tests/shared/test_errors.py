"""Error codes: every code of the contract (common.v1.ErrorCode) is known wherever codes are listed."""

from __future__ import annotations

from bgimages_client.cli import HINTS

from bgimages.common.v1 import common_pb2
from services.gateway.openapi import error_codes
from services.shared.errors import ServiceError, http_status_of

CONTRACT = set(common_pb2.ErrorCode.keys()) - {"ERROR_CODE_UNSPECIFIED"}


def test_every_contract_code_is_listed_everywhere() -> None:
    for code in sorted(CONTRACT):
        assert ServiceError(code, "x").code == code  # services/shared/errors.py knows it
        assert code in error_codes(), f"{code} missing from the OpenAPI document"
        assert code in HINTS, f"{code} has no hint in the client's command line"


def test_header_codes_are_the_users_fault() -> None:
    for code in ("BAD_HEADER", "NONSTANDARD_HEADER", "TOO_MANY_HDUS", "TOO_MANY_CARDS"):
        assert http_status_of(code) == 422
        assert ServiceError(code, "x").grpc_status.name == "INVALID_ARGUMENT"
