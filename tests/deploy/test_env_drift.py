"""The containers start the entry points the tests use and set exactly the environment
variables each service reads (services/shared/settings.py, read at test time), so the
manifests and the settings cannot drift apart."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import pytest

from services.shared import settings
from tests.deploy.manifests import (
    SERVICES,
    Variant,
    build,
    container_env,
    decoded,
    find,
    pod_spec,
    secrets_script,
    service_container,
    variants,
)

VARIANTS = variants()
CASES = [(v, s) for v in VARIANTS for s in SERVICES]
# Settings whose default only suits a laptop (empty, or loopback) must be set in the
# cluster, unless listed here with the reason the default is right there too.
OPTIONAL_IN_CLUSTER: dict[str, str] = {
    "STORE_DIR": "unused: S3_ENDPOINT is set, the local folder is never opened",
    "DEFAULT_SURVEY_DIR": "empty: the page shows DEFAULT_SURVEY_URL (the public DSS2 HiPS)",
}


@functools.cache
def _made_secrets() -> dict[str, dict[str, str]]:
    """Secret -> key -> value, as deploy/k8s/secrets.sh makes them for a cluster."""
    return {s["metadata"]["name"]: decoded(s) for s in secrets_script()}


def _case_id(case: tuple[Variant, str]) -> str:
    return f"{case[0].id}-{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_every_variable_set_is_read_by_the_service(case: tuple[Variant, str]) -> None:
    variant, service = case
    objs = build(variant)
    env = container_env(objs, service_container(objs, service))
    unread = env.names - settings.env_names(SERVICES[service])
    assert not unread, f"{service} sets variables its settings do not read: {sorted(unread)}"
    assert not env.other, f"{service}: variables from neither ConfigMap nor Secret: {env.other}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_secret_settings_come_from_secrets(case: tuple[Variant, str]) -> None:
    variant, service = case
    objs = build(variant)
    env = container_env(objs, service_container(objs, service))
    for v in settings.variables(SERVICES[service]):
        name = v.name
        if v.secret:
            assert name in env.from_secret, f"{service}: secret setting {name} must come from a Secret"
        else:
            assert name not in env.from_secret, f"{service}: {name} is not a secret; put it in the ConfigMap"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_settings_with_laptop_defaults_are_set(case: tuple[Variant, str]) -> None:
    variant, service = case
    objs = build(variant)
    env = container_env(objs, service_container(objs, service))
    for v in settings.variables(SERVICES[service]):
        name, default = v.name, v.default
        laptop = default == "" or (
            isinstance(default, str) and ("127.0.0.1" in default or "localhost" in default)
        )
        if laptop and name not in OPTIONAL_IN_CLUSTER:
            assert name in env.names, f"{service}: {name} defaults to {default!r}; the manifests must set it"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_the_service_loads_its_settings_from_the_manifests(case: tuple[Variant, str]) -> None:
    variant, service = case
    objs = build(variant)
    c = service_container(objs, service)
    env = container_env(objs, c)
    made = _made_secrets()
    environ = dict(env.literal) | {name: made[secret][key] for name, (secret, key) in env.from_secret.items()}
    loaded: Any = settings.load(SERVICES[service], environ)  # raises on a malformed value
    assert loaded.bind_host not in ("127.0.0.1", "localhost", "::1"), "pods must listen beyond loopback"
    assert loaded.s3_endpoint, "the cluster's store is MinIO"
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] in ("grpc", "http")]
    assert loaded.port == port, f"{service} listens on {loaded.port}, the pod exposes {port}"
    if service == "gateway":
        assert loaded.dev_mode is False, "development keys are never allowed in a cluster"
        assert loaded.jwt_algorithm in ("HS256", "RS256")
        minio = find(objs, "Service", loaded.s3_endpoint.split(":")[0])
        assert int(loaded.s3_endpoint.split(":")[1]) in [p["port"] for p in minio["spec"]["ports"]]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_containers_start_the_entry_points(case: tuple[Variant, str]) -> None:
    variant, service = case
    c = service_container(build(variant), service)
    assert c["command"] == ["python", "-m", f"services.{service}"]
    assert not c.get("args")


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
def test_catalog_migrates_before_it_serves(variant: Variant) -> None:
    objs = build(variant)
    dep = find(objs, "Deployment", "catalog")
    (init,) = pod_spec(dep)["initContainers"]
    (main,) = pod_spec(dep)["containers"]
    assert init["command"] == ["python", "-m", "services.catalog", "migrate"]
    assert init["image"] == main["image"]
    init_env, main_env = container_env(objs, init), container_env(objs, main)
    assert init_env.names <= settings.env_names(settings.CatalogSettings)
    assert init_env.from_secret["DATABASE_URL"] == main_env.from_secret["DATABASE_URL"]
    assert init_env.literal == main_env.literal


@pytest.mark.parametrize("service", SERVICES)
def test_entry_point_modules_exist(service: str) -> None:
    assert importlib.util.find_spec(f"services.{service}.__main__") is not None, (
        f"python -m services.{service} (the container's command) has no __main__"
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
def test_calls_in_flight_finish_before_the_pod_is_killed(variant: Variant) -> None:
    """SIGTERM lets calls finish for SHUTDOWN_GRACE_S: that must fit in the pod's grace."""
    objs = build(variant)

    def loaded(name: str) -> Any:
        env = container_env(objs, service_container(objs, name))
        return settings.load(settings.ALL_SERVICES[name], env.literal)

    for name in SERVICES:
        grace = pod_spec(find(objs, "Deployment", name))["terminationGracePeriodSeconds"]
        assert loaded(name).shutdown_grace_s < grace, name
    processor = loaded("processor")
    assert processor.shutdown_grace_s > processor.swarp_timeout_s, "a SWarp run in flight is cut short"
