"""The OpenAPI 3.1 document of the native API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from services.shared.settings import GatewaySettings


def document(settings: GatewaySettings) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "bgimages gateway", "version": "1.0.0"}, "paths": {}}
