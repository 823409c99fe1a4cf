"""Settings read from environment variables, one pydantic-settings class per service.

Every field names its variable (`validation_alias`) and says what it means
(`title`), so the deployment manifests and the README can be checked against
what the code reads (`variables`, `env_names`). Values are checked when they
are loaded: a bad one stops the service at start with a message naming the
variable. Secrets are `SecretStr`: they show as `**********` in repr, str and
logs; `.get_secret_value()` is the only way to the value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

S = TypeVar("S", bound="Common")


class SettingsError(ValueError):
    """A setting with a bad value; the message names the variable and never shows a secret."""


# ---- value checks -------------------------------------------------------------------------------


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError("expected a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return level


def _empty_is_false(value: Any) -> Any:
    # An empty variable has always meant "off" here; pydantic alone would refuse it.
    return False if isinstance(value, str) and not value.strip() else value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_port(text: str) -> None:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")


def _host_port(value: str) -> str:
    """host:port (a hostname, IPv4 or [IPv6]), as gRPC targets and the S3 endpoint have them."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or "/" in host or "@" in host or " " in value:
        raise ValueError("expected host:port")
    _check_port(port)
    return value


def _grpc_target(value: str) -> str:
    """A gRPC address: host:port, or dns:///host:port (every pod behind a headless Service)."""
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if value.startswith(scheme):
            _host_port(value.removeprefix(scheme))
            return value
    return _host_port(value)


def _s3_endpoint(value: str) -> str:
    if not value:
        return value
    if "://" in value:
        raise ValueError("expected host:port without a scheme (S3_SECURE chooses TLS)")
    return value if ":" not in value else _host_port(value)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError("expected an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError("the URL has a bad port") from None
    return value


def _http_url_or_empty(value: str) -> str:
    return value if not value else _http_url(value)


def _p2_urls(value: str) -> list[str]:
    """The URLs of comma-separated `[instance=]url` entries."""
    urls = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        name, sep, url = entry.partition("=")
        urls.append(url.strip() if sep and "://" not in name else entry)
    return urls


def _p2_bases(value: str) -> str:
    """Each comma-separated `[instance=]url` names an http(s) URL (p2.parse_bases checks the rest)."""
    urls = _p2_urls(value)
    if not urls:
        raise ValueError("no p2 API base given")
    for url in urls:
        _http_url(url)
    return value


def _surveys(value: str) -> str:
    """Each comma-separated `NAME=LOCATION[;option]` names an http(s) URL or an absolute folder
    (services/gateway/surveys.py checks the rest)."""
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        name, sep, location = entry.split(";")[0].partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{entry[:60]!r}: expected NAME=URL[;fits][;band=BAND]")
        location = location.strip()
        if not location.startswith("/"):
            _http_url(location)
    return value


# CDS's HiPS (ids CDS/P/DSS2/red, CDS/P/2MASS/K, ...), named as SkyView and p2api users know them.
_CDS = "https://alasky.cds.unistra.fr"
DEFAULT_SURVEYS = ",".join(
    [
        f"DSS2-red={_CDS}/DSS/DSS2Merged/;fits;band=R",
        f"DSS2-blue={_CDS}/DSS/DSS2-blue-XJ-S/;fits;band=B",
        f"DSS2-colour={_CDS}/DSS/DSSColor/",
        f"2MASS-J={_CDS}/2MASS/J/;fits;band=J",
        f"2MASS-H={_CDS}/2MASS/H/;fits;band=H",
        f"2MASS-K={_CDS}/2MASS/K/;fits;band=Ks",
        f"2MASS-colour={_CDS}/2MASS/Color/",
    ]
)


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback."""
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path_prefix(value: str) -> str:
    if not value.strip().strip("/") or "{" in value or "}" in value:
        raise ValueError("expected a path such as /p2fc/")
    return value


def _service_tokens(value: SecretStr) -> SecretStr:
    if not [t for t in value.get_secret_value().split(",") if t.strip()]:
        raise ValueError("must name at least one token")
    return value


def _postgres_url(value: SecretStr) -> SecretStr:
    # The messages never quote the URL: it holds the password.
    url = value.get_secret_value()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL (or empty for the embedded server)")
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("the postgresql:// URL names no host")
    return value


def _jwt_keys(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if raw:
        try:
            keys = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError("must be a JSON object mapping kid to key (it is not JSON)") from None
        if not isinstance(keys, dict) or not all(isinstance(v, str) and v for v in keys.values()):
            raise ValueError("must be a JSON object mapping kid to key")
    return value


def _signing_key(value: SecretStr) -> SecretStr:
    if 0 < len(value.get_secret_value()) < 16:
        raise ValueError("must have at least 16 characters (or be empty with DEV_MODE)")
    return value


LogLevel = Annotated[str, AfterValidator(_log_level)]
Flag = Annotated[bool, BeforeValidator(_empty_is_false)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port (tests)
Fraction = Annotated[float, Field(gt=0, le=1)]
Text = Annotated[str, AfterValidator(_non_empty)]
GrpcTarget = Annotated[str, AfterValidator(_grpc_target)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def env(name: str, default: Any, doc: str) -> Any:
    """A settings field read from environment variable `name`, meaning `doc`."""
    return Field(default, validation_alias=name, title=doc)


class Common(BaseSettings):
    """What every service reads."""

    # Only `load` reads the environment; the constructor takes keyword values (tests).
    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        validate_default=True,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        # A secret given to the constructor must not show in its error either.
        hide_input_in_errors=True,
    )

    log_level: LogLevel = env("LOG_LEVEL", "INFO", "Python logging level")
    log_format: Literal["json", "text"] = env("LOG_FORMAT", "json", "json (one object a line) or text")
    bind_host: Text = env("BIND_HOST", "127.0.0.1", "address the server listens on")
    service_token: Annotated[SecretStr, AfterValidator(_service_tokens)] = env(
        "SERVICE_TOKEN",
        "dev-service-token",
        "credential every internal gRPC call carries; comma-separated to accept two during a rotation"
        " (the first is sent)",
    )
    shutdown_grace_s: NonNegativeFloat = env(
        "SHUTDOWN_GRACE_S", 30.0, "seconds calls in flight get to finish on SIGTERM"
    )
    store_dir: Text = env("STORE_DIR", "var/store", "local object-store folder (when S3_ENDPOINT is empty)")
    s3_endpoint: Annotated[str, AfterValidator(_s3_endpoint)] = env(
        "S3_ENDPOINT", "", "host:port of MinIO/S3; empty for the local folder"
    )
    s3_access_key: SecretStr = env("S3_ACCESS_KEY", "", "S3 access key")
    s3_secret_key: SecretStr = env("S3_SECRET_KEY", "", "S3 secret key")
    s3_bucket: Text = env("S3_BUCKET", "bgimages", "bucket holding every object")
    s3_secure: Flag = env("S3_SECURE", False, "use TLS to reach S3")
    s3_region: Text = env("S3_REGION", "us-east-1", "S3 region")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class ValidatorSettings(Common):
    port: Port = env("VALIDATOR_PORT", 50051, "gRPC port of the validator")
    max_decompressed_bytes: PositiveInt = env(
        "MAX_DECOMPRESSED_BYTES", 8 << 30, "cap on a compressed upload's decompressed size"
    )
    max_hdus: PositiveInt = env("MAX_HDUS", 1000, "most HDUs a file may have")
    max_header_cards: PositiveInt = env("MAX_HEADER_CARDS", 100_000, "most cards one FITS header may have")
    max_total_header_cards: PositiveInt = env(
        "MAX_TOTAL_HEADER_CARDS", 1_000_000, "most header cards a FITS file may have in all"
    )
    health_interval_s: PositiveFloat = env(
        "VALIDATOR_HEALTH_INTERVAL_S", 10.0, "seconds between object-store probes"
    )
    max_concurrent: PositiveInt = env(
        "VALIDATOR_MAX_CONCURRENT", 4, "validations run at once (more wait their turn)"
    )
    max_queued: NonNegativeInt = env(
        "VALIDATOR_MAX_QUEUED",
        16,
        "validations waiting for a turn at most; one more is refused at once (BUSY, gateway 503)",
    )
    retry_after_s: PositiveInt = env(
        "VALIDATOR_RETRY_AFTER_S", 10, "Retry-After (seconds) of a validation refused for a full queue"
    )

    @model_validator(mode="after")
    def _cards(self) -> ValidatorSettings:
        if self.max_header_cards > self.max_total_header_cards:
            raise ValueError("MAX_HEADER_CARDS (one header) must not exceed MAX_TOTAL_HEADER_CARDS (all)")
        return self


class ProcessorSettings(Common):
    port: Port = env("PROCESSOR_PORT", 50052, "gRPC port of the processor")
    swarp_bin: Text = env("SWARP_BIN", "SWarp", "SWarp executable")
    swarp_timeout_s: PositiveInt = env("SWARP_TIMEOUT_S", 900, "time limit of one SWarp run")
    scratch_dir: str = env("SCRATCH_DIR", "", "scratch folder for jobs (empty: system temp)")
    hips_workers: PositiveInt = env("HIPS_WORKERS", 2, "threads building HiPS tiles (one per core)")
    max_jobs: PositiveInt = env(
        "PROCESSOR_MAX_JOBS", 1, "Process jobs run at once (each uses HIPS_WORKERS cores)"
    )
    max_queued: NonNegativeInt = env(
        "PROCESSOR_MAX_QUEUED",
        2,
        "Process jobs waiting for a turn at most; one more is refused at once (BUSY, gateway 503)",
    )
    retry_after_s: PositiveInt = env(
        "PROCESSOR_RETRY_AFTER_S", 60, "Retry-After (seconds) of a job refused for a full queue"
    )
    swarp_mem_mb: PositiveInt = env(
        "SWARP_MEM_MB", 512, "RAM SWarp may use (its MEM_MAX); the rest goes to disk"
    )
    chart_timeout_s: PositiveFloat = env("CHART_TIMEOUT_S", 120.0, "time limit of one finding chart")
    chart_memory_bytes: PositiveInt = env(
        "CHART_MEMORY_BYTES", 3 << 30, "address space the finding-chart worker may use"
    )


class CatalogSettings(Common):
    port: Port = env("CATALOG_PORT", 50053, "gRPC port of the catalog")
    database_url: Annotated[SecretStr, AfterValidator(_postgres_url)] = env(
        "DATABASE_URL", "", "PostgreSQL URL; empty starts an embedded server (development)"
    )
    capacity_bytes: PositiveInt = env("STORE_CAPACITY_BYTES", 100 << 30, "storage capacity for images")
    high_water: Fraction = env("CULL_HIGH_WATER", 0.9, "fraction of capacity that starts culling")
    low_water: Fraction = env("CULL_LOW_WATER", 0.8, "fraction of capacity culling brings usage under")
    cull_interval_s: PositiveInt = env("CULL_INTERVAL_S", 300, "seconds between background cull/sweep rounds")
    sweep_min_age_s: NonNegativeInt = env(
        "SWEEP_MIN_AGE_S", 3600, "orphan objects younger than this are kept"
    )
    tombstone_days: NonNegativeInt = env("TOMBSTONE_DAYS", 90, "days a removed image's tombstone is shown")
    lease_ttl_s: PositiveInt = env(
        "UPLOAD_LEASE_TTL_S",
        120,
        "seconds an upload lease protects its objects unless its holder renews it (every TTL/4)",
    )
    pg_data_dir: Text = env(
        "PG_DATA_DIR", "var/pg", "data folder of the embedded PostgreSQL (no DATABASE_URL)"
    )
    db_pool_size: PositiveInt = env("DB_POOL_SIZE", 10, "most connections the catalog opens to PostgreSQL")
    sweep_interval_s: PositiveInt = env(
        "SWEEP_INTERVAL_S", 6 * 3600, "seconds between background orphan sweeps"
    )

    @model_validator(mode="after")
    def _water_marks(self) -> CatalogSettings:
        if self.low_water >= self.high_water:
            raise ValueError(
                f"CULL_LOW_WATER ({self.low_water}) must be below CULL_HIGH_WATER ({self.high_water})"
            )
        return self


class GatewaySettings(Common):
    port: Port = env("GATEWAY_PORT", 8080, "HTTP port of the gateway")
    validator_addr: GrpcTarget = env("VALIDATOR_ADDR", "127.0.0.1:50051", "validator gRPC address")
    processor_addr: GrpcTarget = env("PROCESSOR_ADDR", "127.0.0.1:50052", "processor gRPC address")
    catalog_addr: GrpcTarget = env("CATALOG_ADDR", "127.0.0.1:50053", "catalog gRPC address")
    max_upload_bytes: PositiveInt = env("MAX_UPLOAD_BYTES", 4 << 30, "largest upload accepted")
    resumable_ttl_s: PositiveInt = env(
        "RESUMABLE_TTL_S", 86400, "a resumable upload left idle this long expires (the sweep removes it)"
    )
    resumable_claim_s: PositiveInt = env(
        "RESUMABLE_CLAIM_S",
        60,
        "a PATCH's claim on its upload lasts this long unless renewed (a dead gateway's)",
    )
    resumable_max_per_user: NonNegativeInt = env(
        "RESUMABLE_MAX_PER_USER", 10, "resumable uploads one user may have in progress (0: no limit)"
    )
    spool_dir: str = env(
        "SPOOL_DIR", "", "where S3 uploads' tails short of a part wait on the gateway's disk (empty: temp)"
    )
    check_max_header_bytes: PositiveInt = env(
        "CHECK_MAX_HEADER_BYTES",
        16 << 20,
        "most header bytes the check before sending takes (more: the file is checked after upload)",
    )
    dev_mode: Flag = env("DEV_MODE", False, "local development: allows the built-in development keys")
    jwt_algorithm: Literal["HS256", "RS256"] = env("JWT_ALGORITHM", "HS256", "HS256 or RS256")
    jwt_keys: Annotated[SecretStr, AfterValidator(_jwt_keys)] = env(
        "JWT_KEYS", "", "JSON object kid -> key (HS256 secret or RS256 public PEM)"
    )
    jwt_issuer: Text = env("JWT_ISSUER", "https://www.eso.org/p2", "required iss")
    jwt_audience: Text = env("JWT_AUDIENCE", "bgimages", "required aud")
    hips_signing_key: Annotated[SecretStr, AfterValidator(_signing_key)] = env(
        "HIPS_SIGNING_KEY", "", "HMAC key of HiPS tile tokens"
    )
    hips_token_ttl_s: PositiveInt = env("HIPS_TOKEN_TTL_S", 3600, "lifetime of a HiPS token")
    default_survey_url: HttpUrl = env(
        "DEFAULT_SURVEY_URL", "https://alasky.cds.unistra.fr/DSS/DSSColor/", "HiPS of the default survey"
    )
    p2_api_bases: Annotated[str, AfterValidator(_p2_bases)] = env(
        "P2_API_BASES",
        "https://www.eso.org/cop/api/v1",
        "comma-separated p2 API bases the p2api face may contact, each `[instance=]url`"
        " (no name: instance `p2`); ids from a base are namespaced `<instance>:`",
    )
    p2fc_prefix: Annotated[str, AfterValidator(_path_prefix)] = env(
        "P2FC_PREFIX", "/p2fc/", "path prefix of the p2api face"
    )
    p2_timeout_s: PositiveFloat = env("P2_TIMEOUT_S", 10.0, "timeout of a request to p2")
    public_url: Annotated[str, AfterValidator(_http_url_or_empty)] = env(
        "PUBLIC_URL", "", "external base URL of the gateway (for HiPS links)"
    )
    sign_in_url: Annotated[str, AfterValidator(_http_url_or_empty)] = env(
        "SIGN_IN_URL", "", "where the page's Sign in link leads (p2's sign-on; make run: the development one)"
    )
    default_survey_name: Text = env("DEFAULT_SURVEY_NAME", "DSS2 colour", "name of the default survey")
    default_survey_dir: str = env(
        "DEFAULT_SURVEY_DIR", "", "local HiPS folder served at /surveys/default/ (tests, no internet)"
    )
    surveys: Annotated[str, AfterValidator(_surveys)] = env(
        "SURVEYS",
        DEFAULT_SURVEYS,
        "the named surveys the selector offers, comma-separated `NAME=LOCATION[;fits][;band=BAND]`:"
        " LOCATION a HiPS URL, or a local folder served at /surveys/NAME/ (tests, no internet);"
        " `fits`: it has FITS tiles",
    )
    aladin_lite_dir: Text = env(
        "ALADIN_LITE_DIR", "node_modules/aladin-lite/dist", "folder of the aladin-lite npm package's dist"
    )
    tus_js_dir: Text = env(
        "TUS_JS_DIR", "node_modules/tus-js-client/dist", "folder of the tus-js-client npm package's dist"
    )
    display_flush_s: PositiveFloat = env(
        "DISPLAY_FLUSH_S", 30.0, "seconds between batches of display records"
    )
    catalog_timeout_s: PositiveFloat = env("CATALOG_TIMEOUT_S", 30.0, "deadline of a call to the catalog")
    validate_timeout_s: PositiveFloat = env(
        "VALIDATE_TIMEOUT_S", 600.0, "deadline of a validation (compressed uploads are read whole)"
    )
    process_timeout_s: PositiveFloat = env(
        "PROCESS_TIMEOUT_S", 1800.0, "deadline of processing (SWarp, HiPS, preview) of one upload"
    )
    body_idle_timeout_s: NonNegativeFloat = env(
        "BODY_IDLE_TIMEOUT_S", 20.0, "seconds a request body may send nothing before it is cut (408)"
    )
    body_min_bytes_per_s: NonNegativeInt = env(
        "BODY_MIN_BYTES_PER_S",
        32 << 10,
        "slowest average rate of a request body, over each BODY_RATE_WINDOW_S spent waiting for it (408)",
    )
    body_rate_window_s: PositiveFloat = env(
        "BODY_RATE_WINDOW_S", 30.0, "seconds over which BODY_MIN_BYTES_PER_S is measured"
    )
    max_uploads_per_user: PositiveInt = env(
        "MAX_UPLOADS_PER_USER", 2, "uploads one user may have in progress on a gateway (more: 429)"
    )
    max_uploads: PositiveInt = env(
        "MAX_UPLOADS", 16, "uploads in progress on a gateway in all (more: 503 BUSY); each may hold ~26 MB"
    )
    upload_retry_after_s: PositiveInt = env(
        "UPLOAD_RETRY_AFTER_S", 30, "Retry-After (seconds) of an upload refused by MAX_UPLOADS(_PER_USER)"
    )
    gaia_tap_url: Annotated[str, AfterValidator(_http_url_or_empty)] = env(
        "GAIA_TAP_URL",
        "https://gea.esac.esa.int/tap-server/tap",
        "TAP service of the Gaia catalogue the selector's Gaia image is drawn from (empty: no Gaia image)",
    )
    gaia_table: Text = env("GAIA_TABLE", "gaiadr3.gaia_source", "its Gaia DR3 source table")
    gaia_timeout_s: PositiveFloat = env(
        "GAIA_TIMEOUT_S", 30.0, "deadline of the cone query that makes a Gaia image"
    )
    gaia_probe_timeout_s: PositiveFloat = env(
        "GAIA_PROBE_TIMEOUT_S", 2.0, "deadline of the probe a listing waits for when GAIA_STATUS_TTL_S is up"
    )
    gaia_status_ttl_s: PositiveFloat = env(
        "GAIA_STATUS_TTL_S", 60.0, "seconds the TAP service's last known state is trusted by listings"
    )
    gaia_mag_limit: float = env("GAIA_MAG_LIMIT", 21.0, "faintest G magnitude drawn in a Gaia image")
    gaia_max_sources: PositiveInt = env(
        "GAIA_MAX_SOURCES", 5000, "brightest sources drawn in a Gaia image (the query's TOP)"
    )
    gaia_field_radius_arcsec: PositiveFloat = env(
        "GAIA_FIELD_RADIUS_ARCSEC", 300.0, "radius a Gaia image covers when the OB's instrument is unknown"
    )
    chart_survey_optical: Text = env(
        "CHART_SURVEY_OPTICAL", "DSS2-red", "named survey (FITS tiles) of optical instruments' default chart"
    )
    chart_survey_infrared: Text = env(
        "CHART_SURVEY_INFRARED", "2MASS-K", "named survey (FITS tiles) of infrared instruments' default chart"
    )
    archive_tap_url: Annotated[str, AfterValidator(_http_url_or_empty)] = env(
        "ARCHIVE_TAP_URL",
        "https://archive.eso.org/tap_obs",
        "TAP service of the ESO Science Archive's ObsCore (empty: no archive images)",
    )
    archive_file_base: Annotated[str, AfterValidator(_http_url_or_empty)] = env(
        "ARCHIVE_FILE_BASE",
        "https://dataportal.eso.org/dataportal_new/file/",
        "where the archive serves a file: this base and the DP id",
    )
    archive_query_timeout_s: PositiveFloat = env(
        "ARCHIVE_QUERY_TIMEOUT_S", 5.0, "deadline of an ObsCore query (a listing waits at most this)"
    )
    archive_cache_s: PositiveFloat = env(
        "ARCHIVE_CACHE_S", 600.0, "seconds an ObsCore answer for a field is kept (a failure: a tenth)"
    )
    archive_max_file_bytes: PositiveInt = env(
        "ARCHIVE_MAX_FILE_BYTES", 2 << 30, "largest archive file fetched (and at most MAX_UPLOAD_BYTES)"
    )
    archive_fetch_timeout_s: PositiveFloat = env(
        "ARCHIVE_FETCH_TIMEOUT_S", 600.0, "deadline of fetching one archive file"
    )

    @model_validator(mode="after")
    def _exposure(self) -> GatewaySettings:
        """Development mode (its built-in keys, a development p2) stays on this machine, and
        a gateway that is not in it talks to p2 only over TLS to a real host."""
        if self.dev_mode and not is_loopback(self.bind_host):
            raise ValueError(
                f"DEV_MODE is on but BIND_HOST is {self.bind_host}: development mode listens on loopback only"
            )
        if not self.dev_mode:
            for url in _p2_urls(self.p2_api_bases):
                parts = urlsplit(url)
                if parts.scheme != "https" or is_loopback(parts.hostname or ""):
                    raise ValueError(
                        f"P2_API_BASES names {url}: outside DEV_MODE, p2 is reached over https, not loopback"
                    )
            for name, url in (
                ("GAIA_TAP_URL", self.gaia_tap_url),
                ("ARCHIVE_TAP_URL", self.archive_tap_url),
                ("ARCHIVE_FILE_BASE", self.archive_file_base),
            ):
                parts = urlsplit(url)
                if url and (parts.scheme != "https" or is_loopback(parts.hostname or "")):
                    raise ValueError(
                        f"{name} is {url}: outside DEV_MODE, it is reached over https, not loopback"
                    )
        return self

    @model_validator(mode="after")
    def _upload_limits(self) -> GatewaySettings:
        if self.max_uploads_per_user > self.max_uploads:
            raise ValueError(
                f"MAX_UPLOADS_PER_USER ({self.max_uploads_per_user}) must not exceed"
                f" MAX_UPLOADS ({self.max_uploads})"
            )
        return self


ALL_SERVICES: dict[str, type[Common]] = {
    "validator": ValidatorSettings,
    "processor": ProcessorSettings,
    "catalog": CatalogSettings,
    "gateway": GatewaySettings,
}


# ---- reading the environment --------------------------------------------------------------------


class _Environ(EnvSettingsSource):
    """The environment source of pydantic-settings, over a given mapping (os.environ or a test's)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)  # case-sensitive: the names as they are


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Builds settings class `cls` from the environment; SettingsError names each bad variable."""
    values = _Environ(cls, os.environ if environ is None else environ)()
    try:
        return cls(**values)
    except ValidationError as exc:
        raise SettingsError(_describe(cls, exc)) from None


def _describe(cls: type[Common], exc: ValidationError) -> str:
    """One line per error, naming the variable; the value only when it is not a secret."""
    fields = cls.model_fields
    by_env = {_name_of(f, n): f for n, f in fields.items()}
    lines = []
    for error in exc.errors(include_url=False):
        where = str(error["loc"][0]) if error["loc"] else ""
        field = by_env.get(where) or fields.get(where)
        message = str(error["msg"]).removeprefix("Value error, ")
        if field is None:
            lines.append(f"settings of {cls.__name__}: {message}")
            continue
        name = _name_of(field, where)
        shown = "" if _is_secret(field) else f" (got {error['input']!r})"
        lines.append(f"setting {name}: {message}{shown}")
    return "; ".join(lines)


# ---- what the settings are (README table, manifests' drift test) ------------------------------


@dataclasses.dataclass(frozen=True)
class Variable:
    """One environment variable a settings class reads."""

    name: str
    field: str
    default: Any
    doc: str
    secret: bool


def _name_of(field: FieldInfo, fallback: str) -> str:
    return field.validation_alias if isinstance(field.validation_alias, str) else fallback


def _is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr


def variables(cls: type[Common]) -> list[Variable]:
    """The environment variables settings class `cls` reads, in declaration order."""
    return [
        Variable(_name_of(f, n), n, f.default, f.title or "", _is_secret(f))
        for n, f in cls.model_fields.items()
    ]


def env_names(cls: type[Common]) -> set[str]:
    """The environment variables settings class `cls` reads."""
    return {v.name for v in variables(cls)}


def markdown_table() -> str:
    """The configuration table of the README, from the settings classes."""
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for service, cls in ALL_SERVICES.items():
        for v in variables(cls):
            default = "(secret)" if v.secret and v.default else repr(v.default)
            entry = rows.setdefault(v.name, (default, v.doc, []))
            entry[2].append(service)
    lines = ["| variable | default | used by | meaning |", "|---|---|---|---|"]
    for name, (default, doc, services) in rows.items():
        used = "all" if len(services) == len(ALL_SERVICES) else ", ".join(services)
        lines.append(f"| `{name}` | `{default}` | {used} | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
