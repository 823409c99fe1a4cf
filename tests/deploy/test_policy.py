"""Policy points on the built objects: probes, resources, non-root, read-only root with
emptyDir scratch, capabilities dropped, headless gRPC Services, autoscaling, Ingress TLS,
and storage sized consistently with the settings."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.shared import settings
from services.shared.grpc_edge import LIVENESS
from tests.deploy.manifests import (
    GRPC_SERVICES,
    SERVICES,
    Variant,
    build,
    config_maps,
    container_env,
    containers,
    find,
    of_kind,
    pod_spec,
    quantity,
    service_container,
    variants,
    workloads,
)

VARIANTS = variants()
PORTS = {"validator": 50051, "processor": 50052, "catalog": 50053, "gateway": 8080}


def _ids(v: Variant) -> str:
    return v.id


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_pods_run_as_non_root_with_read_only_root(variant: Variant) -> None:
    for wl in workloads(build(variant)):
        where = f"{wl['kind']}/{wl['metadata']['name']}"
        spec = pod_spec(wl)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("runAsUser", 0) != 0, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in containers(wl):
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, f"{where} {c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where} {c['name']}"
            assert sc.get("privileged", False) is False, f"{where} {c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where} {c['name']}"
            assert not sc.get("capabilities", {}).get("add"), f"{where} {c['name']}"
            assert sc.get("runAsUser", 1) != 0 and sc.get("runAsNonRoot", True) is True


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_writable_paths_are_bounded_volumes(variant: Variant) -> None:
    """Read-only root: every container writes only to volumes; /tmp is an emptyDir with a limit."""
    for wl in workloads(build(variant)):
        spec = pod_spec(wl)
        claims = {t["metadata"]["name"] for t in wl["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for name, vol in volumes.items():
            assert set(vol) - {"name"} <= {"emptyDir", "configMap", "secret"}, f"volume {name}"
            if "emptyDir" in vol:
                assert "sizeLimit" in vol["emptyDir"], f"{wl['metadata']['name']}: emptyDir {name} unbounded"
        for c in containers(wl):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for path, name in mounts.items():
                assert name in volumes or name in claims, f"{c['name']}: mount {path} of unknown {name}"
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], (
                f"{wl['metadata']['name']}/{c['name']}: /tmp must be an emptyDir"
            )


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_requests_and_limits(variant: Variant) -> None:
    for wl in workloads(build(variant)):
        for c in containers(wl):
            where = f"{wl['metadata']['name']}/{c['name']}"
            res = c.get("resources", {})
            for kind in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
                assert req is not None and lim is not None, f"{where}: {kind} request and limit"
                assert quantity(req) <= quantity(lim), f"{where}: {kind} request above limit"
            # Ephemeral storage (emptyDirs count against it) is bounded where pods write scratch.
            if "ephemeral-storage" in res.get("limits", {}):
                scratch = sum(
                    quantity(v["emptyDir"]["sizeLimit"])
                    for v in pod_spec(wl).get("volumes", [])
                    if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
                )
                assert scratch <= quantity(res["limits"]["ephemeral-storage"]), where


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_grpc_services_have_native_grpc_probes(variant: Variant) -> None:
    objs = build(variant)
    for name in GRPC_SERVICES:
        c = service_container(objs, name)
        (port,) = [p for p in c["ports"] if p["name"] == "grpc"]
        assert port["containerPort"] == PORTS[name]
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == PORTS[name], f"{name} {probe}"
        # Readiness: the overall status ("" service), which follows the dependencies
        # (GrpcServer.set_serving); liveness: the name that stays SERVING while the
        # process runs, so a database outage does not restart pods.
        assert c["readinessProbe"]["grpc"].get("service", "") == ""
        assert c["livenessProbe"]["grpc"]["service"] == LIVENESS


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_gateway_has_http_probes(variant: Variant) -> None:
    c = service_container(build(variant), "gateway")
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "http"] == [PORTS["gateway"]]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", PORTS["gateway"])


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_every_long_running_container_is_probed(variant: Variant) -> None:
    for wl in workloads(build(variant)):
        if wl["kind"] == "Job":
            continue
        for c in pod_spec(wl)["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, f"{wl['metadata']['name']}/{c['name']}"


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_services_ports_and_headless_grpc(variant: Variant) -> None:
    objs = build(variant)
    for name in SERVICES:
        svc = find(objs, "Service", name)
        dep = find(objs, "Deployment", name)
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        find(objs, "ServiceAccount", name)
        assert pod_spec(dep)["serviceAccountName"] == name
        (port,) = svc["spec"]["ports"]
        wanted = "http" if name == "gateway" else "grpc"
        assert port["name"] == wanted and port["targetPort"] == wanted
        if name in GRPC_SERVICES:
            # Headless: DNS gives every pod, the gateway's channel balances round robin.
            assert svc["spec"].get("clusterIP") == "None", name
            assert port["port"] == PORTS[name]


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_gateway_reaches_services_by_dns_round_robin(variant: Variant) -> None:
    objs = build(variant)
    env = container_env(objs, service_container(objs, "gateway")).literal
    for name in GRPC_SERVICES:
        addr = env[f"{name.upper()}_ADDR"]
        m = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", addr)
        assert m, f"{name}: {addr} is not a dns:/// target (needed for client-side round robin)"
        svc = find(objs, "Service", m.group(1))
        assert svc["spec"].get("clusterIP") == "None"
        assert int(m.group(2)) in [p["port"] for p in svc["spec"]["ports"]]


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_autoscaling_and_disruption_budgets(variant: Variant) -> None:
    objs = build(variant)
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objs, "HorizontalPodAutoscaler")}
    assert scaled == {"processor", "gateway"}
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        dep = find(objs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        # A replicas field would fight the autoscaler on every apply.
        assert "replicas" not in dep["spec"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        c = pod_spec(dep)["containers"][0]
        assert "cpu" in c["resources"]["requests"], "CPU utilisation needs a CPU request"
    budgets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in of_kind(objs, "PodDisruptionBudget")
    }
    assert set(SERVICES) <= budgets


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_stateful_parts_keep_data_on_claims(variant: Variant) -> None:
    objs = build(variant)
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        sts = find(objs, "StatefulSet", name)
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        (c,) = pod_spec(sts)["containers"]
        assert {"name": claim["metadata"]["name"], "mountPath": path} in c["volumeMounts"]


def _nginx_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert m, value
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_ingress_is_tls_to_the_gateway_and_admits_the_largest_upload(variant: Variant) -> None:
    objs = build(variant)
    (ing,) = of_kind(objs, "Ingress")
    hosts = {r["host"] for r in ing["spec"]["rules"]}
    (tls,) = ing["spec"]["tls"]
    assert tls["secretName"] and set(tls["hosts"]) == hosts
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": "gateway", "port": {"name": "http"}}
    env = container_env(objs, service_container(objs, "gateway")).literal
    body = _nginx_size(ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body >= int(env["MAX_UPLOAD_BYTES"])
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    # HiPS links the gateway hands out point at the Ingress host.
    assert env["PUBLIC_URL"] in {f"https://{h}" for h in hosts}


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_storage_is_sized_from_the_settings(variant: Variant) -> None:
    objs = build(variant)
    catalog = container_env(objs, service_container(objs, "catalog")).literal
    minio = find(objs, "StatefulSet", "minio")
    volume = quantity(minio["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"])
    capacity = int(catalog["STORE_CAPACITY_BYTES"])
    # Culling must start before MinIO's volume is full.
    assert capacity * float(catalog["CULL_HIGH_WATER"]) < volume
    assert capacity <= volume
    assert 0 < float(catalog["CULL_LOW_WATER"]) < float(catalog["CULL_HIGH_WATER"]) <= 1

    gateway = container_env(objs, service_container(objs, "gateway")).literal
    processor_c = service_container(objs, "processor")
    processor = container_env(objs, processor_c).literal
    mounts = {m["mountPath"]: m["name"] for m in processor_c["volumeMounts"]}
    scratch_dir = processor["SCRATCH_DIR"]
    assert scratch_dir in mounts, "SCRATCH_DIR must be a mounted volume"
    vols = {v["name"]: v for v in pod_spec(find(objs, "Deployment", "processor"))["volumes"]}
    scratch = vols[mounts[scratch_dir]]["emptyDir"]
    # Source, SWarp mosaic, its weight map and the tiles before upload: 4 x the largest upload.
    assert quantity(scratch["sizeLimit"]) >= 4 * int(gateway["MAX_UPLOAD_BYTES"])
    # A Process call in flight can finish when a pod is scaled down.
    assert pod_spec(find(objs, "Deployment", "processor"))["terminationGracePeriodSeconds"] >= int(
        processor["SWARP_TIMEOUT_S"]
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_config_maps_are_content_hashed(variant: Variant) -> None:
    """A settings change renames the ConfigMap, so the pods that read it roll."""
    for name in config_maps(build(variant)):
        assert re.fullmatch(r"[a-z-]+-config-[a-z0-9]{10}", name), name


def test_production_runs_several_pods_of_each_service() -> None:
    objs = build(Variant("overlays/prod", ()))
    for name in SERVICES:
        dep = find(objs, "Deployment", name)
        hpa = [
            h for h in of_kind(objs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        count = hpa[0]["spec"]["minReplicas"] if hpa else dep["spec"]["replicas"]
        assert count >= 2, name
        assert pod_spec(dep).get("topologySpreadConstraints"), name
        for c in containers(dep):
            assert not c["image"].startswith("bgimages/"), "production pulls from a registry"


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_images_are_tagged(variant: Variant) -> None:
    for wl in workloads(build(variant)):
        for c in containers(wl):
            image: str = c["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, image


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_catalog_pools_fit_postgres_connections(variant: Variant) -> None:
    objs = build(variant)
    catalog = container_env(objs, service_container(objs, "catalog")).literal
    replicas = find(objs, "Deployment", "catalog")["spec"]["replicas"]
    # PostgreSQL's default max_connections (100) less superuser_reserved_connections (3),
    # with room for a rolling update (one extra pod) and an operator's psql.
    assert (replicas + 1) * int(catalog["DB_POOL_SIZE"]) + 5 <= 97


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_processor_limits_fit_its_jobs(variant: Variant) -> None:
    objs = build(variant)
    c = service_container(objs, "processor")
    env = container_env(objs, c)
    s: Any = settings.load(settings.ProcessorSettings, env.literal)
    jobs = getattr(s, "max_jobs", 1)
    limits = c["resources"]["limits"]
    # Each job's HiPS workers get a core each; SWarp keeps MEM_MAX in RAM, and a job's Python
    # side measured ~0.4 GiB on a 5900x5900 mosaic on top of ~0.14 GiB of imports (docs/runbook.md).
    assert quantity(limits["cpu"]) >= jobs * s.hips_workers
    assert quantity(limits["memory"]) >= jobs * (getattr(s, "swarp_mem_mb", 256) * (1 << 20) + (1 << 30))
