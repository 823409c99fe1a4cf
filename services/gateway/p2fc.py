"""The p2api face: the endpoints ESO's `p2api` client calls, under P2FC_PREFIX (`/p2fc/`).

The unmodified client (`p2api.ApiConnection`, methods `bkg_image_*`) builds its
URLs as `"%s/%s" % (p2fc_url, url)` with a p2fc_url that ends in "/", so paths
arrive with a doubled slash (`/p2fc//bkg_image?...`) and two calls POST to the
prefix root itself (`/p2fc//`). What it sends:

| client method | request |
|---|---|
| bkg_image_get_ob_info | GET bkg_image?url=&access_token=&mode=get_ob |
| bkg_image_get_ob_image_list | GET bkg_image?url=&access_token=&mode=get_ob_image_list |
| bkg_image_set_ob_info | POST root, form: url, access_token, mode=set_ob_info, value |
| bkg_image_upload | POST root, multipart part `bkg_image_fits_file`; its part headers carry |
|  | url, access_token, mode=upload_bkg_image and bkg_lam |
| bkg_image_delete | DELETE bkg_image_delete?url=&access_token=&fits_hash=user_bkg_image|<hash> |
| generateFindingChart | POST root without mode (a form, or the file part with url and access_token headers) |

The caller is who p2 says the access token belongs to (`p2.P2Client`), with
the runs p2 lists for them passed per request as `Caller.runs`; the actions are
the same services (`factory.Gateway`) the native API calls, so the same catalog
rules hold, and an upload takes the same path (`forms.UploadBody`, `Uploads.upload`).

Answers are JSON. Errors are JSON too, `{"error": <message>, "code": <CODE>}`
with the code's HTTP status, because the client raises `P2Error(status,
method, url, body["error"])` only from an `application/json` body: the native
API's problem+json would reach the user as raw text.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from bgimages.catalog.v1 import catalog_pb2
from bgimages.common.v1 import common_pb2
from services.gateway import forms, p2_charts, representations
from services.gateway.arguments import check_hash, format_selection
from services.gateway.factory import Gateway
from services.gateway.finding_charts import chart_params
from services.gateway.openapi import Operation, Param, Reply, json_reply
from services.gateway.p2 import P2Client, P2Context, parse_bases
from services.gateway.problems import add_limit_headers, public_message
from services.gateway.selector import Offer, Preparing
from services.gateway.uploads import UploadFile, UploadTarget
from services.shared.errors import Code, ServiceError
from services.shared.settings import GatewaySettings

log = logging.getLogger(__name__)

P2FC_GATEWAY = web.AppKey("p2fc_gateway", Gateway)
P2FC_CLIENT = web.AppKey("p2fc_p2", P2Client)
P2FC_SETTINGS = web.AppKey("p2fc_settings", GatewaySettings)
P2FC_BODY_LIMITS = web.AppKey("p2fc_body_limits", forms.BodyLimits)

FILE_FIELD = "bkg_image_fits_file"
API = "/api/v1"


def normalize_prefix(prefix: str) -> str:
    """ "/p2fc/" from "p2fc", "/p2fc" or "/p2fc/"."""
    stripped = prefix.strip().strip("/")
    if not stripped or "{" in stripped or "}" in stripped:
        raise ValueError(f"P2FC_PREFIX {prefix!r} must be a path such as /p2fc/")
    return f"/{stripped}/"


def setup(app: web.Application, settings: GatewaySettings, gateway: Gateway) -> None:
    """Adds the p2api face's routes to the gateway app."""
    prefix = normalize_prefix(settings.p2fc_prefix)
    client = P2Client(parse_bases(settings.p2_api_bases), timeout_s=settings.p2_timeout_s)
    app[P2FC_GATEWAY] = gateway
    app[P2FC_CLIENT] = client
    app[P2FC_SETTINGS] = settings
    app[P2FC_BODY_LIMITS] = forms.BodyLimits.from_settings(settings)
    # One catch-all under the prefix: the client's doubled slash ("/p2fc//bkg_image")
    # and the bare prefix ("/p2fc") reach the same dispatcher, and anything else
    # under the prefix gets a JSON error the client can show.
    app.router.add_route("*", prefix.rstrip("/"), dispatch)
    app.router.add_route("*", prefix + "{tail:.*}", dispatch)

    async def start(app: web.Application) -> None:
        await client.start()

    async def stop(app: web.Application) -> None:
        await client.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def _error(description: str) -> Reply:
    return Reply(
        f"the error p2api raises as P2Error: {description}", {"application/json": representations.P2fcError}
    )


# What any endpoint may answer: p2 or a service refusing, or failing.
ERRORS = {
    400: _error("INVALID_ARGUMENT: a malformed request"),
    401: _error("UNAUTHENTICATED: p2 does not know the access token"),
    403: _error("FORBIDDEN: no access to the OB's run"),
    404: _error("NOT_FOUND: no such OB or image"),
    409: _error("RUN_MISMATCH or NOT_COMPATIBLE"),
    410: _error("GONE: the image was deleted or culled"),
    500: _error(Code.INTERNAL),
    502: _error("p2 answered in a way this service cannot read"),
    503: _error("UNAVAILABLE: p2 or an internal service is down"),
}
OB_INFO = representations.ObInfo | representations.UserImageObInfo | representations.ShownObInfo


def endpoints(prefix: str) -> list[Operation]:
    """The routes ESO's p2api client calls (p2fc_url = <gateway><prefix>), as the document
    says them; `dispatch` serves them from one catch-all route under the prefix."""
    named = (
        Param("url", "query", "the OB's p2 API URL (<p2 base>/obsBlocks/<id>)", str, True),
        Param("access_token", "query", "the user's p2 access token", str, True),
    )
    retry = {"Retry-After": "seconds to wait before trying again"}
    return [
        Operation(
            "GET",
            f"{prefix}bkg_image",
            "p2api bkg_image_get_ob_info (mode=get_ob) and bkg_image_get_ob_image_list",
            {
                200: json_reply(OB_INFO | representations.ImageList, "<ob_info> (get_ob) or <ob_image_list>"),
                **ERRORS,
            },
            bkg_image,
            params=(*named, Param("mode", "query", "get_ob or get_ob_image_list", str, True)),
        ),
        Operation(
            "POST",
            prefix,
            "p2api bkg_image_set_ob_info (mode=set_ob_info, value) and bkg_image_upload",
            {
                200: json_reply(
                    OB_INFO | representations.P2fcCharts,
                    "<ob_info> after set_ob_info; the charts after generateFindingChart",
                ),
                202: json_reply(
                    OB_INFO, "<ob_info> unchanged: the archive image is being fetched (see warnings)"
                ),
                201: json_reply(representations.UploadedObInfo, "<ob_info> of the uploaded image"),
                **ERRORS,
                408: _error("REQUEST_TIMEOUT: the body stalled or came too slowly"),
                413: _error("TOO_LARGE: over the size limit"),
                422: _error("the file was refused (code per failed check, findings in errors)"),
                429: _error(Code.TOO_MANY_UPLOADS).with_headers(**retry),
                409: _error("RUN_MISMATCH, NOT_COMPATIBLE, TOO_MANY_CHARTS or OB_NOT_EDITABLE"),
                503: _error("BUSY, UNAVAILABLE or STORE_UNAVAILABLE").with_headers(**retry),
            },
            post_root,
            description=(
                "A form with mode=set_ob_info, url, access_token and value (default, gaia, "
                "survey|NAME, eso_im|DPID, user_bkg_image|<fits_hash>); or multipart with the file "
                f"part {FILE_FIELD} whose part headers carry url, access_token, "
                "mode=upload_bkg_image and bkg_lam. Without mode: generateFindingChart (a form, or the "
                "file part with its fields as part headers): the charts rendered, then attached in p2."
            ),
            body={"multipart/form-data": None, "application/x-www-form-urlencoded": None},
        ),
        Operation(
            "DELETE",
            f"{prefix}bkg_image_delete",
            "p2api bkg_image_delete",
            {200: json_reply(representations.ImageList, "the OB's <ob_image_list>"), **ERRORS},
            bkg_image_delete,
            params=(
                *named,
                Param("fits_hash", "query", "user_bkg_image|<fits_hash>, or the bare hash", str, True),
            ),
        ),
    ]


# ---- dispatch -------------------------------------------------------------------------------------


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Routes on the endpoint name (slashes squeezed) and method; errors as p2api reads them."""
    endpoint = request.match_info.get("tail", "").strip("/")
    routes = {(op.method, op.path.strip("/")): op.handler for op in endpoints("/")}
    handler = routes.get((request.method, endpoint))
    try:
        if handler is None:
            if any(name == endpoint for _, name in routes):
                allowed = sorted(m for m, name in routes if name == endpoint)
                return error_response(
                    405,
                    Code.METHOD_NOT_ALLOWED,
                    f"use {', '.join(allowed)} here",
                    {"Allow": ", ".join(allowed)},
                )
            return error_response(404, Code.NOT_FOUND, "no such p2fc endpoint")
        return await handler(request)
    except ServiceError as err:
        if err.http_status >= 500:
            log.warning("p2fc %s %s -> %s: %s", request.method, endpoint, err.code, err.message)
        extra = {k: v for k, v in err.details.items() if k not in ("error", "code")}
        # p2's own failures come as UNAVAILABLE with a message the user needs ("p2 redirected").
        message = err.message if err.code == Code.UNAVAILABLE else public_message(err)
        return error_response(err.http_status, err.code, message, body_extra=extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status, Code.INVALID_ARGUMENT if exc.status < 500 else Code.INTERNAL, exc.reason
        )
    except Exception:
        # Still an answer p2api can read (JSON with `error`), never problem+json.
        log.exception("unexpected error in p2fc %s %s", request.method, endpoint)
        return error_response(500, Code.INTERNAL, "internal error")


def error_response(
    status: int,
    code: Code,
    message: str,
    headers: dict[str, str] | None = None,
    body_extra: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": message, "code": code, "status": status}
    body.update(body_extra or {})
    response = web.json_response(body, status=status, headers=headers)
    add_limit_headers(response, code, body)
    return response


# ---- the endpoints ----------------------------------------------------------------------------------


async def bkg_image(request: web.Request) -> web.Response:
    """GET bkg_image?mode=get_ob | get_ob_image_list."""
    query = raw_query(request)
    mode = query.get("mode", "")
    if mode not in ("get_ob", "get_ob_image_list"):
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"unknown mode {mode[:40]!r}: use get_ob or get_ob_image_list"
        )
    ctx = await _resolve(request, query)
    selector = request.app[P2FC_GATEWAY].selector
    caller, ob = caller_of(ctx), ob_of(ctx)
    if mode == "get_ob":
        selection = await selector.get_selection(caller, ctx.ob_id, ctx.run_id)
        return representations.json_response(await ob_info(request, ctx, selection))
    offer = await selector.list_images(caller, ob)
    return representations.json_response(image_list(request, offer))


async def bkg_image_delete(request: web.Request) -> web.Response:
    """DELETE bkg_image_delete?fits_hash=user_bkg_image|<hash>: the caller's own image."""
    query = raw_query(request)
    given = query.get("fits_hash", "")
    fits_hash = check_hash(given.removeprefix("user_bkg_image|"))
    ctx = await _resolve(request, query)
    gateway = request.app[P2FC_GATEWAY]
    caller = caller_of(ctx)
    await gateway.images.delete(caller, fits_hash)
    log.info("p2fc delete", extra={"user_id": ctx.user_id, "ob_id": ctx.ob_id, "fits_hash": fits_hash})
    offer = await gateway.selector.list_images(caller, ob_of(ctx))
    return representations.json_response(image_list(request, offer))


async def post_root(request: web.Request) -> web.Response:
    """POST to the prefix root: set_ob_info (a form) or upload_bkg_image (multipart)."""
    pace = forms.Pace.of(request, request.app[P2FC_BODY_LIMITS])
    if request.content_type.startswith("multipart/"):
        return await _multipart(request, pace)
    if request.content_type in ("application/x-www-form-urlencoded", ""):
        body = await forms.read_body(request, pace)
        text = body.rstrip().decode(request.charset or "utf-8", errors="replace")
        fields = dict(parse_qsl(text, keep_blank_values=True))
        mode = fields.get("mode", "")
        if mode == "set_ob_info":
            return await _set_ob_info(request, fields)
        if not mode:
            return await _generate(request, fields, None)
        raise ServiceError(Code.INVALID_ARGUMENT, f"unknown mode {mode[:40]!r} for a form: use set_ob_info")
    raise ServiceError(
        Code.INVALID_ARGUMENT, "send a form (set_ob_info) or multipart/form-data (upload_bkg_image)"
    )


# What generateFindingChart sends (p2api 1.2.1): a form, or these as the file part's headers.
CHART_FIELDS = (
    "url",
    "access_token",
    "obsdate",
    "stretch",
    "exponent",
    "pmin",
    "pmax",
    "GAIA_im_IQ",
    "GAIA_im_noise",
    "bkg_lam",
    "survey",
    "c_stretch",
    "c_exponent",
    "c_pmin",
    "c_pmax",
    "c_GAIA_im_IQ",
    "c_GAIA_im_noise",
)


async def _generate(request: web.Request, fields: dict[str, str], file: UploadFile | None) -> web.Response:
    """generateFindingChart: the set rendered first (2 charts; 3 with a survey or a
    bkg_image, which is stored as the user's image without changing the OB's selection),
    then attached in p2 in place of the charts this service made before (`p2_charts`)."""
    gateway = request.app[P2FC_GATEWAY]
    survey = fields.get("survey", "").strip()
    custom = f"survey|{gateway.surveys.lookup(survey).name}" if survey else ""  # unknown: 400, names
    ctx = await _resolve(request, fields)
    caller, ob = caller_of(ctx), ob_of(ctx)
    warnings: list[str] = []
    if file is not None:
        with gateway.uploads.user_slot(ctx.user_id):
            target = UploadTarget(ob, fields.get("bkg_lam", ""), keep_selection=True)
            outcome = await gateway.uploads.upload(caller, file, target)
        custom = f"user_bkg_image|{outcome.image.fits_hash}"  # a user image wins over a survey
        if survey:
            warnings.append(f"survey {survey} not used: the bkg_image makes the custom chart")
    obs_date = fields.get("obsdate", "").strip()[:10]
    values: dict[str, Any] = {k: v for k, v in fields.items() if k in CHART_FIELDS and v != ""}
    values.update(
        prog_id=ctx.prog_id,
        pi_name=ctx.pi_name,
        ob_name=ctx.ob_name,
        target_name=ctx.target_name or ctx.ob_name,
        obs_date=obs_date or None,
        image=custom,
    )
    chart_set = await gateway.charts.render(caller, ob, chart_params(values, selection_as_custom=False))
    names = await p2_charts.attach(
        request.app[P2FC_CLIENT], ctx, fields.get("access_token", ""), chart_set.charts
    )
    log.info("p2fc finding charts", extra={"user_id": ctx.user_id, "ob_id": ctx.ob_id, "charts": len(names)})
    ours = [n for n in names if n.startswith(p2_charts.PREFIX)]
    return representations.json_response(
        representations.P2fcCharts(
            ob_id=ctx.ob_id, charts=ours, finding_charts=names, warnings=warnings + chart_set.warnings
        )
    )


async def _set_ob_info(request: web.Request, fields: dict[str, str]) -> web.Response:
    value = fields.get("value", "")
    if not value:
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            "value is missing: default, gaia, survey|NAME, eso_im|DPID or user_bkg_image|<fits_hash>",
        )
    # A malformed value or an unknown survey is refused before p2 is asked anything.
    request.app[P2FC_GATEWAY].selector.parse(value)
    ctx = await _resolve(request, fields)
    selector = request.app[P2FC_GATEWAY].selector
    try:
        selection = await selector.select(caller_of(ctx), ob_of(ctx), value)
    except Preparing as preparing:
        # The OB keeps its background until the archive image is stored.
        current = await selector.get_selection(caller_of(ctx), ctx.ob_id, ctx.run_id)
        info = await ob_info(request, ctx, current)
        info.warnings.append(f"eso_im|{preparing.dp_id}: {representations.PREPARING}")
        return representations.json_response(info, 202)
    log.info("p2fc select", extra={"user_id": ctx.user_id, "ob_id": ctx.ob_id, "selection": value[:80]})
    return representations.json_response(await ob_info(request, ctx, selection))


async def _multipart(request: web.Request, pace: forms.Pace) -> web.Response:
    """upload_bkg_image: the file's part carries url, access_token, mode and bkg_lam in its
    headers (form fields sent before it count too); set_ob_info sent as multipart."""
    body = forms.UploadBody(request, pace, request.app[P2FC_SETTINGS].max_upload_bytes, {})
    file = await body.file()
    fields = body.fields
    if file is None:
        if fields.get("mode") == "set_ob_info":
            return await _set_ob_info(request, fields)
        if not fields.get("mode"):
            return await _generate(request, fields, None)
        raise ServiceError(Code.INVALID_ARGUMENT, f"the request has no {FILE_FIELD} part")
    for key in ("mode", *CHART_FIELDS):
        header = body.part_headers.get(key)
        if header is not None:
            fields[key] = header.strip()
    mode = fields.get("mode", "")
    if not mode:
        # generateFindingChart with a bkg_image (p2api drops falsy values: pmin=0 never comes).
        async with request.app[P2FC_GATEWAY].uploads.slot():
            return await _generate(request, fields, file)
    if mode != "upload_bkg_image":
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"unknown mode {mode[:40]!r} for a file: use upload_bkg_image"
        )
    # A place among the uploads in progress, before p2 is asked or the file read.
    async with request.app[P2FC_GATEWAY].uploads.slot():
        return await _upload(request, file, fields)


async def _upload(request: web.Request, file: UploadFile, fields: dict[str, str]) -> web.Response:
    # Who and which OB before a byte of the file is stored.
    ctx = await _resolve(request, fields)
    uploads = request.app[P2FC_GATEWAY].uploads
    with uploads.user_slot(ctx.user_id):
        target = UploadTarget(ob_of(ctx), fields.get("bkg_lam", ""))
        outcome = await uploads.upload(caller_of(ctx), file, target)
    log.info(
        "p2fc upload",
        extra={"user_id": ctx.user_id, "ob_id": ctx.ob_id, "fits_hash": outcome.image.fits_hash},
    )
    selection = catalog_pb2.Selection(
        kind=catalog_pb2.SELECTION_KIND_USER_IMAGE, value=outcome.image.fits_hash, image=outcome.image
    )
    info = await ob_info(request, ctx, selection)
    return representations.json_response(
        representations.UploadedObInfo(**dict(info), reused_content=outcome.reused_content), 201
    )


# ---- p2 and the catalog messages -------------------------------------------------------------------


async def _resolve(request: web.Request, fields: dict[str, str]) -> P2Context:
    return await request.app[P2FC_CLIENT].resolve(fields.get("url", ""), fields.get("access_token", ""))


def caller_of(ctx: P2Context) -> catalog_pb2.Caller:
    """The caller as p2 described them: the user and, for this request, their runs."""
    return catalog_pb2.Caller(user_id=ctx.user_id, runs=catalog_pb2.RunSet(run_ids=list(ctx.run_ids)))


def ob_of(ctx: P2Context) -> common_pb2.ObContext:
    ob = common_pb2.ObContext(
        ob_id=ctx.ob_id,
        run_id=ctx.run_id,
        target=common_pb2.SkyPosition(ra_deg=ctx.target.ra_deg, dec_deg=ctx.target.dec_deg),
        instrument=ctx.instrument,
    )
    if ctx.boa_star is not None:
        ob.boa_star.CopyFrom(common_pb2.SkyPosition(ra_deg=ctx.boa_star.ra_deg, dec_deg=ctx.boa_star.dec_deg))
    return ob


def raw_query(request: web.Request) -> dict[str, str]:
    """The query as sent. p2api does not percent-encode its values, so a "+" in a
    token is a "+", not a space; encoded values are decoded all the same."""
    out: dict[str, str] = {}
    # rel_url.raw_query_string, not query_string: aiohttp's decoded form has made "+" a space.
    for pair in request.rel_url.raw_query_string.split("&"):
        key, _, value = pair.partition("=")
        if key and key not in out:
            out[unquote(key)] = unquote(value)
    return out


# ---- the JSON shapes ---------------------------------------------------------------------------------


def image_list(request: web.Request, offer: Offer) -> representations.ImageList:
    """<ob_image_list>: the user's images first (p2api's example takes the first key), then the
    other sources the selector offers (the surveys, the Gaia image, the archive's images),
    each with its selection `value` and fits_hash null."""
    settings = request.app[P2FC_SETTINGS]
    surveys = request.app[P2FC_GATEWAY].surveys
    listing = offer.listing
    sources = [
        *representations.survey_sources(listing, settings.default_survey_name, surveys),
        representations.gaia_source(offer.gaia, listing.selected),
        *representations.archive_sources(offer.archive, listing.selected),
    ]
    return representations.image_list(listing, sources)


async def ob_info(
    request: web.Request, ctx: P2Context, selection: catalog_pb2.Selection
) -> representations.ObInfo:
    """<ob_info>: the OB's background, in p2api's vocabulary (`bkg_image`), and the OB as p2 gave it."""
    warnings: list[str] = []
    fields: dict[str, Any] = {
        "ob_id": ctx.ob_id,
        "run_id": ctx.run_id,
        "target": representations.Position(ra_deg=ctx.target.ra_deg, dec_deg=ctx.target.dec_deg),
        "boa_star": (
            representations.Position(ra_deg=ctx.boa_star.ra_deg, dec_deg=ctx.boa_star.dec_deg)
            if ctx.boa_star
            else None
        ),
        "bkg_image": format_selection(selection),
        "kind": representations.kind_of(selection),
        "value": selection.value,
        "warnings": warnings,
    }
    # A Gaia or archive image, once stored, is shown like a user image.
    system = selection.HasField("image") and selection.kind in (
        catalog_pb2.SELECTION_KIND_GAIA,
        catalog_pb2.SELECTION_KIND_ESO_IMAGE,
    )
    if selection.kind != catalog_pb2.SELECTION_KIND_USER_IMAGE and not system:
        return representations.ObInfo(**fields)
    fits_hash = selection.image.fits_hash if system else selection.value
    fields["fits_hash"] = fits_hash
    if system:
        fields["name"] = selection.image.file_name
    else:
        fields["image"] = (
            representations.p2fc_image(selection.image, fits_hash) if selection.HasField("image") else None
        )
    try:
        access = await request.app[P2FC_GATEWAY].hips.access(caller_of(ctx), fits_hash, ctx.ob_id)
    except ServiceError as err:
        warnings.append(f"the image cannot be displayed: {err.message}")
    else:
        public = request.app[P2FC_SETTINGS].public_url.rstrip("/")
        base = public or f"{request.scheme}://{request.host}"
        fields["hips_url"] = f"{base}{API}/images/{access.fits_hash}/hips/{access.token}"
        fields["hips_expires_at"] = access.expires_at
    if system:
        return representations.ShownObInfo(**fields)
    return representations.UserImageObInfo(**fields)
