"""No secret value in clear: the manifests only reference Secrets, which
deploy/k8s/secrets.sh makes with fresh random values; that script makes every Secret and
key the manifests read."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    KUBERNETES_VERSIONS,
    Variant,
    build,
    config_maps,
    containers,
    decoded,
    secret_refs,
    secrets_script,
    variants,
    workloads,
)

VARIANTS = variants()
# Variable names that carry credentials, whatever the program reading them.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|(^|_)TOKEN$|(^|_)KEYS?$|CREDENTIAL|DATABASE_URL|PRIVATE")
# Values that look like credentials: PEM blocks, URLs with a password, long random strings.
SECRET_VALUE = re.compile(
    r"-----BEGIN|://[^/\s:@]+:[^/\s@]+@"
    # 32 or more letters and digits, mixed (random keys; not paths or words).
    r"|(?=[A-Za-z0-9+_-]*\d)(?=[A-Za-z0-9+_-]*[A-Za-z])[A-Za-z0-9+_-]{32,}"
)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
def test_no_secret_objects_or_values_in_the_manifests(variant: Variant) -> None:
    objs = build(variant)
    assert not [o for o in objs if o["kind"] == "Secret"], "Secrets are made by secrets.sh, not kustomize"
    for wl in workloads(objs):
        for c in containers(wl):
            for item in c.get("env", []):
                where = f"{wl['metadata']['name']}/{c['name']} {item['name']}"
                if "value" in item:
                    assert not SECRET_NAME.search(item["name"]), f"{where}: credential set in clear"
                    assert not SECRET_VALUE.search(item["value"]), f"{where}: value looks like a credential"
            for arg in c.get("command", []) + c.get("args", []):
                assert not SECRET_VALUE.search(arg.split("\n")[0]), f"{wl['metadata']['name']}: {arg[:40]}"
    for name, data in config_maps(objs).items():
        for key, value in data.items():
            assert not SECRET_NAME.search(key), f"ConfigMap {name}: {key} is a credential"
            assert not SECRET_VALUE.search(value), f"ConfigMap {name}: {key} looks like a credential"


def test_the_credential_patterns_catch_what_they_should() -> None:
    assert SECRET_NAME.search("S3_SECRET_KEY") and SECRET_NAME.search("JWT_KEYS")
    assert SECRET_NAME.search("MINIO_ROOT_PASSWORD") and SECRET_NAME.search("HIPS_SIGNING_KEY")
    assert SECRET_NAME.search("SERVICE_TOKEN") and not SECRET_NAME.search("HIPS_TOKEN_TTL_S")
    assert not SECRET_NAME.search("MAX_HDUS") and not SECRET_NAME.search("S3_BUCKET")
    assert SECRET_VALUE.search("postgresql://bgimages:hunter2@postgres:5432/bgimages")
    assert SECRET_VALUE.search("-----BEGIN PRIVATE KEY-----")
    assert SECRET_VALUE.search("qO2vA7NqYb3C0yXkS1mTzR8hJ4wL6eP9uF5dG2aB")
    assert not SECRET_VALUE.search("dns:///processor:50052")
    assert not SECRET_VALUE.search("https://alasky.cds.unistra.fr/DSS/DSSColor/")
    assert not SECRET_VALUE.search("/app/node_modules/aladin-lite/dist")


def test_secrets_script_makes_every_secret_the_manifests_read() -> None:
    made = {s["metadata"]["name"]: s for s in secrets_script()}
    needed: set[tuple[str, str]] = set()
    for variant in VARIANTS:
        needed |= secret_refs(build(variant))
    missing = {(name, key) for name, key in needed if key not in made.get(name, {}).get("data", {})}
    assert not missing, f"secrets.sh does not make {sorted(missing)}"
    unused = {name for name in made} - {name for name, _ in needed}
    assert not unused, f"secrets.sh makes Secrets nothing reads: {unused}"


def test_secrets_script_values_are_random_and_consistent() -> None:
    first = {s["metadata"]["name"]: s for s in secrets_script()}
    second = {s["metadata"]["name"]: s for s in secrets_script()}
    for name, secret in first.items():
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(secret, version, strict=True)
        assert secret["metadata"]["namespace"] == "testns"
        for key, value in decoded(secret).items():
            if key in ("POSTGRES_USER", "tls.crt", "tls.key"):
                continue
            assert value != decoded(second[name])[key], f"{name}/{key} is not random"
    pg = decoded(first["bgimages-postgres"])
    assert (
        pg["DATABASE_URL"]
        == f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/bgimages"
    )
    assert len(pg["POSTGRES_PASSWORD"]) >= 32
    keys = json.loads(decoded(first["bgimages-jwt"])["JWT_KEYS"])
    assert isinstance(keys, dict) and keys, "JWT_KEYS is a JSON object kid -> key"
    assert all(len(k) >= 64 for k in keys.values()), "HS256 keys of at least 256 bits"
    assert len(decoded(first["bgimages-hips"])["HIPS_SIGNING_KEY"]) >= 64
    s3 = decoded(first["bgimages-s3"])
    # MinIO: access keys of 3 to 20 characters, secret keys of 8 to 40.
    assert 3 <= len(s3["S3_ACCESS_KEY"]) <= 20 and 8 <= len(s3["S3_SECRET_KEY"]) <= 40
    root = decoded(first["bgimages-minio-root"])
    assert root["MINIO_ROOT_USER"] != s3["S3_ACCESS_KEY"], "services do not use MinIO's root user"
    assert first["bgimages-tls"]["type"] == "kubernetes.io/tls"
    assert decoded(first["bgimages-tls"])["tls.crt"].startswith("-----BEGIN CERTIFICATE-----")


def test_services_never_use_the_minio_root_user() -> None:
    objs = build(Variant("overlays/prod", ()))
    for wl in workloads(objs):
        if wl["metadata"]["name"] in ("minio", "minio-setup"):
            continue
        for c in containers(wl):
            refs = {
                i["valueFrom"]["secretKeyRef"]["name"]
                for i in c.get("env", [])
                if "valueFrom" in i and "secretKeyRef" in i["valueFrom"]
            }
            assert "bgimages-minio-root" not in refs, wl["metadata"]["name"]
