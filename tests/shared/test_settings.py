"""Settings come from the environment and refuse malformed values."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import SecretStr

from services.shared import settings


def test_reads_typed_values() -> None:
    s = settings.load(settings.CatalogSettings, {"CATALOG_PORT": "6000", "CULL_HIGH_WATER": "0.95"})
    assert s.port == 6000 and s.high_water == 0.95
    assert s.store_dir == "var/store"


def test_malformed_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="CATALOG_PORT"):
        settings.load(settings.CatalogSettings, {"CATALOG_PORT": "many"})


def test_env_names_cover_common_and_own() -> None:
    names = settings.env_names(settings.GatewaySettings)
    assert {"SERVICE_TOKEN", "GATEWAY_PORT", "CATALOG_ADDR", "JWT_KEYS"} <= names
    assert "DATABASE_URL" not in names


@pytest.mark.parametrize(
    ("cls", "environ", "named"),
    [
        (settings.ValidatorSettings, {"VALIDATOR_PORT": "70000"}, "VALIDATOR_PORT"),
        (settings.ValidatorSettings, {"VALIDATOR_PORT": "-1"}, "VALIDATOR_PORT"),
        (settings.ValidatorSettings, {"MAX_HDUS": "0"}, "MAX_HDUS"),
        (settings.ValidatorSettings, {"VALIDATOR_MAX_QUEUED": "-3"}, "VALIDATOR_MAX_QUEUED"),
        (settings.ValidatorSettings, {"MAX_HEADER_CARDS": "2000000"}, "MAX_TOTAL_HEADER_CARDS"),
        (settings.ProcessorSettings, {"SWARP_TIMEOUT_S": "0"}, "SWARP_TIMEOUT_S"),
        (settings.ProcessorSettings, {"HIPS_WORKERS": "two"}, "HIPS_WORKERS"),
        (settings.CatalogSettings, {"CULL_LOW_WATER": "0.9", "CULL_HIGH_WATER": "0.8"}, "CULL_LOW_WATER"),
        (settings.CatalogSettings, {"CULL_HIGH_WATER": "1.5"}, "CULL_HIGH_WATER"),
        (settings.CatalogSettings, {"STORE_CAPACITY_BYTES": "-5"}, "STORE_CAPACITY_BYTES"),
        (settings.CatalogSettings, {"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        (settings.GatewaySettings, {"CATALOG_ADDR": "catalog"}, "CATALOG_ADDR"),
        (settings.GatewaySettings, {"VALIDATOR_ADDR": "dns:///validator:99999"}, "VALIDATOR_ADDR"),
        (settings.GatewaySettings, {"DEFAULT_SURVEY_URL": "alasky/DSS"}, "DEFAULT_SURVEY_URL"),
        (settings.GatewaySettings, {"PUBLIC_URL": "ftp://bgimages.example.org"}, "PUBLIC_URL"),
        (settings.GatewaySettings, {"P2_API_BASES": "p2=www.eso.org/cop"}, "P2_API_BASES"),
        (settings.GatewaySettings, {"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        (settings.GatewaySettings, {"JWT_KEYS": "[1, 2]"}, "JWT_KEYS"),
        (settings.GatewaySettings, {"HIPS_SIGNING_KEY": "short"}, "HIPS_SIGNING_KEY"),
        (settings.GatewaySettings, {"DEV_MODE": "perhaps"}, "DEV_MODE"),
        (settings.GatewaySettings, {"MAX_UPLOADS": "1", "MAX_UPLOADS_PER_USER": "2"}, "MAX_UPLOADS"),
        (settings.GatewaySettings, {"S3_ENDPOINT": "http://minio:9000"}, "S3_ENDPOINT"),
        (settings.GatewaySettings, {"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        (settings.GatewaySettings, {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        (settings.GatewaySettings, {"SERVICE_TOKEN": " , "}, "SERVICE_TOKEN"),
        (settings.GatewaySettings, {"SHUTDOWN_GRACE_S": "-1"}, "SHUTDOWN_GRACE_S"),
        # Development mode stays on this machine; outside it, p2 is a real host over TLS.
        (settings.GatewaySettings, {"DEV_MODE": "1", "BIND_HOST": "0.0.0.0"}, "BIND_HOST is 0.0.0.0"),
        (settings.GatewaySettings, {"DEV_MODE": "1", "BIND_HOST": "10.1.2.3"}, "loopback only"),
        (settings.GatewaySettings, {"P2_API_BASES": "http://www.eso.org/cop/api/v1"}, "over https"),
        (settings.GatewaySettings, {"P2_API_BASES": "p2=https://127.0.0.1:8091/cop/api/v1"}, "not loopback"),
        (settings.GatewaySettings, {"P2_API_BASES": "https://eso.org/a,l=https://localhost/b"}, "localhost"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(
    cls: type[settings.Common], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(settings.SettingsError, match=named):
        settings.load(cls, environ)


def test_development_mode_may_use_a_development_p2_on_loopback() -> None:
    dev = {"DEV_MODE": "1", "BIND_HOST": "127.0.0.1", "P2_API_BASES": "p2=http://127.0.0.1:8091/cop/api/v1"}
    assert settings.load(settings.GatewaySettings, dev).dev_mode
    assert settings.load(settings.GatewaySettings, {"DEV_MODE": "1", "BIND_HOST": "::1"}).bind_host == "::1"


def test_values_the_deployments_use_are_accepted() -> None:
    s = settings.load(
        settings.GatewaySettings,
        {
            "CATALOG_ADDR": "dns:///catalog:50053",
            "S3_ENDPOINT": "minio:9000",
            "P2_API_BASES": "p2=https://www.eso.org/cop/api/v1,p2ls=https://www.eso.org/copls/api/v1",
            "PUBLIC_URL": "https://bgimages.example.org",
            "DEV_MODE": "",
            "LOG_LEVEL": "debug",
        },
    )
    assert s.catalog_addr == "dns:///catalog:50053" and s.dev_mode is False and s.log_level == "DEBUG"


SECRETS = {
    "SERVICE_TOKEN": "tok-hunter2-0123456789",
    "S3_ACCESS_KEY": "bgimages-hunter2",
    "S3_SECRET_KEY": "s3-hunter2-secret",
    "DATABASE_URL": "postgresql://bgimages:hunter2@postgres:5432/bgimages",
    "JWT_KEYS": '{"k1": "hunter2-hunter2-hunter2-hunter2-hunter2"}',
    "HIPS_SIGNING_KEY": "hips-hunter2-0123456789abcdef",
}


@pytest.mark.parametrize("cls", list(settings.ALL_SERVICES.values()), ids=list(settings.ALL_SERVICES))
def test_secrets_never_show(cls: type[settings.Common], caplog: pytest.LogCaptureFixture) -> None:
    names = settings.env_names(cls)
    s = settings.load(cls, {k: v for k, v in SECRETS.items() if k in names})
    logging.getLogger("test").warning("settings %s", s, extra={"settings": s})
    for text in (repr(s), str(s), caplog.text, str(s.model_dump()), json.dumps(s.model_dump(mode="json"))):
        assert "hunter2" not in text
    for v in settings.variables(cls):
        if v.name in SECRETS:
            assert v.secret, f"{v.name} must be a SecretStr"
            assert getattr(s, v.field).get_secret_value() == SECRETS[v.name]


def test_a_bad_secret_is_named_but_not_shown() -> None:
    with pytest.raises(settings.SettingsError, match="DATABASE_URL") as err:
        settings.load(settings.CatalogSettings, {"DATABASE_URL": "mysql://bgimages:hunter2@db/x"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(settings.SettingsError, match="JWT_KEYS") as err:
        settings.load(settings.GatewaySettings, {"JWT_KEYS": "{'k1': 'hunter2'}"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(ValueError) as direct:
        settings.CatalogSettings(database_url=SecretStr("mysql://bgimages:hunter2@db/x"))
    assert "hunter2" not in str(direct.value)


def test_the_constructor_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_PORT", "6001")
    assert settings.CatalogSettings().port == 50053
    assert settings.load(settings.CatalogSettings).port == 6001
