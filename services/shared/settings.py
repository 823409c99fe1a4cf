"""Settings read from environment variables, one frozen dataclass per service.

Every field names its variable in its metadata, so the deployment manifests
and the README can be checked against what the code reads (`env_names`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


def env(name: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    """A settings field read from environment variable `name`."""
    return dataclasses.field(default=default, metadata={"env": name, "doc": doc, "secret": secret})


def _convert(raw: str, kind: Any, name: str) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Builds settings class `cls` from the environment."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata["env"]
        if name in environ:
            kind = hints[f.name]
            try:
                values[f.name] = _convert(environ[name], kind, name)
            except ValueError as exc:
                raise ValueError(f"setting {name}: {exc}") from None
    return cls(**values)


def env_names(cls: type) -> set[str]:
    """The environment variables settings class `cls` reads."""
    return {f.metadata["env"] for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class Common:
    """What every service reads."""

    log_level: str = env("LOG_LEVEL", "INFO", "Python logging level")
    log_format: str = env("LOG_FORMAT", "json", "json (one object a line) or text")
    bind_host: str = env("BIND_HOST", "127.0.0.1", "address the server listens on")
    service_token: str = env(
        "SERVICE_TOKEN",
        "dev-service-token",
        "credential every internal gRPC call carries; comma-separated to accept two during a rotation"
        " (the first is sent)",
        secret=True,
    )
    shutdown_grace_s: float = env(
        "SHUTDOWN_GRACE_S", 30.0, "seconds calls in flight get to finish on SIGTERM"
    )
    store_dir: str = env("STORE_DIR", "var/store", "local object-store folder (when S3_ENDPOINT is empty)")
    s3_endpoint: str = env("S3_ENDPOINT", "", "host:port of MinIO/S3; empty for the local folder")
    s3_access_key: str = env("S3_ACCESS_KEY", "", "S3 access key", secret=True)
    s3_secret_key: str = env("S3_SECRET_KEY", "", "S3 secret key", secret=True)
    s3_bucket: str = env("S3_BUCKET", "bgimages", "bucket holding every object")
    s3_secure: bool = env("S3_SECURE", False, "use TLS to reach S3")
    s3_region: str = env("S3_REGION", "us-east-1", "S3 region")


@dataclasses.dataclass(frozen=True)
class ValidatorSettings(Common):
    port: int = env("VALIDATOR_PORT", 50051, "gRPC port of the validator")
    max_decompressed_bytes: int = env(
        "MAX_DECOMPRESSED_BYTES", 8 << 30, "cap on a compressed upload's decompressed size"
    )
    max_hdus: int = env("MAX_HDUS", 1000, "most HDUs a file may have")
    max_header_cards: int = env("MAX_HEADER_CARDS", 100_000, "most cards one FITS header may have")
    max_total_header_cards: int = env(
        "MAX_TOTAL_HEADER_CARDS", 1_000_000, "most header cards a FITS file may have in all"
    )
    health_interval_s: float = env("VALIDATOR_HEALTH_INTERVAL_S", 10.0, "seconds between object-store probes")
    max_concurrent: int = env("VALIDATOR_MAX_CONCURRENT", 4, "validations run at once (more wait their turn)")
    max_queued: int = env(
        "VALIDATOR_MAX_QUEUED",
        16,
        "validations waiting for a turn at most; one more is refused at once (BUSY, gateway 503)",
    )
    retry_after_s: int = env(
        "VALIDATOR_RETRY_AFTER_S", 10, "Retry-After (seconds) of a validation refused for a full queue"
    )


@dataclasses.dataclass(frozen=True)
class ProcessorSettings(Common):
    port: int = env("PROCESSOR_PORT", 50052, "gRPC port of the processor")
    swarp_bin: str = env("SWARP_BIN", "SWarp", "SWarp executable")
    swarp_timeout_s: int = env("SWARP_TIMEOUT_S", 900, "time limit of one SWarp run")
    scratch_dir: str = env("SCRATCH_DIR", "", "scratch folder for jobs (empty: system temp)")
    hips_workers: int = env("HIPS_WORKERS", 2, "threads building HiPS tiles (one per core)")
    max_jobs: int = env("PROCESSOR_MAX_JOBS", 1, "Process jobs run at once (each uses HIPS_WORKERS cores)")
    max_queued: int = env(
        "PROCESSOR_MAX_QUEUED",
        2,
        "Process jobs waiting for a turn at most; one more is refused at once (BUSY, gateway 503)",
    )
    retry_after_s: int = env(
        "PROCESSOR_RETRY_AFTER_S", 60, "Retry-After (seconds) of a job refused for a full queue"
    )
    swarp_mem_mb: int = env("SWARP_MEM_MB", 512, "RAM SWarp may use (its MEM_MAX); the rest goes to disk")


@dataclasses.dataclass(frozen=True)
class CatalogSettings(Common):
    port: int = env("CATALOG_PORT", 50053, "gRPC port of the catalog")
    database_url: str = env(
        "DATABASE_URL", "", "PostgreSQL URL; empty starts an embedded server (development)", secret=True
    )
    capacity_bytes: int = env("STORE_CAPACITY_BYTES", 100 << 30, "storage capacity for images")
    high_water: float = env("CULL_HIGH_WATER", 0.9, "fraction of capacity that starts culling")
    low_water: float = env("CULL_LOW_WATER", 0.8, "fraction of capacity culling brings usage under")
    cull_interval_s: int = env("CULL_INTERVAL_S", 300, "seconds between background cull/sweep rounds")
    sweep_min_age_s: int = env("SWEEP_MIN_AGE_S", 3600, "orphan objects younger than this are kept")
    tombstone_days: int = env("TOMBSTONE_DAYS", 90, "days a removed image's tombstone is shown")
    lease_ttl_s: int = env(
        "UPLOAD_LEASE_TTL_S",
        120,
        "seconds an upload lease protects its objects unless its holder renews it (every TTL/4)",
    )
    pg_data_dir: str = env(
        "PG_DATA_DIR", "var/pg", "data folder of the embedded PostgreSQL (no DATABASE_URL)"
    )
    db_pool_size: int = env("DB_POOL_SIZE", 10, "most connections the catalog opens to PostgreSQL")
    sweep_interval_s: int = env("SWEEP_INTERVAL_S", 6 * 3600, "seconds between background orphan sweeps")


@dataclasses.dataclass(frozen=True)
class GatewaySettings(Common):
    port: int = env("GATEWAY_PORT", 8080, "HTTP port of the gateway")
    validator_addr: str = env("VALIDATOR_ADDR", "127.0.0.1:50051", "validator gRPC address")
    processor_addr: str = env("PROCESSOR_ADDR", "127.0.0.1:50052", "processor gRPC address")
    catalog_addr: str = env("CATALOG_ADDR", "127.0.0.1:50053", "catalog gRPC address")
    max_upload_bytes: int = env("MAX_UPLOAD_BYTES", 4 << 30, "largest upload accepted")
    dev_mode: bool = env("DEV_MODE", False, "local development: allows the built-in development keys")
    jwt_algorithm: str = env("JWT_ALGORITHM", "HS256", "HS256 or RS256")
    jwt_keys: str = env(
        "JWT_KEYS", "", "JSON object kid -> key (HS256 secret or RS256 public PEM)", secret=True
    )
    jwt_issuer: str = env("JWT_ISSUER", "https://www.eso.org/p2", "required iss")
    jwt_audience: str = env("JWT_AUDIENCE", "bgimages", "required aud")
    hips_signing_key: str = env("HIPS_SIGNING_KEY", "", "HMAC key of HiPS tile tokens", secret=True)
    hips_token_ttl_s: int = env("HIPS_TOKEN_TTL_S", 3600, "lifetime of a HiPS token")
    default_survey_url: str = env(
        "DEFAULT_SURVEY_URL", "https://alasky.cds.unistra.fr/DSS/DSSColor/", "HiPS of the default survey"
    )
    p2_api_bases: str = env(
        "P2_API_BASES",
        "https://www.eso.org/cop/api/v1",
        "comma-separated p2 API bases the p2api face may contact, each `[instance=]url`"
        " (no name: instance `p2`); ids from a base are namespaced `<instance>:`",
    )
    p2fc_prefix: str = env("P2FC_PREFIX", "/p2fc/", "path prefix of the p2api face")
    p2_timeout_s: float = env("P2_TIMEOUT_S", 10.0, "timeout of a request to p2")
    public_url: str = env("PUBLIC_URL", "", "external base URL of the gateway (for HiPS links)")
    default_survey_name: str = env("DEFAULT_SURVEY_NAME", "DSS2 colour", "name of the default survey")
    default_survey_dir: str = env(
        "DEFAULT_SURVEY_DIR", "", "local HiPS folder served at /surveys/default/ (tests, no internet)"
    )
    aladin_lite_dir: str = env(
        "ALADIN_LITE_DIR", "node_modules/aladin-lite/dist", "folder of the aladin-lite npm package's dist"
    )
    display_flush_s: float = env("DISPLAY_FLUSH_S", 30.0, "seconds between batches of display records")
    catalog_timeout_s: float = env("CATALOG_TIMEOUT_S", 30.0, "deadline of a call to the catalog")
    validate_timeout_s: float = env(
        "VALIDATE_TIMEOUT_S", 600.0, "deadline of a validation (compressed uploads are read whole)"
    )
    process_timeout_s: float = env(
        "PROCESS_TIMEOUT_S", 1800.0, "deadline of processing (SWarp, HiPS, preview) of one upload"
    )
    body_idle_timeout_s: float = env(
        "BODY_IDLE_TIMEOUT_S", 20.0, "seconds a request body may send nothing before it is cut (408)"
    )
    body_min_bytes_per_s: int = env(
        "BODY_MIN_BYTES_PER_S",
        32 << 10,
        "slowest average rate of a request body, over each BODY_RATE_WINDOW_S spent waiting for it (408)",
    )
    body_rate_window_s: float = env(
        "BODY_RATE_WINDOW_S", 30.0, "seconds over which BODY_MIN_BYTES_PER_S is measured"
    )
    max_uploads_per_user: int = env(
        "MAX_UPLOADS_PER_USER", 2, "uploads one user may have in progress on a gateway (more: 429)"
    )
    max_uploads: int = env(
        "MAX_UPLOADS", 16, "uploads in progress on a gateway in all (more: 503 BUSY); each may hold ~26 MB"
    )
    upload_retry_after_s: int = env(
        "UPLOAD_RETRY_AFTER_S", 30, "Retry-After (seconds) of an upload refused by MAX_UPLOADS(_PER_USER)"
    )


ALL_SERVICES: dict[str, type] = {
    "validator": ValidatorSettings,
    "processor": ProcessorSettings,
    "catalog": CatalogSettings,
    "gateway": GatewaySettings,
}


def markdown_table() -> str:
    """The configuration table of the README, from the settings classes."""
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for service, cls in ALL_SERVICES.items():
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            default = "(secret)" if f.metadata["secret"] and f.default else repr(f.default)
            entry = rows.setdefault(name, (default, f.metadata["doc"], []))
            entry[2].append(service)
    lines = ["| variable | default | used by | meaning |", "|---|---|---|---|"]
    for name, (default, doc, services) in rows.items():
        used = "all" if len(services) == len(ALL_SERVICES) else ", ".join(services)
        lines.append(f"| `{name}` | `{default}` | {used} | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
