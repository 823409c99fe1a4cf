"""The OpenAPI 3.1 document of the gateway, generated from its route tables and JSON models.

Each face declares its routes once, as `Operation`s (method, path, summary, parameters,
request body, responses per status with their pydantic models); the app adds the same
declarations to its router, and `document` turns them into what /api/v1/openapi.json
serves. Nothing here is written twice: a model changed is a document changed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import TypeAdapter

from services.shared.errors import Code

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM_JSON = "application/problem+json"
SCHEMAS = "#/components/schemas/{model}"

# Codes only the HTTP edges make (aiohttp's own errors, the p2api face's 501): no domain
# error carries them.


def error_codes() -> list[str]:
    """Every code an error body may carry: the catalogue's (the proto enum ErrorCode)."""
    return [code.value for code in Code]


@dataclasses.dataclass(frozen=True)
class Param:
    """A path or query parameter; `type` is a Python type pydantic turns into a schema."""

    name: str
    where: Literal["path", "query"]
    description: str
    type: Any = str
    required: bool = False

    def optional(self) -> Param:
        return dataclasses.replace(self, required=False)


def path_param(name: str, description: str, type_: Any = str) -> Param:
    return Param(name, "path", description, type_, required=True)


@dataclasses.dataclass(frozen=True)
class Reply:
    """One response: its content per media type (a model, or None for bytes) and headers."""

    description: str
    content: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_headers(self, **headers: str) -> Reply:
        return dataclasses.replace(self, headers={**self.headers, **headers})


def json_reply(model: Any, description: str) -> Reply:
    return Reply(description, {"application/json": model})


def files(description: str, *media_types: str) -> Reply:
    return Reply(description, dict.fromkeys(media_types))


@dataclasses.dataclass(frozen=True)
class Operation:
    """One route: what the router serves and the document says, declared together.

    `path` is aiohttp's (`{name:regex}` is documented as `{name}`); a `static` folder
    is served below the path's fixed part instead of a handler."""

    method: str
    path: str
    summary: str
    responses: Mapping[int, Reply]
    handler: Handler | None = None
    description: str = ""
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None  # request media type -> model (None: any bytes)
    secured: bool = False
    static: Path | None = None

    @property
    def documented_path(self) -> str:
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)

    @property
    def prefix(self) -> str:
        """The fixed part of the path (where a static folder is served)."""
        return self.path.split("{", 1)[0]


class _Schemas:
    """Turns models into schemas, collecting every named model under components."""

    def __init__(self) -> None:
        self._wanted: list[
            tuple[tuple[int, str], Literal["validation", "serialization"], TypeAdapter[Any]]
        ] = []

    def want(self, model: Any, mode: Literal["validation", "serialization"]) -> tuple[int, str]:
        key = (len(self._wanted), mode)
        self._wanted.append((key, mode, TypeAdapter(model)))
        return key

    def resolve(self) -> tuple[dict[tuple[int, str], Any], dict[str, Any]]:
        found, defs = TypeAdapter.json_schemas(self._wanted, ref_template=SCHEMAS)
        return {key: schema for (key, _), schema in found.items()}, defs.get("$defs", {})


def _content(schemas: _Schemas, content: Mapping[str, Any], mode: Any) -> dict[str, Any]:
    return {
        media: ({"schema": schemas.want(model, mode)} if model is not None else {})
        for media, model in content.items()
    }


def _reply(reply: Reply, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in reply.headers.items()
        }
    if reply.content:
        out["content"] = _content(schemas, reply.content, "serialization")
    return out


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.secured:
        out["security"] = [{"bearer": []}]
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": TypeAdapter(p.type).json_schema(),
            }
            for p in op.params
        ]
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": _content(schemas, op.body, "validation")}
    out["responses"] = {str(status): _reply(reply, schemas) for status, reply in sorted(op.responses.items())}
    return out


def _fill(node: Any, found: Mapping[tuple[int, str], Any]) -> Any:
    """Puts the schemas in where `_Schemas.want` left their keys."""
    if isinstance(node, dict):
        return {
            k: (found[v] if k == "schema" and isinstance(v, tuple) else _fill(v, found))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_fill(v, found) for v in node]
    return node


def document(
    operations: Iterable[Operation],
    *,
    title: str,
    version: str,
    description: str,
    server_url: str,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these operations."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.documented_path, {})[op.method.lower()] = _operation(op, schemas)
    found, defs = schemas.resolve()
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": server_url}],
        **(extensions or {}),
        "paths": _fill(paths, found),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": defs,
        },
    }
