"""Every response the tests receive from a gateway, checked against the OpenAPI document
that gateway serves, so the document cannot lie.

For each response: its path and method are documented (a path no route matches must
answer 404, a method its path does not offer 405, with the face's error body); its
status is documented for that operation; its content type is one the status declares;
a JSON body validates against the declared schema. `install` puts the check into
aiohttp's and requests' clients (every session the tests, p2api or bgimages_client
open); `watch` names the gateways to check (the suites started, the in-process apps).
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import requests
from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.gateway import p2fc

DOCUMENT_PATH = "/api/v1/openapi.json"
JSON_TYPES = ("application/json", "application/problem+json")
_URN = "urn:bgimages:openapi"


class Mismatch(AssertionError):
    """A response the document does not describe."""


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclasses.dataclass(frozen=True)
class _Path:
    template: str
    narrow: re.Pattern[str]  # each {param} one segment
    wide: re.Pattern[str]  # a {param} may span segments (HiPS files, static folders)


def _compile(template: str, param: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(param if p.startswith("{") else re.escape(p) for p in parts) + "$")


class Contract:
    """One gateway's document, and the check of a response against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.p2fc_prefix: str = document.get("x-p2fc-prefix", "")
        self._paths = [_Path(t, _compile(t, "[^/]+"), _compile(t, ".+")) for t in document["paths"]]
        resource: Resource[Any] = DRAFT202012.create_resource(document)
        self._registry: Registry[Any] = Registry().with_resource(_URN, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def template_of(self, path: str) -> str | None:
        """The documented path this one is, the most specific when several match."""
        for field in ("narrow", "wide"):
            matches = [p.template for p in self._paths if getattr(p, field).match(path)]
            if matches:
                return max(matches, key=lambda t: len(re.sub(r"\{\w+\}", "", t)))
        return None

    def _normalized(self, path: str) -> str:
        """Under the p2api face's prefix, the slashes around the endpoint's name are ignored."""
        root = self.p2fc_prefix.rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            return self.p2fc_prefix + path[len(root) :].strip("/")
        return path

    def _error_schema(self, path: str) -> str:
        face = "P2fcError" if self.p2fc_prefix and path.startswith(self.p2fc_prefix) else "Problem"
        return _pointer("components", "schemas", face)

    def check(self, method: str, path: str, status: int, headers: Any, body: bytes | None) -> None:
        """Raises Mismatch unless the document describes this response."""
        path = self._normalized(path)
        what = f"{method} {path} -> {status}"
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        template = self.template_of(path)
        if template is None:
            if status != 404:
                raise Mismatch(f"{what}: the path is not in the document")
            return self._validate(what, self._error_schema(path), content_type, body)
        operations = self.document["paths"][template]
        op_method = "get" if method == "HEAD" and "head" not in operations else method.lower()
        if op_method not in operations:
            if status != 405 or not headers.get("Allow"):
                raise Mismatch(f"{what}: {template} documents only {sorted(operations)}")
            return self._validate(what, self._error_schema(path), content_type, body)
        responses = operations[op_method]["responses"]
        if str(status) not in responses:
            raise Mismatch(f"{what}: {op_method.upper()} {template} documents only {sorted(responses)}")
        declared = responses[str(status)].get("content", {})
        if method == "HEAD":
            return
        if not declared:
            if body:
                raise Mismatch(f"{what}: a body where the document declares none")
            return
        if content_type not in declared and "*/*" not in declared:
            raise Mismatch(f"{what}: {content_type!r}, the document declares {sorted(declared)}")
        if "schema" in declared.get(content_type, {}):
            pointer = _pointer(
                "paths", template, op_method, "responses", str(status), "content", content_type
            )
            self._validate(what, pointer + "/schema", content_type, body)

    def _validate(self, what: str, pointer: str, content_type: str, body: bytes | None) -> None:
        if content_type not in JSON_TYPES or body is None:
            raise Mismatch(f"{what}: {content_type!r} where JSON is documented")
        try:
            instance = json.loads(body)
        except ValueError:
            raise Mismatch(f"{what}: the body is not JSON") from None
        validator = self._validators.get(pointer)
        if validator is None:
            ref = {"$ref": _URN + "#" + quote(pointer, safe="/~")}
            validator = Draft202012Validator(
                ref, registry=self._registry, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            self._validators[pointer] = validator
        problems = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        if problems:
            found = "; ".join(
                f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in problems
            )
            raise Mismatch(f"{what}: the body does not match {pointer}: {found[:2000]}")


def routed(app: web.Application) -> set[tuple[str, str]]:
    """(path, method) of every route the app's router serves, as the document writes them."""
    out: set[tuple[str, str]] = set()
    prefix = p2fc.normalize_prefix(app[p2fc.P2FC_SETTINGS].p2fc_prefix)
    gets = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource}
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        info = resource.get_info()
        if route.method == "HEAD" and resource.canonical in gets:
            continue  # served with every GET
        if "prefix" in info:  # a static folder
            out.add((f"{info['prefix'].rstrip('/')}/{{filename}}", route.method))
        elif route.method == "*":  # the p2api face's catch-all: the endpoints its dispatcher serves
            assert resource.canonical.startswith(prefix.rstrip("/"))
            out |= {(op.path, op.method) for op in p2fc.endpoints(prefix)}
        else:
            out.add((resource.canonical, route.method))
    return out


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}


@dataclasses.dataclass
class _Tally:
    count: int = 0  # JSON bodies validated against a schema
    responses: int = 0  # responses checked
    mismatches: list[str] = dataclasses.field(default_factory=list)


CHECKED = _Tally()
_WATCHED: dict[str, Contract | None] = {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def watch(url: str, document: dict[str, Any] | None = None) -> None:
    """Checks every response from this gateway (its document fetched on first use when not given)."""
    _WATCHED[_origin(url)] = Contract(document) if document is not None else None


def _contract(url: str) -> Contract | None:
    origin = _origin(url)
    if origin not in _WATCHED:
        return None
    contract = _WATCHED[origin]
    if contract is None:
        # urllib: neither of the clients whose responses are checked.
        with urllib.request.urlopen(origin + DOCUMENT_PATH, timeout=30) as resp:
            contract = _WATCHED[origin] = Contract(json.load(resp))
    return contract


def check(method: str, url: str, raw_path: str, status: int, headers: Any, body: bytes | None) -> None:
    contract = _contract(url)
    if contract is None:
        return
    CHECKED.responses += 1
    try:
        contract.check(method.upper(), raw_path, status, headers, body)
    except Mismatch as exc:
        CHECKED.mismatches.append(str(exc))
        raise
    if body is not None:
        CHECKED.count += 1


def _wants_body(headers: Any) -> bool:
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower() in JSON_TYPES


async def _aiohttp_middleware(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if _contract(str(request.url)) is not None:
        body = await response.read() if _wants_body(response.headers) else None
        check(request.method, str(request.url), request.url.raw_path, response.status, response.headers, body)
    return response


@contextmanager
def install() -> Iterator[None]:
    """The check in every aiohttp ClientSession and requests Session opened meanwhile."""
    aiohttp_init = aiohttp.ClientSession.__init__
    requests_send = requests.Session.send

    def init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        kwargs["middlewares"] = (*kwargs.get("middlewares", ()), _aiohttp_middleware)
        aiohttp_init(self, *args, **kwargs)

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests_send(self, request, **kwargs)
        url = request.url or ""
        if _contract(url) is not None:
            body = response.content if _wants_body(response.headers) else None
            check(
                request.method or "GET", url, urlsplit(url).path, response.status_code, response.headers, body
            )
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aiohttp.ClientSession, "__init__", init)
        patch.setattr(requests.Session, "send", send)
        yield
