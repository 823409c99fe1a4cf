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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from services.gateway import forms, openapi, p2fc, representations
from services.gateway.arguments import ObContext, check_hash, decimal_integer, ob_context
from services.gateway.auth import Authenticator, Principal, require_admin
from services.gateway.factory import Gateway, build
from services.gateway.images import ObjectStream
from services.gateway.metrics import Metrics
from services.gateway.problems import from_service_error, problem_response, problems_middleware
from services.gateway.uploads import UploadTarget
from services.shared.errors import ServiceError, title_of
from services.shared.settings import GatewaySettings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", GatewaySettings)
BODY_LIMITS = web.AppKey("body_limits", forms.BodyLimits)
GATEWAY = web.AppKey("gateway", Gateway)
AUTH = web.AppKey("auth", Authenticator)
METRICS = web.AppKey("metrics", Metrics)

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


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


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
            raise ServiceError("INVALID_ARGUMENT", "the upload has no file part")
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


def _pace(request: web.Request) -> forms.Pace:
    return forms.Pace.of(request, request.app[BODY_LIMITS])


async def list_images(request: web.Request) -> web.Response:
    """GET /api/v1/obs/{ob_id}/background-images: what the selector shows."""
    principal = _principal(request)
    ob = _context(request.match_info["ob_id"], request.query)
    listing = await _gateway(request).selector.list_images(principal.caller, ob)
    settings = request.app[SETTINGS]
    return _json(
        representations.listing_json(
            ob.ob_id, ob.run_id, listing, settings.default_survey_name, _survey_url(settings)
        )
    )


async def select(request: web.Request) -> web.Response:
    """PUT /api/v1/obs/{ob_id}/background-image: use a background for the OB."""
    principal = _principal(request)
    body = await _json_body(request)
    ob = _context(request.match_info["ob_id"], body)
    selection = body.get("selection")
    if not isinstance(selection, str):
        raise ServiceError("INVALID_ARGUMENT", "selection is required")
    chosen = await _gateway(request).selector.select(principal.caller, ob, selection)
    return _json(representations.selection_json(chosen))


async def get_selection(request: web.Request) -> web.Response:
    """GET /api/v1/obs/{ob_id}/background-image: the OB's current selection."""
    principal = _principal(request)
    ob_id = _optional_int(request.match_info["ob_id"], "ob_id")
    assert ob_id is not None
    selector = _gateway(request).selector
    chosen = await selector.get_selection(principal.caller, ob_id, request.query.get("run_id", ""))
    return _json(representations.selection_json(chosen))


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
        if err.code == "GONE":
            request.app[METRICS].gone.inc()
        response = from_service_error(err)
        response.headers.update(CORS_HEADERS)
        return response
    return await _send(request, obj, dict(CORS_HEADERS))


async def put_run(request: web.Request) -> web.Response:
    """PUT /api/v1/runs/{run_id} (admin): the run's owner and delegates."""
    require_admin(_principal(request))
    body = await _json_body(request)
    owner = body.get("owner_id")
    delegates = body.get("delegate_ids", [])
    if (
        not isinstance(owner, str)
        or not isinstance(delegates, list)
        or not all(isinstance(d, str) for d in delegates)
    ):
        raise ServiceError(
            "INVALID_ARGUMENT", "owner_id (string) and delegate_ids (list of strings) are required"
        )
    run = await _gateway(request).runs.set(request.match_info["run_id"], owner, delegates)
    return _json(representations.run_json(run))


async def delete_run(request: web.Request) -> web.Response:
    require_admin(_principal(request))
    await _gateway(request).runs.remove(request.match_info["run_id"])
    return web.Response(status=204)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ServiceError("INVALID_ARGUMENT", "the body must be application/json")
    raw = await forms.read_body(request, _pace(request))
    try:
        body = json.loads(raw.decode(request.charset or "utf-8"))
    except (ValueError, LookupError):
        raise ServiceError("INVALID_ARGUMENT", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ServiceError("INVALID_ARGUMENT", "the body must be a JSON object")
    return body


# ---- health, metrics, documents -----------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


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
        return _json({"status": "ready" if writable else "degraded", **extra})
    failing = ", ".join(k for k, ok in checks.items() if not ok)
    return problem_response(503, "UNAVAILABLE", title_of("UNAVAILABLE"), f"not ready: {failing}", extra)


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
    return _json(openapi.document(request.app[SETTINGS]))


# ---- the page ---------------------------------------------------------------------------------


def _survey_url(settings: GatewaySettings) -> str:
    if settings.default_survey_dir:
        return "/surveys/default"
    return settings.default_survey_url.rstrip("/")


def content_security_policy(settings: GatewaySettings) -> str:
    extra = ""
    survey = urlsplit(settings.default_survey_url)
    if not settings.default_survey_dir and survey.scheme in ("http", "https") and survey.netloc:
        extra = f" {survey.scheme}://{survey.netloc}"
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


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _aladin_dir(settings: GatewaySettings) -> Path:
    path = Path(settings.aladin_lite_dir)
    return path if path.is_absolute() else PROJECT_ROOT / path


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


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html" or request.path == "/":
        response.headers["Content-Security-Policy"] = content_security_policy(request.app[SETTINGS])
        response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/surveys/"):
        response.headers.update(CORS_HEADERS)


def create_app(settings: GatewaySettings, gateway: Gateway | None = None) -> web.Application:
    """The gateway application; `gateway` defaults to one built for the settings' services."""
    app = web.Application(middlewares=[metrics_middleware, problems_middleware], client_max_size=1 << 20)
    services = gateway if gateway is not None else build(settings)
    app[SETTINGS] = settings
    app[BODY_LIMITS] = forms.BodyLimits.from_settings(settings)
    app[GATEWAY] = services
    app[AUTH] = Authenticator(settings)
    app[METRICS] = services.metrics

    api = "/api/v1"
    app.router.add_post(f"{api}/obs/{{ob_id}}/background-images", upload)
    app.router.add_get(f"{api}/obs/{{ob_id}}/background-images", list_images)
    app.router.add_put(f"{api}/obs/{{ob_id}}/background-image", select)
    app.router.add_get(f"{api}/obs/{{ob_id}}/background-image", get_selection)
    app.router.add_get(f"{api}/images/{{fits_hash}}", get_image)
    app.router.add_delete(f"{api}/images/{{fits_hash}}", delete_image)
    app.router.add_get(f"{api}/images/{{fits_hash}}/preview.png", preview)
    app.router.add_get(f"{api}/images/{{fits_hash}}/fits", fits)
    app.router.add_get(f"{api}/images/{{fits_hash}}/hips", hips)
    app.router.add_route("GET", TILE_ROUTE, hips_file)
    app.router.add_route("OPTIONS", TILE_ROUTE, hips_file)
    app.router.add_put(f"{api}/runs/{{run_id}}", put_run)
    app.router.add_delete(f"{api}/runs/{{run_id}}", delete_run)
    app.router.add_get(f"{api}/openapi.json", openapi_document)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", page)
    app.router.add_static("/static/", STATIC_DIR)
    aladin = _aladin_dir(settings)
    if aladin.is_dir():
        app.router.add_static("/vendor/aladin-lite/", aladin)
    else:
        log.warning("aladin-lite not found at %s: run `npm ci` (make setup)", aladin)
    if settings.default_survey_dir:
        app.router.add_static("/surveys/default/", settings.default_survey_dir)
    app.on_response_prepare.append(_security_headers)

    p2fc.setup(app, settings, services)

    async def on_startup(app: web.Application) -> None:
        await services.start()

    async def on_cleanup(app: web.Application) -> None:
        await services.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
