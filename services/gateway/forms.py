"""Reading request bodies for both faces (native API and p2fc): multipart
parts, form fields with a size cap, and streamed file bodies, with a client
that goes away or sends a broken body reported as a 400, never a 500, and a
body that stalls or trickles cut by its `Pace` (408 REQUEST_TIMEOUT)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from aiohttp import BodyPartReader, ClientPayloadError, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from services.shared.errors import ServiceError
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
            "REQUEST_TIMEOUT",
            f"the request body sent nothing for {self.limits.idle_s:g} s; it was cut, nothing was stored",
            idle_timeout_s=self.limits.idle_s,
        )

    def _too_slow(self) -> ServiceError:
        return ServiceError(
            "REQUEST_TIMEOUT",
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


async def read_field(part: BodyPartReader, pace: Pace) -> str:
    """A form field's text, refused when longer than FIELD_LIMIT."""
    data = bytearray()
    try:
        while chunk := await pace.read(part.read_chunk(FIELD_LIMIT)):
            data += chunk
            if len(data) > FIELD_LIMIT:
                raise ServiceError("INVALID_ARGUMENT", f"form field {part.name!r} is too long")
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
            raise ServiceError("TOO_LARGE", f"the request body is larger than {limit} bytes", limit=limit)
    return bytes(data)
