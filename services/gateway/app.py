"""The gateway's HTTP edge: routes, authentication, and problem+json errors.

Handlers are thin: they parse the request, authenticate, make one call to a
service the factory built (`factory.Gateway`), and render the result
(`representations`). The p2api face (`p2fc.py`) registers its
own routes on the same app and calls the same services.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import Field, ValidationError

from services.gateway import forms, openapi, p2fc, representations
from services.gateway.arguments import (
    ObContext,
    check_hash,
    decimal_integer,
    header_layout,
    ob_context,
    observation_date,
)
from services.gateway.auth import Authenticator, Principal, require_admin
from services.gateway.factory import Gateway, build
from services.gateway.finding_charts import chart_params
from services.gateway.images import ObjectStream
from services.gateway.metrics import Metrics
from services.gateway.openapi import Operation, Param, Reply, files, json_reply, path_param
from services.gateway.problems import from_service_error, problem_response, problems_middleware
from services.gateway.resumable import TUS_EXTENSIONS, TUS_VERSION, upload_metadata
from services.gateway.selector import Preparing
from services.gateway.surveys import Surveys
from services.gateway.uploads import HeaderSegment, UploadTarget, clean_name
from services.shared.errors import Code, ServiceError, title_of
from services.shared.settings import GatewaySettings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", GatewaySettings)
BODY_LIMITS = web.AppKey("body_limits", forms.BodyLimits)
GATEWAY = web.AppKey("gateway", Gateway)
AUTH = web.AppKey("auth", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
DOCUMENT = web.AppKey("openapi", dict[str, Any])

STATIC_DIR = Path(__file__).parent / "static"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TILE_ROUTE = "/api/v1/images/{fits_hash}/hips/{token}/{path:.+}"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Max-Age": "86400",
    "Timing-Allow-Origin": "*",
}


# ---- helpers ----------------------------------------------------------------------------------


def _principal(request: web.Request) -> Principal:
    return request.app[AUTH].authenticate(request.headers)


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


_json = representations.json_response


def _optional_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    return decimal_integer(value, name)


def _context(ob_id: str, fields: Any) -> ObContext:
    return ob_context(
        ob_id,
        str(fields.get("run_id", "") or ""),
        fields.get("target_ra"),
        fields.get("target_dec"),
        fields.get("boa_ra"),
        fields.get("boa_dec"),
        fields.get("instrument"),
    )


def _base_url(request: web.Request) -> str:
    public = request.app[SETTINGS].public_url.rstrip("/")
    return public or f"{request.scheme}://{request.host}"


async def _send(
    request: web.Request, obj: ObjectStream, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers or {})
    response.content_type = obj.content_type
    response.content_length = obj.size
    if obj.max_age > 0:
        response.headers["Cache-Control"] = f"private, max-age={obj.max_age}"
    else:
        response.headers["Cache-Control"] = "no-store"
    await response.prepare(request)
    if request.method != "HEAD":
        async for chunk in obj.chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


# ---- native API -------------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    """POST /api/v1/obs/{ob_id}/background-images: multipart, or a raw FITS body."""
    principal = _principal(request)
    ob_id = request.match_info["ob_id"]
    uploads = _gateway(request).uploads
    # A place among the uploads in progress, before a byte of the body is read.
    async with uploads.admitted(principal.user_id):
        body = forms.UploadBody(
            request, _pace(request), request.app[SETTINGS].max_upload_bytes, dict(request.query)
        )
        file = await body.file()
        if file is None:
            raise ServiceError(Code.INVALID_ARGUMENT, "the upload has no file part")
        if not body.multipart or "run_id" in body.fields:
            _context(ob_id, body.fields)  # fields sent before the file are checked before it is stored

        async def target() -> UploadTarget:  # the fields may follow the file
            fields = await body.rest()
            return UploadTarget(_context(ob_id, fields), fields.get("bandpass", ""))

        outcome = await uploads.upload(principal.caller, file, target)
    response = _json(representations.upload_json(outcome), status=201)
    response.headers["Location"] = f"/api/v1/images/{outcome.image.fits_hash}"
    response.headers["Server-Timing"] = ", ".join(
        f"{k};dur={v * 1000:.1f}" for k, v in outcome.timings.items()
    )
    return response


async def check_upload(request: web.Request) -> web.Response:
    """POST /api/v1/obs/{ob_id}/background-images/check: the headers judged before the data goes."""
    principal = _principal(request)
    ob_id = request.match_info["ob_id"]
    settings = request.app[SETTINGS]
    fields, headers = await forms.header_check_body(
        request, _pace(request), dict(request.query), settings.check_max_header_bytes
    )
    ob = _context(ob_id, fields)
    file_size = decimal_integer(fields.get("file_size"), "file_size")
    if file_size > settings.max_upload_bytes:
        raise forms.too_large(settings.max_upload_bytes)
    segments = [HeaderSegment(*s) for s in header_layout(str(fields.get("layout", "")), headers)]
    target = UploadTarget(ob, str(fields.get("bandpass", "")))
    report = await _gateway(request).uploads.check_headers(principal.caller, target, segments, file_size)
    return _json(representations.header_check_json(report))


# ---- resumable uploads (tus 1.0) ----------------------------------------------------------------

UPLOAD_ID = path_param("upload_id", "the resumable upload's id (its Location)")


def _tus_request(request: web.Request) -> None:
    """tus requests name the protocol's version (412 for another)."""
    version = request.headers.get("Tus-Resumable")
    if version != TUS_VERSION:
        raise ServiceError(
            Code.TUS_VERSION_UNSUPPORTED,
            f"Tus-Resumable must be {TUS_VERSION} (got {str(version)[:20]!r})",
            tus_version=TUS_VERSION,
        )


def _header_integer(request: web.Request, name: str) -> int:
    value = request.headers.get(name)
    if value is None:
        raise ServiceError(Code.INVALID_ARGUMENT, f"the {name} header is required", field=name)
    return decimal_integer(value, name)


def _tus_headers(expires: float | None = None, **more: object) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
    if expires:
        headers["Upload-Expires"] = formatdate(expires, usegmt=True)
    headers.update({k.replace("_", "-"): str(v) for k, v in more.items()})
    return headers


async def tus_options(request: web.Request) -> web.Response:
    """OPTIONS /api/v1/uploads: what the tus server offers."""
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(request.app[SETTINGS].max_upload_bytes),
        },
    )


async def create_resumable(request: web.Request) -> web.Response:
    """POST /api/v1/obs/{ob_id}/uploads: a resumable upload is created (tus creation)."""
    principal = _principal(request)
    _tus_request(request)
    if request.content_length:
        raise ServiceError(
            Code.INVALID_ARGUMENT, "creation with upload is not offered: send the bytes by PATCH"
        )
    fields = {**upload_metadata(request.headers.get("Upload-Metadata", "")), **request.query}
    ob = _context(request.match_info["ob_id"], fields)
    length = _header_integer(request, "Upload-Length")
    target = UploadTarget(ob, str(fields.get("bandpass", "")))
    name = clean_name(str(fields.get("filename") or fields.get("file_name") or ""))
    record = await _gateway(request).resumable.create(principal.caller, target, length, name)
    headers = _tus_headers(record.expires_at.seconds, Location=f"/api/v1/uploads/{record.upload_id}")
    return web.Response(status=201, headers=headers)


async def head_resumable(request: web.Request) -> web.Response:
    """HEAD /api/v1/uploads/{upload_id}: where the upload stands."""
    principal = _principal(request)
    record, offset = await _gateway(request).resumable.status(
        principal.caller, request.match_info["upload_id"]
    )
    return web.Response(
        status=200,
        headers=_tus_headers(
            record.expires_at.seconds, Upload_Offset=offset, Upload_Length=record.length_bytes
        ),
    )


async def patch_resumable(request: web.Request) -> web.Response:
    """PATCH /api/v1/uploads/{upload_id}: bytes at Upload-Offset; the last ones complete the upload."""
    gateway = _gateway(request)
    transport = request.transport
    try:
        principal = _principal(request)
        _tus_request(request)
        if request.content_type != "application/offset+octet-stream":
            raise ServiceError(
                Code.UNSUPPORTED_MEDIA_TYPE, "a PATCH's body is application/offset+octet-stream"
            )
        offset = _header_integer(request, "Upload-Offset")
        length = request.content_length
        if length is None:
            raise ServiceError(
                Code.INVALID_ARGUMENT, "a PATCH needs a Content-Length", field="Content-Length"
            )
        # A place among the uploads in progress while the bytes come (an idle upload holds none).
        async with gateway.uploads.admitted(principal.user_id):
            patched = await gateway.resumable.patch(
                principal.caller,
                request.match_info["upload_id"],
                offset,
                length,
                forms.body_chunks(request, _pace(request)),
                connected=lambda: transport is not None and not transport.is_closing(),
            )
    except ServiceError as err:
        if request.content.at_eof():
            raise
        # Refused before its body was read (an offset mismatch, a PATCH in progress): the
        # connection is closed after the answer, so that the client stops sending the body
        # (and what it sent is never read as a request of its own).
        if err.http_status >= 500:
            log.warning("PATCH %s -> %s: %s", request.path, err.code, err.message)
        response = from_service_error(err)
        response.force_close()
        return response
    headers = _tus_headers(patched.expires_at, Upload_Offset=patched.offset)
    if patched.outcome is None:
        return web.Response(status=204, headers=headers)
    response = _json(representations.upload_json(patched.outcome), status=201)
    response.headers.update(headers)
    response.headers.pop("Upload-Expires", None)  # it is complete: nothing expires any more
    response.headers["Location"] = f"/api/v1/images/{patched.outcome.image.fits_hash}"
    return response


async def delete_resumable(request: web.Request) -> web.Response:
    """DELETE /api/v1/uploads/{upload_id}: the upload and what it staged removed (tus termination)."""
    principal = _principal(request)
    _tus_request(request)
    await _gateway(request).resumable.terminate(principal.caller, request.match_info["upload_id"])
    return web.Response(status=204, headers=_tus_headers())


def _pace(request: web.Request) -> forms.Pace:
    return forms.Pace.of(request, request.app[BODY_LIMITS])


async def list_images(request: web.Request) -> web.Response:
    """GET /api/v1/obs/{ob_id}/background-images: what the selector shows."""
    principal = _principal(request)
    ob = _context(request.match_info["ob_id"], request.query)
    when = observation_date(request.query.get("obs_date"))
    gateway = _gateway(request)
    offer = await gateway.selector.list_images(principal.caller, ob, when)
    default = _default_survey(request.app[SETTINGS])
    return _json(representations.listing_json(ob.ob_id, ob.run_id, offer, default, gateway.surveys))


async def select(request: web.Request) -> web.Response:
    """PUT /api/v1/obs/{ob_id}/background-image: use a background for the OB."""
    principal = _principal(request)
    body = await _json_body(request)
    ob = _context(request.match_info["ob_id"], body)
    selection = body.get("selection")
    if not isinstance(selection, str):
        raise ServiceError(Code.INVALID_ARGUMENT, "selection is required")
    when = observation_date(body.get("obs_date"))
    gateway = _gateway(request)
    try:
        chosen = await gateway.selector.select(principal.caller, ob, selection, when)
    except Preparing as preparing:
        return _json(representations.preparing_json(preparing.dp_id), status=202)
    return _json(representations.selection_json(chosen, gateway.surveys))


async def finding_charts(request: web.Request) -> web.Response:
    """POST /api/v1/obs/{ob_id}/finding-charts: the OB's charts, rendered (nothing stored)."""
    principal = _principal(request)
    body = await _json_body(request)
    ob = _context(request.match_info["ob_id"], body)
    rendered = await _gateway(request).charts.render(principal.caller, ob, chart_params(body))
    return _json(representations.charts_json(rendered))


async def get_selection(request: web.Request) -> web.Response:
    """GET /api/v1/obs/{ob_id}/background-image: the OB's current selection."""
    principal = _principal(request)
    ob_id = _optional_int(request.match_info["ob_id"], "ob_id")
    assert ob_id is not None
    gateway = _gateway(request)
    chosen = await gateway.selector.get_selection(principal.caller, ob_id, request.query.get("run_id", ""))
    return _json(representations.selection_json(chosen, gateway.surveys))


async def get_image(request: web.Request) -> web.Response:
    principal = _principal(request)
    image = await _gateway(request).images.get(principal.caller, request.match_info["fits_hash"])
    return _json(representations.image_json(image))


async def delete_image(request: web.Request) -> web.Response:
    principal = _principal(request)
    tombstone = await _gateway(request).images.delete(principal.caller, request.match_info["fits_hash"])
    return _json(representations.tombstone_json(tombstone))


async def preview(request: web.Request) -> web.StreamResponse:
    principal = _principal(request)
    ob_id = _optional_int(request.query.get("ob_id"), "ob_id")
    obj = await _gateway(request).images.preview(principal.caller, request.match_info["fits_hash"], ob_id)
    return await _send(request, obj)


async def fits(request: web.Request) -> web.StreamResponse:
    principal = _principal(request)
    fits_hash = check_hash(request.match_info["fits_hash"])
    ob_id = _optional_int(request.query.get("ob_id"), "ob_id")
    obj = await _gateway(request).images.fits(principal.caller, fits_hash, ob_id)
    return await _send(request, obj, {"Content-Disposition": f'attachment; filename="{fits_hash}.fits"'})


async def hips(request: web.Request) -> web.Response:
    """GET /api/v1/images/{fits_hash}/hips?ob_id=: a HiPS base URL with a token in its path."""
    principal = _principal(request)
    ob_id = _optional_int(request.query.get("ob_id"), "ob_id")
    access = await _gateway(request).hips.access(principal.caller, request.match_info["fits_hash"], ob_id)
    return _json(representations.hips_json(access, _base_url(request)))


async def hips_file(request: web.Request) -> web.StreamResponse:
    """GET .../hips/{token}/{path}: one HiPS file, with CORS, no other credential."""
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        obj = await _gateway(request).hips.file(
            request.match_info["fits_hash"], request.match_info["token"], request.match_info["path"]
        )
    except ServiceError as err:
        if err.code == Code.GONE:
            request.app[METRICS].gone.inc()
        response = from_service_error(err)
        response.headers.update(CORS_HEADERS)
        return response
    return await _send(request, obj, dict(CORS_HEADERS))


async def put_run(request: web.Request) -> web.Response:
    """PUT /api/v1/runs/{run_id} (admin): the run's owner and delegates."""
    require_admin(_principal(request))
    try:
        body = representations.RunRequest.model_validate(await _json_body(request))
    except ValidationError:
        raise ServiceError(
            Code.INVALID_ARGUMENT, "owner_id (string) and delegate_ids (list of strings) are required"
        ) from None
    run = await _gateway(request).runs.set(request.match_info["run_id"], body.owner_id, body.delegate_ids)
    return _json(representations.run_json(run))


async def delete_run(request: web.Request) -> web.Response:
    require_admin(_principal(request))
    await _gateway(request).runs.remove(request.match_info["run_id"])
    return web.Response(status=204)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ServiceError(Code.INVALID_ARGUMENT, "the body must be application/json")
    raw = await forms.read_body(request, _pace(request))
    try:
        body = json.loads(raw.decode(request.charset or "utf-8"))
    except (ValueError, LookupError):
        raise ServiceError(Code.INVALID_ARGUMENT, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ServiceError(Code.INVALID_ARGUMENT, "the body must be a JSON object")
    return body


# ---- health, metrics, documents -----------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json(representations.Health(status="ok"))


STORE_READ_ONLY = (
    "the object store refuses writes: uploads answer 503 STORE_UNAVAILABLE; "
    "images, previews and tiles are still served"
)


async def readyz(request: web.Request) -> web.Response:
    """Ready while every dependency answers. A store that refuses only writes keeps the
    gateway in service (every replica shares the store: taking all out would stop the
    tiles too) and is told here, and by the metric bgimages_gateway_store_writable."""
    health = _gateway(request).health
    checks, writable = await asyncio.gather(health.readiness(), health.store_writable())
    extra: dict[str, Any] = {"checks": checks, "store_writable": writable}
    if not writable:
        extra["warnings"] = [STORE_READ_ONLY]
    if all(checks.values()):
        return _json(representations.Readiness(status="ready" if writable else "degraded", **extra))
    failing = ", ".join(k for k, ok in checks.items() if not ok)
    return problem_response(503, Code.UNAVAILABLE, title_of(Code.UNAVAILABLE), f"not ready: {failing}", extra)


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    health = _gateway(request).health
    try:
        m.store_usage.usage = await health.usage()
    except ServiceError:
        m.store_usage.usage = None  # the request metrics are still worth scraping
    await health.store_writable()
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


def openapi_document_of(
    settings: GatewaySettings, table: list[Operation], extensions: dict[str, str]
) -> dict[str, Any]:
    """The OpenAPI document of these routes (the native API's and the p2api face's)."""
    return openapi.document(
        table,
        title="User background images gateway",
        version="1.0.0",
        description=(
            "Upload FITS images as backgrounds of p2 Observation Blocks, list and select them, and "
            "display them in Aladin Lite. Errors are application/problem+json with a stable code; "
            "a path no route matches answers 404, a method a path does not offer 405 with Allow."
        ),
        server_url=settings.public_url or "/",
        extensions=extensions,
    )


# ---- the page ---------------------------------------------------------------------------------


def _survey_url(settings: GatewaySettings) -> str:
    if settings.default_survey_dir:
        return "/surveys/default"
    return settings.default_survey_url.rstrip("/")


def _default_survey(settings: GatewaySettings) -> representations.DefaultSurvey:
    return representations.DefaultSurvey(
        selection="default", name=settings.default_survey_name, hips_url=_survey_url(settings)
    )


def content_security_policy(settings: GatewaySettings, surveys: Surveys) -> str:
    origins: list[str] = []
    survey = urlsplit(settings.default_survey_url)
    if not settings.default_survey_dir and survey.scheme in ("http", "https") and survey.netloc:
        origins.append(f"{survey.scheme}://{survey.netloc}")
    origins += [o for o in surveys.origins() if o not in origins]
    extra = "".join(f" {o}" for o in origins)
    return (
        "default-src 'none'; "
        "script-src 'self' 'wasm-unsafe-eval'; "
        # Aladin Lite positions its own widgets with inline styles.
        "style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{extra}; "
        f"connect-src 'self' data:{extra}; "
        "worker-src 'self' blob:; "
        "font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


async def sign_in(request: web.Request) -> web.Response:
    """GET /sign-in: to where users get a token (SIGN_IN_URL); the gateway mints none."""
    target = request.app[SETTINGS].sign_in_url
    if not target:
        raise ServiceError(Code.NOT_FOUND, "no sign-in is configured (SIGN_IN_URL)")
    raise web.HTTPFound(target)


async def survey_file(request: web.Request) -> web.FileResponse:
    """GET /surveys/{name}/{path}: a file of a named survey's local HiPS folder (CORS open)."""
    folder = _gateway(request).surveys.folder(request.match_info["name"])
    if folder is None:
        raise ServiceError(Code.NOT_FOUND, "no local survey of that name")
    root = folder.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ServiceError(Code.NOT_FOUND, "no such file in the survey's HiPS")
    return web.FileResponse(path)


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _aladin_dir(settings: GatewaySettings) -> Path:
    return _vendor_dir(settings.aladin_lite_dir)


def _vendor_dir(setting: str) -> Path:
    path = Path(setting)
    return path if path.is_absolute() else PROJECT_ROOT / path


# ---- the route table: what the router serves and the OpenAPI document says -------------------

OB_ID = path_param("ob_id", "p2's integer OB id", Annotated[int, Field(ge=1)])
FITS_HASH = path_param("fits_hash", "SHA-256 of the uploaded bytes (64 hex digits)", representations.FitsHash)
RUN_ID = path_param("run_id", "run id (URL-encoded)")
OB_QUERY = (
    Param("run_id", "query", "the OB's run (namespaced, e.g. p2:60.A-9252(A))", str, True),
    Param("target_ra", "query", "target right ascension, degrees [0, 360)", float, True),
    Param("target_dec", "query", "target declination, degrees [-90, 90]", float, True),
    Param("boa_ra", "query", "BOA reference star right ascension, degrees", float),
    Param("boa_dec", "query", "BOA reference star declination, degrees", float),
    Param(
        "instrument", "query", "the instrument of the OB's run (FORS2, HAWKI, ...): sizes the Gaia image", str
    ),
)
OBS_DATE = Param(
    "obs_date", "query", "observation date YYYY-MM-DD the Gaia image is drawn for (default: today)", str
)
DISPLAY_OB = Param(
    "ob_id", "query", "the OB whose selection is displayed (display rule)", Annotated[int, Field(ge=1)]
)
RETRY_AFTER = {"Retry-After": "seconds to wait before trying again"}


def problem(description: str) -> Reply:
    return Reply(description, {openapi.PROBLEM_JSON: representations.Problem})


# Any route that calls the services: they may be down, or fail.
SERVICES = {
    500: problem("INTERNAL (or PROCESSING_FAILED for an upload)"),
    503: problem("UNAVAILABLE / STORE_UNAVAILABLE: an internal service or the store is down"),
}
CALLER = {401: problem("UNAUTHENTICATED: missing, expired or invalid token"), **SERVICES}
JSON_BODY = {
    400: problem("INVALID_ARGUMENT: not a JSON object of the documented fields"),
    408: problem("REQUEST_TIMEOUT: the body stalled or came slower than the minimum rate"),
    413: problem("TOO_LARGE: the body is larger than 1 MiB"),
}
DISPLAY = {
    400: problem("INVALID_ARGUMENT: not a fits_hash or ob_id"),
    403: problem(Code.FORBIDDEN),
    404: problem("NOT_FOUND (also for images the caller may not list)"),
    410: problem("GONE: deleted or culled"),
}


def routes(settings: GatewaySettings) -> list[Operation]:
    """The native API's routes, the service routes and the page, in the router's order."""
    api = "/api/v1"
    upload_limits = {
        408: problem("REQUEST_TIMEOUT: the body stalled or came slower than the minimum rate"),
        413: problem(f"TOO_LARGE: over the size limit ({settings.max_upload_bytes} bytes)"),
        429: problem("TOO_MANY_UPLOADS: the caller's uploads in progress are at the limit").with_headers(
            **RETRY_AFTER
        ),
        503: problem(
            "BUSY: the gateway's uploads or a service's queue are at their limit (Retry-After); "
            "UNAVAILABLE / STORE_UNAVAILABLE: an internal service or the store is down"
        ).with_headers(**RETRY_AFTER),
    }
    selection = json_reply(representations.Selection, "the OB's selection")
    table = [
        Operation(
            "POST",
            f"{api}/obs/{{ob_id}}/background-images",
            "Upload a FITS image for an OB; it becomes the OB's selection",
            {
                201: json_reply(
                    representations.UploadedImage, "the stored image, now the OB's selection"
                ).with_headers(Location="the image's URL", **{"Server-Timing": "time of each step"}),
                400: problem("INVALID_ARGUMENT: malformed OB context or body"),
                403: problem("FORBIDDEN: no access to the OB's run"),
                404: problem(Code.UNKNOWN_RUN),
                409: problem("RUN_MISMATCH: the OB belongs to another run"),
                422: problem("the file was refused (code per failed check, findings in errors)"),
                **CALLER,
                **upload_limits,
            },
            upload,
            description=(
                "Multipart with the file and the OB context, or a raw FITS body (application/fits, "
                "optionally gzip) with the context as query parameters. Streamed to the store while "
                f"hashed; at most {settings.max_upload_bytes} bytes."
            ),
            params=(
                OB_ID,
                *(p.optional() for p in OB_QUERY),
                Param("bandpass", "query", "filter for files that name none", str),
                Param("file_name", "query", "file name for a raw body", str),
            ),
            body={
                "multipart/form-data": representations.UploadForm,
                **dict.fromkeys(forms.RAW_TYPES),
            },
            secured=True,
        ),
        Operation(
            "POST",
            f"{api}/obs/{{ob_id}}/background-images/check",
            "Check a file's headers before sending it: what the upload would be told of them",
            {
                200: json_reply(
                    representations.HeadersChecked,
                    "the headers pass; after_upload lists what the full check still looks at",
                ),
                400: problem("INVALID_ARGUMENT: malformed OB context, layout or body"),
                403: problem("FORBIDDEN: no access to the OB's run"),
                404: problem(Code.UNKNOWN_RUN),
                409: problem("RUN_MISMATCH: the OB belongs to another run"),
                413: problem(
                    "TOO_LARGE: the file is over the upload limit, or its headers over "
                    f"{settings.check_max_header_bytes} bytes (then upload it: it is checked in full)"
                ),
                415: problem("UNSUPPORTED_MEDIA_TYPE: not multipart/form-data"),
                422: problem(
                    "the headers refuse the file: the code and findings the upload would get "
                    "(errors), and what would still be checked after upload (after_upload)"
                ),
                **CALLER,
                503: problem("BUSY, UNAVAILABLE: the validator or the catalog is busy or down"),
            },
            check_upload,
            description=(
                "The check before sending. The client reads each HDU's header blocks from the file "
                "(through the END card's block) and skips its data by the size the header declares; "
                "it sends them in the `headers` part, in file order, with their places in `layout`. "
                "The validator judges them as it judges an upload, except what needs pixels (a "
                "position on blank pixels) or the whole file (gzip, .Z): those are listed in "
                "after_upload. Advice only: the upload is validated in full. Nothing is stored."
            ),
            params=(
                OB_ID,
                *(p.optional() for p in OB_QUERY),
                Param("bandpass", "query", "filter for files that name none", str),
            ),
            body={"multipart/form-data": representations.HeadersCheckForm},
            secured=True,
        ),
        Operation(
            "OPTIONS",
            f"{api}/uploads",
            "What the resumable-upload (tus 1.0) server offers",
            {
                204: Reply("Tus-Version, Tus-Extension, Tus-Max-Size").with_headers(
                    **{"Tus-Version": "1.0.0", "Tus-Extension": TUS_EXTENSIONS, "Tus-Max-Size": "bytes"}
                )
            },
            tus_options,
        ),
        Operation(
            "POST",
            f"{api}/obs/{{ob_id}}/uploads",
            "Create a resumable upload (tus creation) for an OB",
            {
                201: Reply("created: PATCH the bytes to Location").with_headers(
                    Location="the upload's URL", **{"Upload-Expires": "when it expires if left idle"}
                ),
                400: problem("INVALID_ARGUMENT: malformed OB context, Upload-Length or Upload-Metadata"),
                403: problem("FORBIDDEN: no access to the OB's run"),
                404: problem(Code.UNKNOWN_RUN),
                409: problem("RUN_MISMATCH: the OB belongs to another run"),
                412: problem(Code.TUS_VERSION_UNSUPPORTED),
                413: problem(f"TOO_LARGE: Upload-Length over {settings.max_upload_bytes} bytes"),
                429: problem("TOO_MANY_UPLOADS: as many resumable uploads in progress as allowed"),
                **CALLER,
            },
            create_resumable,
            description=(
                "tus 1.0 creation. Upload-Length is required; the OB context (run_id, target_ra, "
                "target_dec, boa_ra, boa_dec, instrument), bandpass and filename come as query "
                "parameters or in Upload-Metadata. The upload is bound to its creator (anyone else: "
                "404) and to this OB context; left idle for RESUMABLE_TTL_S it expires."
            ),
            params=(OB_ID, *(p.optional() for p in OB_QUERY)),
            secured=True,
        ),
        Operation(
            "HEAD",
            f"{api}/uploads/{{upload_id}}",
            "Where a resumable upload stands (tus core)",
            {
                200: Reply("Upload-Offset, Upload-Length, Upload-Expires").with_headers(
                    **{"Upload-Offset": "bytes received", "Upload-Length": "the whole file's bytes"}
                ),
                404: problem("NOT_FOUND: no such upload of the caller's"),
                410: problem(Code.UPLOAD_EXPIRED),
                **CALLER,
            },
            head_resumable,
            params=(UPLOAD_ID,),
            secured=True,
        ),
        Operation(
            "PATCH",
            f"{api}/uploads/{{upload_id}}",
            "Send bytes of a resumable upload at Upload-Offset (tus core)",
            {
                201: json_reply(
                    representations.UploadedImage, "the last bytes: the stored image, now the OB's selection"
                ).with_headers(Location="the image's URL", **{"Upload-Offset": "the whole file's bytes"}),
                204: Reply("bytes taken").with_headers(**{"Upload-Offset": "bytes received"}),
                400: problem("INVALID_ARGUMENT: no Upload-Offset or Content-Length; the body was cut"),
                404: problem("NOT_FOUND: no such upload of the caller's"),
                409: problem(
                    "UPLOAD_OFFSET_MISMATCH: Upload-Offset is not where the upload stands; "
                    "UPLOAD_LOCKED: another PATCH of it is in progress; RUN_MISMATCH"
                ),
                410: problem(Code.UPLOAD_EXPIRED),
                412: problem(Code.TUS_VERSION_UNSUPPORTED),
                413: problem("TOO_LARGE: the PATCH would pass Upload-Length"),
                415: problem("UNSUPPORTED_MEDIA_TYPE: not application/offset+octet-stream"),
                422: problem("the file was refused (code per failed check, findings in errors)"),
                **CALLER,
                **upload_limits,
            },
            patch_resumable,
            description=(
                "The bytes from Upload-Offset on (Content-Length of them), streamed to the staging "
                "object and hashed. The PATCH that brings the last byte has the file checked and "
                "processed as a one-shot upload is, and answers as it does (201 with the image, or "
                "the refusal); the upload is then gone. One PATCH of an upload at a time."
            ),
            params=(UPLOAD_ID,),
            body={"application/offset+octet-stream": None},
            secured=True,
        ),
        Operation(
            "DELETE",
            f"{api}/uploads/{{upload_id}}",
            "Terminate a resumable upload: it and what it staged are removed (tus termination)",
            {
                204: Reply("removed"),
                404: problem("NOT_FOUND: no such upload of the caller's"),
                410: problem(Code.UPLOAD_EXPIRED),
                412: problem(Code.TUS_VERSION_UNSUPPORTED),
                **CALLER,
            },
            delete_resumable,
            params=(UPLOAD_ID,),
            secured=True,
        ),
        Operation(
            "GET",
            f"{api}/obs/{{ob_id}}/background-images",
            "What the selector shows for the OB",
            {
                200: json_reply(
                    representations.Listing, "default survey, own and shared images, selection, tombstones"
                ),
                400: problem(Code.INVALID_ARGUMENT),
                403: problem(Code.FORBIDDEN),
                404: problem(Code.UNKNOWN_RUN),
                409: problem(Code.RUN_MISMATCH),
                **CALLER,
            },
            list_images,
            params=(OB_ID, *OB_QUERY, OBS_DATE),
            secured=True,
        ),
        Operation(
            "PUT",
            f"{api}/obs/{{ob_id}}/background-image",
            "Select (use) a background for the OB",
            {
                200: selection,
                202: json_reply(
                    representations.PreparingSelection,
                    "an archive image not stored yet: fetched in the background, then selected",
                ),
                **JSON_BODY,
                403: problem(Code.FORBIDDEN),
                404: problem("NOT_FOUND: no such image visible to the caller; UNKNOWN_RUN"),
                409: problem("NOT_COMPATIBLE or RUN_MISMATCH"),
                410: problem(Code.GONE),
                **CALLER,
            },
            select,
            params=(OB_ID,),
            body={"application/json": representations.SelectRequest},
            secured=True,
        ),
        Operation(
            "POST",
            f"{api}/obs/{{ob_id}}/finding-charts",
            "Render the OB's finding charts (the default survey, the Gaia image, and a custom one)",
            {
                200: json_reply(representations.Charts, "the JPEGs (base64), at most 1 MB each"),
                **JSON_BODY,
                403: problem(Code.FORBIDDEN),
                404: problem("NOT_FOUND: no such image visible to the caller; UNKNOWN_RUN"),
                409: problem(Code.RUN_MISMATCH),
                **CALLER,
            },
            finding_charts,
            params=(OB_ID,),
            body={"application/json": representations.ChartsRequest},
            secured=True,
        ),
        Operation(
            "GET",
            f"{api}/obs/{{ob_id}}/background-image",
            "The OB's current selection",
            {
                200: selection,
                400: problem(Code.INVALID_ARGUMENT),
                403: problem(Code.FORBIDDEN),
                404: problem(Code.NOT_FOUND),
                409: problem(Code.RUN_MISMATCH),
                **CALLER,
            },
            get_selection,
            params=(OB_ID, Param("run_id", "query", "the OB's run", str)),
            secured=True,
        ),
        Operation(
            "GET",
            f"{api}/images/{{fits_hash}}",
            "One image (own first, else one the caller may list)",
            {200: json_reply(representations.Image, "the image"), **DISPLAY, **CALLER},
            get_image,
            params=(FITS_HASH,),
            secured=True,
        ),
        Operation(
            "DELETE",
            f"{api}/images/{{fits_hash}}",
            "Delete one of the caller's images",
            {
                200: json_reply(representations.Tombstone, "the tombstone"),
                **DISPLAY,
                403: problem("FORBIDDEN: not the owner"),
                **CALLER,
            },
            delete_image,
            params=(FITS_HASH,),
            secured=True,
        ),
        _display(
            f"{api}/images/{{fits_hash}}/preview.png",
            "The image's preview (north up, east left)",
            files("PNG", "image/png"),
            preview,
        ),
        _display(
            f"{api}/images/{{fits_hash}}/fits",
            "The stored FITS (the mosaic for a MEF), streamed",
            files("FITS", "application/fits"),
            fits,
        ),
        _display(
            f"{api}/images/{{fits_hash}}/hips",
            "A HiPS base URL for Aladin Lite with a signed, expiring token in its path",
            json_reply(representations.HipsUrl, "the HiPS base URL"),
            hips,
        ),
    ]
    tile_params = (
        FITS_HASH,
        path_param("token", "HiPS token from .../hips"),
        path_param("path", "file inside the HiPS"),
    )
    cors = {name: "CORS" for name in CORS_HEADERS}
    table += [
        Operation(
            "GET",
            TILE_ROUTE,
            "A HiPS file: properties, Moc.fits, Norder3/Allsky.*, NorderK/DirD/NpixN.*",
            {
                200: files("the file, streamed", "image/png", "application/fits", "text/plain").with_headers(
                    **cors, **{"Cache-Control": "cacheable until the token expires"}
                ),
                400: problem("INVALID_ARGUMENT: not a fits_hash").with_headers(**cors),
                403: problem("FORBIDDEN: tampered, expired or another image's token").with_headers(**cors),
                404: problem("NOT_FOUND: no such file in the HiPS").with_headers(**cors),
                410: problem("GONE: the image was deleted or culled").with_headers(**cors),
                **{status: reply.with_headers(**cors) for status, reply in SERVICES.items()},
            },
            hips_file,
            description="Only the token is needed; CORS open; cacheable until the token expires.",
            params=tile_params,
        ),
        Operation(
            "OPTIONS",
            TILE_ROUTE,
            "CORS preflight of a HiPS file",
            {204: Reply("the CORS headers", headers=cors)},
            hips_file,
            params=tile_params,
        ),
        Operation(
            "PUT",
            f"{api}/runs/{{run_id}}",
            "Set a run's owner and delegates (scope bgimages:admin)",
            {
                200: json_reply(representations.Run, "the run"),
                **JSON_BODY,
                403: problem("FORBIDDEN: the token lacks scope bgimages:admin"),
                **CALLER,
            },
            put_run,
            params=(RUN_ID,),
            body={"application/json": representations.RunRequest},
            secured=True,
        ),
        Operation(
            "DELETE",
            f"{api}/runs/{{run_id}}",
            "Forget a run and its delegations (scope bgimages:admin)",
            {
                204: Reply("removed"),
                403: problem("FORBIDDEN: the token lacks scope bgimages:admin"),
                404: problem(Code.UNKNOWN_RUN),
                **CALLER,
            },
            delete_run,
            params=(RUN_ID,),
            secured=True,
        ),
        Operation(
            "GET",
            f"{api}/openapi.json",
            "This document",
            {200: json_reply(dict[str, Any], "OpenAPI 3.1")},
            openapi_document,
        ),
        Operation("GET", "/healthz", "Liveness", {200: json_reply(representations.Health, "alive")}, healthz),
        Operation(
            "GET",
            "/readyz",
            "Readiness: the three gRPC services (catalog: also its database) and the store",
            {
                200: json_reply(representations.Readiness, "ready, or degraded (the store refuses writes)"),
                503: Reply(
                    "UNAVAILABLE, with the failing checks",
                    {openapi.PROBLEM_JSON: representations.NotReady},
                ),
            },
            readyz,
        ),
        Operation(
            "GET",
            "/metrics",
            "Prometheus metrics",
            {200: files("text exposition format", "text/plain")},
            metrics,
        ),
        Operation(
            "GET",
            "/",
            "The Background-image page",
            {200: files("HTML", "text/html")},
            page,
        ),
        Operation(
            "GET",
            "/sign-in",
            "The page's Sign in link: a redirect to where users get a token (SIGN_IN_URL)",
            {
                302: Reply("to SIGN_IN_URL").with_headers(Location="SIGN_IN_URL"),
                404: problem("none configured"),
            },
            sign_in,
        ),
        _static("/static/{filename:.+}", "The page's scripts and styles", STATIC_DIR),
    ]
    aladin = _aladin_dir(settings)
    if aladin.is_dir():
        table.append(_static("/vendor/aladin-lite/{filename:.+}", "Aladin Lite (npm aladin-lite)", aladin))
    tus = _vendor_dir(settings.tus_js_dir)
    if tus.is_dir():
        table.append(_static("/vendor/tus-js-client/{filename:.+}", "tus-js-client (npm)", tus))
    if settings.default_survey_dir:
        table.append(
            _static(
                "/surveys/default/{filename:.+}",
                "The default survey's HiPS (CORS open)",
                Path(settings.default_survey_dir),
            )
        )
    table.append(
        Operation(
            "GET",
            "/surveys/{name}/{path:.+}",
            "A file of a named survey's local HiPS (SURVEYS names a folder; CORS open)",
            {
                200: files("the file", "*/*"),
                404: problem("NOT_FOUND: no local survey of that name, or no such file in it"),
            },
            survey_file,
            params=(path_param("name", "the survey's name"), path_param("path", "file inside the HiPS")),
        )
    )
    return table


def _display(path: str, summary: str, ok: Reply, handler: openapi.Handler) -> Operation:
    """A route of the display rule: the caller may name the OB whose selection it displays."""
    return Operation(
        "GET",
        path,
        summary,
        {200: ok, **DISPLAY, **CALLER},
        handler,
        params=(FITS_HASH, DISPLAY_OB),
        secured=True,
    )


def _static(path: str, summary: str, folder: Path) -> Operation:
    return Operation(
        "GET",
        path,
        summary,
        {
            200: files("the file", "*/*"),
            403: problem("FORBIDDEN: a path outside the folder"),
            # aiohttp's static handler answers a missing file itself, with an empty body.
            404: Reply(
                "NOT_FOUND: no such file (an empty body) or no such path",
                {"application/octet-stream": None, openapi.PROBLEM_JSON: representations.Problem},
            ),
        },
        params=(path_param("filename", "a file in the folder"),),
        static=folder,
    )


def add_route(app: web.Application, op: Operation) -> None:
    if op.static is not None:
        app.router.add_static(op.prefix, op.static)
    elif op.handler is None:
        raise ValueError(f"{op.method} {op.path} has neither a handler nor a folder")
    elif op.method == "GET":
        app.router.add_get(op.path, op.handler)  # and HEAD
    else:
        app.router.add_route(op.method, op.path, op.handler)


# ---- middleware and assembly ------------------------------------------------------------------


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    start = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        m = request.app[METRICS]
        m.requests.labels(request.method, route, str(status)).inc()
        m.latency.labels(request.method, route).observe(time.perf_counter() - start)
        if request.content.total_bytes:
            m.body_bytes.labels(route).inc(request.content.total_bytes)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html" or request.path == "/":
        response.headers["Content-Security-Policy"] = content_security_policy(
            request.app[SETTINGS], request.app[GATEWAY].surveys
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/surveys/"):
        response.headers.update(CORS_HEADERS)
    if "Tus-Resumable" in request.headers or request.path.startswith("/api/v1/uploads"):
        response.headers.setdefault("Tus-Resumable", TUS_VERSION)
        if response.status == 412:
            response.headers["Tus-Version"] = TUS_VERSION


def create_app(settings: GatewaySettings, gateway: Gateway | None = None) -> web.Application:
    """The gateway application; `gateway` defaults to one built for the settings' services."""
    app = web.Application(middlewares=[metrics_middleware, problems_middleware], client_max_size=1 << 20)
    services = gateway if gateway is not None else build(settings)
    app[SETTINGS] = settings
    app[BODY_LIMITS] = forms.BodyLimits.from_settings(settings)
    app[GATEWAY] = services
    app[AUTH] = Authenticator(settings)
    app[METRICS] = services.metrics

    table = routes(settings)
    extensions: dict[str, str] = {}
    for op in table:
        add_route(app, op)
    if not _aladin_dir(settings).is_dir():
        log.warning("aladin-lite not found at %s: run `npm ci` (make setup)", _aladin_dir(settings))
    if not _vendor_dir(settings.tus_js_dir).is_dir():
        log.warning("tus-js-client not found at %s: run `npm ci` (make setup)", settings.tus_js_dir)
    app.on_response_prepare.append(_security_headers)

    p2fc.setup(app, settings, services)
    prefix = p2fc.normalize_prefix(settings.p2fc_prefix)
    table += p2fc.endpoints(prefix)
    # Under the face's prefix, runs of slashes count as one (p2api doubles them).
    extensions["x-p2fc-prefix"] = prefix
    app[DOCUMENT] = openapi_document_of(settings, table, extensions)

    async def on_startup(app: web.Application) -> None:
        await services.start()

    async def on_cleanup(app: web.Application) -> None:
        await services.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
