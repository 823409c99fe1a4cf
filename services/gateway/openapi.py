"""The OpenAPI 3.1 document of the gateway (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from services.shared.settings import GatewaySettings

ERROR_CODES = [
    "NOT_FITS",
    "TRUNCATED",
    "BAD_HEADER",
    "NONSTANDARD_HEADER",
    "BAD_COMPRESSION",
    "NO_IMAGE_HDU",
    "INVALID_WCS",
    "TARGET_OUTSIDE_FIELD",
    "BOA_OUTSIDE_FIELD",
    "TARGET_IN_CHIP_GAP",
    "BOA_IN_CHIP_GAP",
    "NO_FILTER",
    "TOO_LARGE",
    "TOO_MANY_HDUS",
    "TOO_MANY_CARDS",
    "UNSUPPORTED_COMPRESSION",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "FORBIDDEN",
    "UNAUTHENTICATED",
    "RUN_MISMATCH",
    "NOT_COMPATIBLE",
    "GONE",
    "UNKNOWN_RUN",
    "PROCESSING_FAILED",
    "STORE_UNAVAILABLE",
    "UNAVAILABLE",
    "INTERNAL",
    "METHOD_NOT_ALLOWED",
    "UNSUPPORTED_MEDIA_TYPE",
    "REQUEST_TIMEOUT",
    "TOO_MANY_UPLOADS",
    "BUSY",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
OB_ID = _param("ob_id", "path", "p2's integer OB id", {"type": "integer", "minimum": 1}, True)
FITS_HASH = _param("fits_hash", "path", "SHA-256 of the uploaded bytes (64 hex digits)", _HASH, True)
OB_QUERY = [
    _param("run_id", "query", "the OB's run (namespaced, e.g. p2:60.A-9252(A))", _STRING, True),
    _param("target_ra", "query", "target right ascension, degrees [0, 360)", _NUMBER, True),
    _param("target_dec", "query", "target declination, degrees [-90, 90]", _NUMBER, True),
    _param("boa_ra", "query", "BOA reference star right ascension, degrees", _NUMBER),
    _param("boa_dec", "query", "BOA reference star declination, degrees", _NUMBER),
]
DISPLAY_OB = _param(
    "ob_id", "query", "the OB whose selection is displayed (display rule)", {"type": "integer", "minimum": 1}
)
AUTH_ERRORS = {
    "401": _problem("UNAUTHENTICATED: missing, expired or invalid token"),
    "503": _problem("UNAVAILABLE / STORE_UNAVAILABLE: an internal service is down"),
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": _STRING}}
UPLOAD_LIMITS = {
    "408": _problem("REQUEST_TIMEOUT: the body stalled or came slower than the minimum rate"),
    "429": {
        **_problem("TOO_MANY_UPLOADS: the caller's uploads in progress are at the limit"),
        "headers": RETRY_AFTER,
    },
    "503": {
        **_problem(
            "BUSY: the gateway's uploads or a service's queue are at their limit (Retry-After); "
            "UNAVAILABLE / STORE_UNAVAILABLE: an internal service or the store is down"
        ),
        "headers": RETRY_AFTER,
    },
}


def _schemas() -> dict[str, Any]:
    position = {
        "type": "array",
        "items": _NUMBER,
        "minItems": 2,
        "maxItems": 2,
        "description": "[ra, dec] degrees",
    }
    return {
        "P2fcError": {
            "type": "object",
            "description": "an error of the p2api face: p2api raises P2Error with `error`",
            "required": ["error", "code", "status"],
            "properties": {"error": _STRING, "code": _STRING, "status": {"type": "integer"}},
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details with a stable code",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": _STRING,
                "status": {"type": "integer"},
                "detail": _STRING,
                "code": {"type": "string", "enum": ERROR_CODES},
                "errors": {
                    "type": "array",
                    "description": "validation findings, one per failed check",
                    "items": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": _STRING, "hdu": {"type": "integer"}, "message": _STRING},
                    },
                },
            },
        },
        "Footprint": {
            "type": "object",
            "properties": {
                "hdu": {"type": "integer"},
                "corners": {"type": "array", "items": position},
                "pixel_scale_arcsec": _NUMBER,
            },
        },
        "Image": {
            "type": "object",
            "required": ["fits_hash", "selection", "file_name", "owned_by_caller"],
            "properties": {
                "fits_hash": _HASH,
                "selection": {"type": "string", "description": "user_bkg_image|<fits_hash>"},
                "file_name": {"type": "string", "description": "as the user gave it (user text)"},
                "object_name": {"type": "string", "description": "FITS OBJECT (user text)"},
                "filter": _STRING,
                "owner_id": _STRING,
                "owned_by_caller": {"type": "boolean"},
                "file_bytes": {"type": "integer", "description": "the file as uploaded (0: not recorded)"},
                "stored_bytes": {
                    "type": "integer",
                    "description": "everything stored for it: the file, mosaic, HiPS and preview",
                },
                "hips_order": {"type": "integer"},
                "pixel_cut": {"type": "array", "items": _NUMBER},
                "footprints": {"type": "array", "items": _ref("Footprint")},
                "run_ids": {"type": "array", "items": _STRING},
                "created_at": {"type": ["string", "null"], "format": "date-time"},
                "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                "links": {"type": "object", "additionalProperties": _STRING},
                "reused_content": {
                    "type": "boolean",
                    "description": "upload only: the bytes were stored already",
                },
            },
        },
        "Selection": {
            "type": "object",
            "required": ["selection", "kind"],
            "properties": {
                "selection": {
                    "type": "string",
                    "description": "default, gaia, survey|NAME, eso_im|DPID or user_bkg_image|<fits_hash>",
                },
                "kind": {"type": "string", "enum": ["default", "gaia", "survey", "eso_image", "user_image"]},
                "value": _STRING,
                "image": {"oneOf": [_ref("Image"), {"type": "null"}]},
            },
        },
        "Tombstone": {
            "type": "object",
            "properties": {
                "fits_hash": _HASH,
                "file_name": _STRING,
                "removed_at": {"type": ["string", "null"], "format": "date-time"},
                "reason": {"type": "string", "enum": ["deleted", "culled", "unspecified"]},
            },
        },
        "Listing": {
            "type": "object",
            "required": ["ob_id", "run_id", "default_survey", "own", "shared", "selected", "tombstones"],
            "properties": {
                "ob_id": {"type": "integer"},
                "run_id": _STRING,
                "default_survey": {
                    "type": "object",
                    "properties": {"selection": _STRING, "name": _STRING, "hips_url": _STRING},
                },
                "own": {"type": "array", "items": _ref("Image")},
                "shared": {"type": "array", "items": _ref("Image")},
                "selected": _ref("Selection"),
                "tombstones": {"type": "array", "items": _ref("Tombstone")},
            },
        },
        "SelectRequest": {
            "type": "object",
            "required": ["run_id", "target_ra", "target_dec", "selection"],
            "properties": {
                "run_id": _STRING,
                "target_ra": _NUMBER,
                "target_dec": _NUMBER,
                "boa_ra": _NUMBER,
                "boa_dec": _NUMBER,
                "selection": _STRING,
            },
        },
        "HipsAccess": {
            "type": "object",
            "required": ["fits_hash", "hips_url", "expires_at"],
            "properties": {
                "fits_hash": _HASH,
                "hips_url": {
                    "type": "string",
                    "description": "base URL; append /properties, /NorderK/DirD/NpixN.png",
                },
                "expires_at": {"type": "integer", "description": "seconds since the epoch"},
            },
        },
        "Run": {
            "type": "object",
            "required": ["owner_id", "delegate_ids"],
            "properties": {
                "run_id": _STRING,
                "owner_id": _STRING,
                "delegate_ids": {"type": "array", "items": _STRING},
            },
        },
    }


def _p2fc_paths(prefix: str) -> dict[str, Any]:
    """The p2api face: the routes ESO's p2api client calls (p2fc_url = <gateway><prefix>)."""
    base = "/" + prefix.strip("/") + "/"
    named = [
        _param("url", "query", "the OB's p2 API URL (<p2 base>/obsBlocks/<id>)", _STRING, True),
        _param("access_token", "query", "the user's p2 access token", _STRING, True),
    ]
    error = {
        "description": "the error p2api raises as P2Error",
        "content": {"application/json": {"schema": _ref("P2fcError")}},
    }
    errors = {"400": error, "401": error, "403": error, "404": error, "410": error, "502": error}
    answer = _json("the OB's background (bkg_image, fits_hash, ...)", {"type": "object"})
    return {
        f"{base}bkg_image": {
            "get": {
                "summary": "p2api bkg_image_get_ob_info (mode=get_ob) and bkg_image_get_ob_image_list",
                "parameters": [
                    *named,
                    _param("mode", "query", "get_ob or get_ob_image_list", _STRING, True),
                ],
                "responses": {"200": answer, **errors},
            }
        },
        base: {
            "post": {
                "summary": "p2api bkg_image_set_ob_info (mode=set_ob_info, value) and bkg_image_upload",
                "description": (
                    "A form with mode=set_ob_info, url, access_token and value (default, gaia, "
                    "survey|NAME, eso_im|DPID, user_bkg_image|<fits_hash>); or multipart with the file "
                    "part bkg_image_fits_file whose part headers carry url, access_token, "
                    "mode=upload_bkg_image and bkg_lam. Without mode (generateFindingChart): 501."
                ),
                "requestBody": {
                    "content": {
                        "multipart/form-data": {"schema": {"type": "object"}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    }
                },
                "responses": {
                    "200": answer,
                    "201": answer,
                    "408": error,
                    "413": error,
                    "422": error,
                    "429": {**error, "headers": RETRY_AFTER},
                    "501": error,
                    "503": {**error, "headers": RETRY_AFTER},
                    **errors,
                },
            }
        },
        f"{base}bkg_image_delete": {
            "delete": {
                "summary": "p2api bkg_image_delete",
                "parameters": [
                    *named,
                    _param(
                        "fits_hash", "query", "user_bkg_image|<fits_hash>, or the bare hash", _STRING, True
                    ),
                ],
                "responses": {"200": _json("the OB's image list", {"type": "object"}), **errors},
            }
        },
    }


def document(settings: GatewaySettings) -> dict[str, Any]:
    """The OpenAPI document describing every route of the gateway."""
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    api = "/api/v1"
    upload_form = {
        "type": "object",
        "required": ["file", "run_id", "target_ra", "target_dec"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/fits"},
            "run_id": _STRING,
            "target_ra": _NUMBER,
            "target_dec": _NUMBER,
            "boa_ra": _NUMBER,
            "boa_dec": _NUMBER,
            "bandpass": {
                "type": "string",
                "description": "filter for files that name none (p2api's bkg_lam)",
            },
        },
    }
    paths: dict[str, Any] = {
        f"{api}/obs/{{ob_id}}/background-images": {
            "post": {
                "summary": "Upload a FITS image for an OB; it becomes the OB's selection",
                "description": (
                    "Multipart with the file and the OB context, or a raw FITS body (application/fits, "
                    "optionally gzip) with the context as query parameters. Streamed to the store while "
                    f"hashed; at most {settings.max_upload_bytes} bytes."
                ),
                "security": bearer,
                "parameters": [
                    OB_ID,
                    *[dict(p, required=False) for p in OB_QUERY],
                    _param("bandpass", "query", "filter for files that name none", _STRING),
                    _param("file_name", "query", "file name for a raw body", _STRING),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": upload_form},
                        "application/fits": {
                            "schema": {"type": "string", "contentMediaType": "application/fits"}
                        },
                        "application/gzip": {
                            "schema": {"type": "string", "contentMediaType": "application/gzip"}
                        },
                    },
                },
                "responses": {
                    "201": {
                        **_json("the stored image, now the OB's selection", _ref("Image")),
                        "headers": {"Location": {"schema": _STRING}, "Server-Timing": {"schema": _STRING}},
                    },
                    "400": _problem("INVALID_ARGUMENT: malformed OB context or body"),
                    "403": _problem("FORBIDDEN: no access to the OB's run"),
                    "404": _problem("UNKNOWN_RUN"),
                    "409": _problem("RUN_MISMATCH: the OB belongs to another run"),
                    "413": _problem("TOO_LARGE: over the size limit"),
                    "422": _problem("the file was refused (code per failed check, findings in errors)"),
                    "500": _problem("PROCESSING_FAILED or INTERNAL"),
                    **AUTH_ERRORS,
                    **UPLOAD_LIMITS,
                },
            },
            "get": {
                "summary": "What the selector shows for the OB",
                "security": bearer,
                "parameters": [OB_ID, *OB_QUERY],
                "responses": {
                    "200": _json(
                        "default survey, own and shared images, selection, tombstones", _ref("Listing")
                    ),
                    "400": _problem("INVALID_ARGUMENT"),
                    "403": _problem("FORBIDDEN"),
                    "409": _problem("RUN_MISMATCH"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/obs/{{ob_id}}/background-image": {
            "put": {
                "summary": "Select (use) a background for the OB",
                "security": bearer,
                "parameters": [OB_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SelectRequest")}},
                },
                "responses": {
                    "200": _json("the OB's selection", _ref("Selection")),
                    "400": _problem("INVALID_ARGUMENT: malformed selection or context"),
                    "403": _problem("FORBIDDEN"),
                    "404": _problem("NOT_FOUND: no such image visible to the caller"),
                    "409": _problem("NOT_COMPATIBLE or RUN_MISMATCH"),
                    "410": _problem("GONE"),
                    **AUTH_ERRORS,
                },
            },
            "get": {
                "summary": "The OB's current selection",
                "security": bearer,
                "parameters": [OB_ID, _param("run_id", "query", "the OB's run", _STRING)],
                "responses": {
                    "200": _json("the OB's selection", _ref("Selection")),
                    "403": _problem("FORBIDDEN"),
                    "404": _problem("NOT_FOUND"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/images/{{fits_hash}}": {
            "get": {
                "summary": "One image (own first, else one the caller may list)",
                "security": bearer,
                "parameters": [FITS_HASH],
                "responses": {
                    "200": _json("the image", _ref("Image")),
                    "400": _problem("INVALID_ARGUMENT: not a fits_hash"),
                    "404": _problem("NOT_FOUND (also for images the caller may not list)"),
                    "410": _problem("GONE: deleted or culled"),
                    **AUTH_ERRORS,
                },
            },
            "delete": {
                "summary": "Delete one of the caller's images",
                "security": bearer,
                "parameters": [FITS_HASH],
                "responses": {
                    "200": _json("the tombstone", _ref("Tombstone")),
                    "403": _problem("FORBIDDEN: not the owner"),
                    "404": _problem("NOT_FOUND"),
                    "410": _problem("GONE"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/images/{{fits_hash}}/preview.png": {
            "get": {
                "summary": "The image's preview (north up, east left)",
                "security": bearer,
                "parameters": [FITS_HASH, DISPLAY_OB],
                "responses": {
                    "200": {"description": "PNG", "content": {"image/png": {}}},
                    "404": _problem("NOT_FOUND"),
                    "410": _problem("GONE"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/images/{{fits_hash}}/fits": {
            "get": {
                "summary": "The stored FITS (the mosaic for a MEF), streamed",
                "security": bearer,
                "parameters": [FITS_HASH, DISPLAY_OB],
                "responses": {
                    "200": {"description": "FITS", "content": {"application/fits": {}}},
                    "404": _problem("NOT_FOUND"),
                    "410": _problem("GONE"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/images/{{fits_hash}}/hips": {
            "get": {
                "summary": "A HiPS base URL for Aladin Lite with a signed, expiring token in its path",
                "security": bearer,
                "parameters": [FITS_HASH, DISPLAY_OB],
                "responses": {
                    "200": _json("the HiPS base URL", _ref("HipsAccess")),
                    "404": _problem("NOT_FOUND"),
                    "410": _problem("GONE"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/images/{{fits_hash}}/hips/{{token}}/{{path}}": {
            "get": {
                "summary": "A HiPS file: properties, Moc.fits, Norder3/Allsky.*, NorderK/DirD/NpixN.*",
                "description": "Only the token is needed; CORS open; cacheable until the token expires.",
                "parameters": [
                    FITS_HASH,
                    _param("token", "path", "HiPS token from .../hips", _STRING, True),
                    _param("path", "path", "file inside the HiPS", _STRING, True),
                ],
                "responses": {
                    "200": {
                        "description": "the file, streamed",
                        "headers": {
                            "Access-Control-Allow-Origin": {"schema": _STRING},
                            "Cache-Control": {"schema": _STRING},
                        },
                        "content": {"image/png": {}, "application/fits": {}, "text/plain": {}},
                    },
                    "403": _problem("FORBIDDEN: tampered, expired or another image's token"),
                    "404": _problem("NOT_FOUND: no such file in the HiPS"),
                    "410": _problem("GONE: the image was deleted or culled"),
                },
            },
        },
        f"{api}/runs/{{run_id}}": {
            "put": {
                "summary": "Set a run's owner and delegates (scope bgimages:admin)",
                "security": bearer,
                "parameters": [_param("run_id", "path", "run id (URL-encoded)", _STRING, True)],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Run")}}},
                "responses": {
                    "200": _json("the run", _ref("Run")),
                    "400": _problem("INVALID_ARGUMENT"),
                    "403": _problem("FORBIDDEN: the token lacks scope bgimages:admin"),
                    **AUTH_ERRORS,
                },
            },
            "delete": {
                "summary": "Forget a run and its delegations (scope bgimages:admin)",
                "security": bearer,
                "parameters": [_param("run_id", "path", "run id (URL-encoded)", _STRING, True)],
                "responses": {
                    "204": {"description": "removed"},
                    "403": _problem("FORBIDDEN"),
                    "404": _problem("UNKNOWN_RUN"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{api}/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}},
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: the three gRPC services (catalog: also its database) and the store",
                "responses": {
                    "200": {"description": "ready"},
                    "503": _problem("UNAVAILABLE, with the failing checks"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
        **_p2fc_paths(settings.p2fc_prefix),
        "/": {
            "get": {
                "summary": "The Background-image page",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "User background images gateway",
            "version": "1.0.0",
            "description": (
                "Upload FITS images as backgrounds of p2 Observation Blocks, list and select them, and "
                "display them in Aladin Lite. Errors are application/problem+json with a stable code."
            ),
        },
        "servers": [{"url": settings.public_url or "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": _schemas(),
        },
    }
