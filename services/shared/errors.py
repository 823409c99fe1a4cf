"""Domain errors with stable codes, mapped once to gRPC status and once to HTTP.

Every service raises `ServiceError` (or a subclass) with a `Code`: the values
of `bgimages.common.v1.ErrorCode`, the one list of codes, whose options in
common.proto give each code's gRPC status, HTTP status and title (`make protos`
derives the typed enum and the table from them). The gRPC edge turns it into a status with
`google.rpc.ErrorInfo` details, the client side turns it back, and the
gateway renders it as problem+json.
"""

from __future__ import annotations

from typing import Any

import grpc

from bgimages.common.v1.codes import CATALOGUE, Code, CodeSpec

__all__ = [
    "CATALOGUE",
    "DOMAIN",
    "RETRY_AFTER",
    "Code",
    "CodeSpec",
    "ServiceError",
    "http_status_of",
    "title_of",
]

DOMAIN = "bgimages.eso.org"
# The detail a refusal for load carries (TOO_MANY_UPLOADS, BUSY): seconds to wait before
# trying again, which the gateway sends as Retry-After.
RETRY_AFTER = "retry_after_s"


class ServiceError(Exception):
    """An error with a stable code, a message for people, and optional details."""

    def __init__(self, code: Code, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = Code(code)  # ValueError for a string that is not a code
        self.message = message
        self.details = details

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return grpc.StatusCode[CATALOGUE[self.code].grpc_status]

    @property
    def http_status(self) -> int:
        return CATALOGUE[self.code].http_status

    @property
    def title(self) -> str:
        return CATALOGUE[self.code].title

    def __repr__(self) -> str:
        return f"ServiceError({self.code.value!r}, {self.message!r})"


def _spec(code: str) -> CodeSpec:
    """A code's row; a string that is no code (from an older or newer peer) reads as INTERNAL."""
    try:
        return CATALOGUE[Code(code)]
    except ValueError:
        return CATALOGUE[Code.INTERNAL]


def http_status_of(code: str) -> int:
    return _spec(code).http_status


def title_of(code: str) -> str:
    return _spec(code).title
