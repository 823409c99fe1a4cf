"""Domain errors with stable codes, mapped once to gRPC status and once to HTTP.

Every service raises `ServiceError` (or a subclass) with a code from
`bgimages.common.v1.ErrorCode`; the gRPC edge turns it into a status with
`google.rpc.ErrorInfo` details, the client side turns it back, and the
gateway renders it as problem+json.
"""

from __future__ import annotations

from typing import Any

import grpc

# Code -> (gRPC status, HTTP status, title).
_CODES: dict[str, tuple[grpc.StatusCode, int, str]] = {
    "NOT_FITS": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Not a FITS file"),
    "TRUNCATED": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Truncated FITS file"),
    "BAD_HEADER": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Malformed FITS header"),
    "NO_IMAGE_HDU": (grpc.StatusCode.INVALID_ARGUMENT, 422, "No image in the file"),
    "INVALID_WCS": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Invalid world coordinate system"),
    "TARGET_OUTSIDE_FIELD": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Target outside the image"),
    "BOA_OUTSIDE_FIELD": (grpc.StatusCode.INVALID_ARGUMENT, 422, "BOA star outside the image"),
    "TARGET_IN_CHIP_GAP": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Target in a gap between chips"),
    "BOA_IN_CHIP_GAP": (grpc.StatusCode.INVALID_ARGUMENT, 422, "BOA star in a gap between chips"),
    "NO_FILTER": (grpc.StatusCode.INVALID_ARGUMENT, 422, "No filter in the file"),
    "TOO_LARGE": (grpc.StatusCode.INVALID_ARGUMENT, 413, "Too large"),
    "TOO_MANY_HDUS": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Too many HDUs"),
    "TOO_MANY_CARDS": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Too many header cards"),
    "NONSTANDARD_HEADER": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Header not allowed by the FITS standard"),
    "UNSUPPORTED_COMPRESSION": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Unsupported compression"),
    "BAD_COMPRESSION": (grpc.StatusCode.INVALID_ARGUMENT, 422, "Corrupt compressed stream"),
    "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, 400, "Invalid request"),
    "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, 404, "Not found"),
    "FORBIDDEN": (grpc.StatusCode.PERMISSION_DENIED, 403, "Forbidden"),
    "UNAUTHENTICATED": (grpc.StatusCode.UNAUTHENTICATED, 401, "Authentication required"),
    "RUN_MISMATCH": (grpc.StatusCode.FAILED_PRECONDITION, 409, "OB belongs to another run"),
    "NOT_COMPATIBLE": (grpc.StatusCode.FAILED_PRECONDITION, 409, "Image does not fit the OB"),
    "GONE": (grpc.StatusCode.NOT_FOUND, 410, "Image removed"),
    "UNKNOWN_RUN": (grpc.StatusCode.NOT_FOUND, 404, "Unknown run"),
    "PROCESSING_FAILED": (grpc.StatusCode.INTERNAL, 500, "Processing failed"),
    "STORE_UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, 503, "Storage unavailable"),
    "INTERNAL": (grpc.StatusCode.INTERNAL, 500, "Internal error"),
    "UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, 503, "Service unavailable"),
    "REQUEST_TIMEOUT": (grpc.StatusCode.DEADLINE_EXCEEDED, 408, "Request body too slow"),
    "TOO_MANY_UPLOADS": (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "Too many uploads in progress"),
    "BUSY": (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "Too busy, try again later"),
}

DOMAIN = "bgimages.eso.org"
# The detail a refusal for load carries (TOO_MANY_UPLOADS, BUSY): seconds to wait before
# trying again, which the gateway sends as Retry-After.
RETRY_AFTER = "retry_after_s"


class ServiceError(Exception):
    """An error with a stable code, a message for people, and optional details."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        if code not in _CODES:
            raise ValueError(f"unknown error code {code}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return _CODES[self.code][0]

    @property
    def http_status(self) -> int:
        return _CODES[self.code][1]

    @property
    def title(self) -> str:
        return _CODES[self.code][2]

    def __repr__(self) -> str:
        return f"ServiceError({self.code!r}, {self.message!r})"


def http_status_of(code: str) -> int:
    return _CODES.get(code, _CODES["INTERNAL"])[1]


def title_of(code: str) -> str:
    return _CODES.get(code, _CODES["INTERNAL"])[2]
