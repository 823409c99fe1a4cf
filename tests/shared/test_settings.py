"""Settings come from the environment and refuse malformed values."""

from __future__ import annotations

import pytest

from services.shared import settings


def test_reads_typed_values() -> None:
    s = settings.load(settings.CatalogSettings, {"CATALOG_PORT": "6000", "CULL_HIGH_WATER": "0.5"})
    assert s.port == 6000 and s.high_water == 0.5
    assert s.store_dir == "var/store"


def test_malformed_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="CATALOG_PORT"):
        settings.load(settings.CatalogSettings, {"CATALOG_PORT": "many"})


def test_env_names_cover_common_and_own() -> None:
    names = settings.env_names(settings.GatewaySettings)
    assert {"SERVICE_TOKEN", "GATEWAY_PORT", "CATALOG_ADDR", "JWT_KEYS"} <= names
    assert "DATABASE_URL" not in names
