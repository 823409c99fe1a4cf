"""Reading request bodies for both faces (native API and p2fc): multipart
parts, form fields with a size cap, and streamed file bodies, with a client
that goes away or sends a broken body reported as a 400, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, ClientPayloadError, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from services.shared.errors import ServiceError

READ_CHUNK = 1 << 20
FIELD_LIMIT = 16 << 10  # bytes of one form field (p2 access tokens are long)
# aiohttp's limits on a multipart part's headers (MultipartReader's defaults).
PART_HEADER_LINE = 8190
PART_HEADERS = 128

# How a client that goes away (or sends a broken body) shows while reading.
BODY_ERRORS = (ConnectionError, asyncio.IncompleteReadError, ClientPayloadError, ValueError)


def interrupted() -> ServiceError:
    return ServiceError("INVALID_ARGUMENT", "the upload ended before its body was complete")


def malformed() -> ServiceError:
    return ServiceError("INVALID_ARGUMENT", "the multipart body is malformed")


def bad_part_headers(exc: HttpProcessingError) -> ServiceError:
    """A part's headers that aiohttp refuses (a line over its limit, too many of them).
    The message names the limit, never the client's bytes (they may hold a token)."""
    if isinstance(exc, LineTooLong):
        return ServiceError(
            "INVALID_ARGUMENT", f"a header line of a multipart part is longer than {PART_HEADER_LINE} bytes"
        )
    return ServiceError(
        "INVALID_ARGUMENT",
        f"the headers of a multipart part are malformed or too many (at most {PART_HEADERS})",
    )


async def multipart(request: web.Request) -> MultipartReader:
    try:
        return await request.multipart()
    except (ValueError, AssertionError, KeyError):
        raise malformed() from None


async def next_part(reader: MultipartReader) -> Any:
    """The next part, or None at the end."""
    try:
        return await reader.next()
    except HttpProcessingError as exc:
        raise bad_part_headers(exc) from None
    except (ValueError, AssertionError, KeyError):
        raise malformed() from None
    except BODY_ERRORS:
        raise interrupted() from None


async def read_field(part: BodyPartReader) -> str:
    """A form field's text, refused when longer than FIELD_LIMIT."""
    data = bytearray()
    try:
        while chunk := await part.read_chunk(FIELD_LIMIT):
            data += chunk
            if len(data) > FIELD_LIMIT:
                raise ServiceError("INVALID_ARGUMENT", f"form field {part.name!r} is too long")
    except BODY_ERRORS:
        raise interrupted() from None
    return data.decode("utf-8", errors="replace").strip()


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await part.read_chunk(READ_CHUNK):
            yield chunk
    except BODY_ERRORS:
        raise interrupted() from None


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            yield chunk
    except BODY_ERRORS:
        raise interrupted() from None
