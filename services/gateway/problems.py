"""Every error the gateway answers is RFC 9457 problem+json with a stable code.

`ServiceError` (from this service or carried back over gRPC) maps to its
HTTP status; aiohttp's own HTTP errors (unknown route, wrong method, body too
large) get a code too; anything unexpected is logged and answered as
INTERNAL without a stack trace.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from services.shared.errors import DOMAIN, RETRY_AFTER, Code, ServiceError, title_of

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
_HTTP_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    408: Code.REQUEST_TIMEOUT,
    413: Code.TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}


def type_uri(code: Code) -> str:
    return f"https://{DOMAIN}/problems/{code.lower().replace('_', '-')}"


def problem_response(
    status: int, code: Code, title: str, detail: str, extra: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "type": type_uri(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    response = web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bgimages"'
    add_limit_headers(response, code, extra or {})
    return response


def add_limit_headers(response: web.StreamResponse, code: Code, details: dict[str, Any]) -> None:
    """Retry-After for a refusal for load; a body cut for its pace also ends the connection
    (what is left of it will not be read)."""
    retry = details.get(RETRY_AFTER)
    if isinstance(retry, int | float) and not isinstance(retry, bool) and retry > 0:
        response.headers["Retry-After"] = str(math.ceil(retry))
    if code == Code.REQUEST_TIMEOUT:
        response.force_close()


# Codes whose messages describe our insides (addresses, call names): logged, not shown.
_OPAQUE = {
    Code.UNAVAILABLE: "a service the gateway needs is unavailable; please try again later",
    Code.STORE_UNAVAILABLE: "the storage is unavailable; please try again later",
    Code.INTERNAL: "internal error",
}


def public_message(err: ServiceError) -> str:
    """What a user is told: the message, but for codes whose messages describe our insides."""
    return _OPAQUE.get(err.code, err.message)


def from_service_error(err: ServiceError) -> web.Response:
    return problem_response(err.http_status, err.code, err.title, public_message(err), err.details)


@web.middleware
async def problems_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as err:
        if err.http_status >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.path, err.code, err.message)
        return from_service_error(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, Code.INVALID_ARGUMENT if exc.status < 500 else Code.INTERNAL)
        title = (
            title_of(code)
            if code in (Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.TOO_LARGE, Code.FORBIDDEN)
            else exc.reason
        )
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        response = problem_response(exc.status, code, title, detail)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return problem_response(500, Code.INTERNAL, title_of(Code.INTERNAL), "internal error")


class MalformedRequestLog(logging.Filter):
    """aiohttp answers a request it cannot parse (a request line or header over
    8190 bytes, more than 128 headers) with a 400 of its own and logs an ERROR
    with a traceback. That is the client's fault: one warning line instead,
    without the exception's text, which quotes the client's bytes (a token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused a malformed HTTP request (%s, %s)"
            record.args = (type(exc).__name__, exc.code)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_malformed_requests() -> None:
    """Installs MalformedRequestLog on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestLog) for f in server_log.filters):
        server_log.addFilter(MalformedRequestLog())
