"""Reading request bodies for both faces (native API and p2fc): an upload's body
(`UploadBody`: raw or multipart, bounded by the size limit), form fields with a
size cap, and small bodies whole; a client that goes away or sends a broken body
is reported as a 400, never a 500, and a body that stalls or trickles is cut by
its `Pace` (408 REQUEST_TIMEOUT)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import BodyPartReader, ClientPayloadError, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from services.gateway.uploads import UploadFile
from services.shared.errors import Code, ServiceError
from services.shared.settings import GatewaySettings

T = TypeVar("T")

READ_CHUNK = 1 << 20
SMALL_BODY_LIMIT = 1 << 20  # JSON and urlencoded bodies (the app's client_max_size)
FIELD_LIMIT = 16 << 10  # bytes of one form field (p2 access tokens are long)
# aiohttp's limits on a multipart part's headers (MultipartReader's defaults).
PART_HEADER_LINE = 8190
PART_HEADERS = 128

# How a client that goes away (or sends a broken body) shows while reading.
BODY_ERRORS = (ConnectionError, asyncio.IncompleteReadError, ClientPayloadError, ValueError)


def interrupted() -> ServiceError:
    return ServiceError(Code.INVALID_ARGUMENT, "the upload ended before its body was complete")


def malformed() -> ServiceError:
    return ServiceError(Code.INVALID_ARGUMENT, "the multipart body is malformed")


def bad_part_headers(exc: HttpProcessingError) -> ServiceError:
    """A part's headers that aiohttp refuses (a line over its limit, too many of them).
    The message names the limit, never the client's bytes (they may hold a token)."""
    if isinstance(exc, LineTooLong):
        return ServiceError(
            Code.INVALID_ARGUMENT,
            f"a header line of a multipart part is longer than {PART_HEADER_LINE} bytes",
        )
    return ServiceError(
        Code.INVALID_ARGUMENT,
        f"the headers of a multipart part are malformed or too many (at most {PART_HEADERS})",
    )


@dataclasses.dataclass(frozen=True)
class BodyLimits:
    """How slow a request body may be (0 turns a limit off)."""

    idle_s: float  # longest wait for the next byte
    min_bytes_per_s: float  # slowest average rate, over each `window_s` spent waiting
    window_s: float

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> BodyLimits:
        return cls(settings.body_idle_timeout_s, settings.body_min_bytes_per_s, settings.body_rate_window_s)


class Pace:
    """Cuts a body that stalls (nothing for `idle_s`) or trickles (under `min_bytes_per_s`
    on average over `window_s` of waiting for it), so no connection, temp file or
    staging object is held by a client that never finishes.

    Only time spent waiting for the client counts, not time the gateway spends writing
    what it got: a slow store does not make a client too slow. Bytes are counted as they
    arrive on the connection (multipart headers and fields too)."""

    def __init__(self, content: StreamReader, limits: BodyLimits) -> None:
        self._content = content
        self.limits = limits
        self._quota = limits.min_bytes_per_s * limits.window_s
        self._mark = content.total_bytes
        self._waited = 0.0

    @classmethod
    def of(cls, request: web.Request, limits: BodyLimits) -> Pace:
        return cls(request.content, limits)

    async def read(self, read: Coroutine[Any, Any, T]) -> T:
        """Awaits one read of the body within the limits; REQUEST_TIMEOUT past them."""
        self._account()
        idle = self.limits.idle_s if self.limits.idle_s > 0 else math.inf
        left = self.limits.window_s - self._waited if self._quota > 0 else math.inf
        if left <= 0:
            read.close()
            raise self._too_slow()
        timeout, why = (left, "rate") if left < idle else (idle, "idle")
        started = time.monotonic()
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                result = await read
        except TimeoutError:
            raise (self._too_slow() if why == "rate" else self._stalled()) from None
        finally:
            self._waited += time.monotonic() - started
        self._account()
        return result

    def _account(self) -> None:
        """A window that got its quota of bytes starts the next one."""
        received = self._content.total_bytes
        if received - self._mark >= self._quota:
            self._mark = received
            self._waited = 0.0

    def _stalled(self) -> ServiceError:
        return ServiceError(
            Code.REQUEST_TIMEOUT,
            f"the request body sent nothing for {self.limits.idle_s:g} s; it was cut, nothing was stored",
            idle_timeout_s=self.limits.idle_s,
        )

    def _too_slow(self) -> ServiceError:
        return ServiceError(
            Code.REQUEST_TIMEOUT,
            f"the request body came slower than {self.limits.min_bytes_per_s:g} bytes/s over "
            f"{self.limits.window_s:g} s; it was cut, nothing was stored",
            min_bytes_per_s=self.limits.min_bytes_per_s,
        )


async def multipart(request: web.Request) -> MultipartReader:
    try:
        return await request.multipart()
    except (ValueError, AssertionError, KeyError):
        raise malformed() from None


async def next_part(reader: MultipartReader, pace: Pace) -> Any:
    """The next part, or None at the end."""
    try:
        return await pace.read(reader.next())
    except HttpProcessingError as exc:
        raise bad_part_headers(exc) from None
    except (ValueError, AssertionError, KeyError):
        raise malformed() from None
    except BODY_ERRORS:
        raise interrupted() from None


async def read_field(part: BodyPartReader, pace: Pace, limit: int = FIELD_LIMIT) -> str:
    """A form field's text, refused when longer than `limit` bytes."""
    data = bytearray()
    try:
        while chunk := await pace.read(part.read_chunk(FIELD_LIMIT)):
            data += chunk
            if len(data) > limit:
                raise ServiceError(Code.INVALID_ARGUMENT, f"form field {part.name!r} is too long")
    except BODY_ERRORS:
        raise interrupted() from None
    return data.decode("utf-8", errors="replace").strip()


async def part_chunks(part: BodyPartReader, pace: Pace) -> AsyncIterator[bytes]:
    try:
        while chunk := await pace.read(part.read_chunk(READ_CHUNK)):
            yield chunk
    except BODY_ERRORS:
        raise interrupted() from None


async def body_chunks(request: web.Request, pace: Pace) -> AsyncIterator[bytes]:
    try:
        while chunk := await pace.read(request.content.read(READ_CHUNK)):
            yield chunk
    except BODY_ERRORS:
        raise interrupted() from None


async def read_body(request: web.Request, pace: Pace, limit: int = SMALL_BODY_LIMIT) -> bytes:
    """A small body (JSON, a urlencoded form) whole, read at the pace's limits."""
    data = bytearray()
    async for chunk in body_chunks(request, pace):
        data += chunk
        if len(data) > limit:
            raise ServiceError(Code.TOO_LARGE, f"the request body is larger than {limit} bytes", limit=limit)
    return bytes(data)


# ---- the body of an upload ----------------------------------------------------------------------

RAW_TYPES = (
    "application/fits",
    "application/octet-stream",
    "application/gzip",
    "application/x-gzip",
    "image/fits",
)
# The multipart part that holds the file: any part with a file name, or one of these.
FILE_PARTS = ("file", "bkg_image_fits_file")
# What fields and part headers may add to the file in a multipart body.
MULTIPART_OVERHEAD = 1 << 20


def too_large(limit: int) -> ServiceError:
    return ServiceError(Code.TOO_LARGE, f"the file is larger than the limit of {limit} bytes", limit=limit)


async def _bounded(chunks: AsyncIterator[bytes], limit: int, declared: int | None) -> AsyncIterator[bytes]:
    """The file's bytes, TOO_LARGE before more than `limit` pass (at the first read
    when the declared size is over it already)."""
    if declared is not None and declared > limit:
        raise too_large(limit)
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        yield chunk


class UploadBody:
    """The body of an upload, for both faces: a raw FITS body (its fields are the
    query) or multipart/form-data, read once, in order: the fields sent before the
    file, the file (streamed, bounded by the size limit), then the fields after it.

    Refused at once: another content type, and a multipart body whose declared
    length leaves no doubt that its file is over the limit."""

    def __init__(self, request: web.Request, pace: Pace, limit: int, fields: dict[str, str]) -> None:
        self._request = request
        self._pace = pace
        self._limit = limit
        self._reader: MultipartReader | None = None
        self._file_seen = False
        self.multipart = request.content_type.startswith("multipart/")
        self.fields = fields
        # The headers of the file's part (p2api sends its fields there).
        self.part_headers: Mapping[str, str] = {}
        if self.multipart:
            length = request.content_length
            if length is not None and length > limit + MULTIPART_OVERHEAD:
                raise too_large(limit)
        elif request.content_type not in RAW_TYPES:
            raise ServiceError(
                Code.INVALID_ARGUMENT,
                "send multipart/form-data with a file part, or a body of type application/fits",
            )

    async def file(self) -> UploadFile | None:
        """The file, not read yet; None when the body ends without one."""
        request = self._request
        if not self.multipart:
            self._file_seen = True
            chunks = _bounded(body_chunks(request, self._pace), self._limit, request.content_length)
            return UploadFile(chunks, self.fields.get("file_name") or _disposition_name(request))
        if self._reader is None:
            self._reader = await multipart(request)
        while (part := await self._next()) is not None:
            if part.filename is not None or part.name in FILE_PARTS:
                if self._file_seen:
                    raise ServiceError(Code.INVALID_ARGUMENT, "one file per upload")
                self._file_seen = True
                # aiohttp clients percent-encode file names; browsers escape only '"' and CR/LF.
                name = unquote(part.filename or self.fields.get("file_name", ""))
                self.part_headers = part.headers
                return UploadFile(_bounded(part_chunks(part, self._pace), self._limit, None), name)
            if part.name:
                self.fields[part.name] = await read_field(part, self._pace)
        return None

    async def rest(self) -> dict[str, str]:
        """All fields, once the body is read to its end (a second file is refused)."""
        if self.multipart:
            await self.file()
        return self.fields

    async def _next(self) -> BodyPartReader | None:
        assert self._reader is not None
        part = await next_part(self._reader, self._pace)
        if part is not None and not isinstance(part, BodyPartReader):
            raise ServiceError(Code.INVALID_ARGUMENT, "nested multipart is not accepted")
        return part


def _disposition_name(request: web.Request) -> str:
    _, params = parse_content_disposition(request.headers.get("Content-Disposition"))
    return content_disposition_filename(params, "filename") or ""


# ---- the body of a check before sending -------------------------------------------------------

LAYOUT_LIMIT = 256 << 10  # the layout field: about 4000 HDUs


async def header_check_body(
    request: web.Request, pace: Pace, fields: dict[str, str], max_header_bytes: int
) -> tuple[dict[str, str], bytes]:
    """The fields and the `headers` part of a check before sending (multipart/form-data);
    TOO_LARGE when the headers are over `max_header_bytes`."""
    if not request.content_type.startswith("multipart/"):
        raise ServiceError(
            Code.UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data with the layout field and the headers part"
        )
    length = request.content_length
    if length is not None and length > max_header_bytes + LAYOUT_LIMIT + MULTIPART_OVERHEAD:
        raise _headers_too_large(max_header_bytes)
    reader = await multipart(request)
    headers: bytes | None = None
    while (part := await next_part(reader, pace)) is not None:
        if not isinstance(part, BodyPartReader):
            raise ServiceError(Code.INVALID_ARGUMENT, "nested multipart is not accepted")
        if part.name == "headers":
            if headers is not None:
                raise ServiceError(Code.INVALID_ARGUMENT, "one headers part per check")
            data = bytearray()
            async for chunk in part_chunks(part, pace):
                data += chunk
                if len(data) > max_header_bytes:
                    raise _headers_too_large(max_header_bytes)
            headers = bytes(data)
        elif part.name:
            fields[part.name] = await read_field(
                part, pace, LAYOUT_LIMIT if part.name == "layout" else FIELD_LIMIT
            )
    if headers is None:
        raise ServiceError(Code.INVALID_ARGUMENT, "the check has no headers part", field="headers")
    return fields, headers


def _headers_too_large(limit: int) -> ServiceError:
    return ServiceError(
        Code.TOO_LARGE,
        f"the headers are more than {limit} bytes, more than the check before sending takes: "
        "upload the file, it is checked in full then",
        limit=limit,
        part="headers",
    )
