"""Builds deploy/k8s with `kubectl kustomize` and reads the built objects.

A variant is a kustomization root (the base or an overlay) plus a set of components it
does not already list; every such combination is built, as microservices-demo's CI does.
"""

from __future__ import annotations

import base64
import functools
import itertools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.shared import settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"

# The Kubernetes release the manifests are validated against. kubernetes-validate 1.37
# ships schemas for 1.25 .. 1.37; the kubectl here (whose kustomize builds them) is 1.32, and
# native gRPC probes are GA since 1.27: 1.28 is the oldest cluster we claim to support.
KUBERNETES_VERSIONS = ("1.28.0", "1.32.0")

SERVICES: dict[str, type[settings.Common]] = {
    "validator": settings.ValidatorSettings,
    "processor": settings.ProcessorSettings,
    "catalog": settings.CatalogSettings,
    "gateway": settings.GatewaySettings,
}
GRPC_SERVICES = ("validator", "processor", "catalog")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    root: str  # "base" or "overlays/<name>", relative to deploy/k8s
    components: tuple[str, ...]  # "components/<name>" added on top

    @property
    def id(self) -> str:
        return "+".join([self.root.split("/")[-1], *(c.split("/")[-1] for c in self.components)])


def _listed_components(root: Path) -> set[str]:
    doc = yaml.safe_load((root / "kustomization.yaml").read_text())
    return {(root / c).resolve().name for c in doc.get("components", [])}


def variants() -> list[Variant]:
    roots = ["base"] + sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir() if p.is_dir())
    components = sorted(f"components/{p.name}" for p in (K8S / "components").iterdir() if p.is_dir())
    out = []
    for root in roots:
        listed = _listed_components(K8S / root)
        free = [c for c in components if c.split("/")[-1] not in listed]
        for n in range(len(free) + 1):
            for combo in itertools.combinations(free, n):
                out.append(Variant(root, combo))
    return out


def kustomize(path: Path) -> str:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


@functools.cache
def build(variant: Variant) -> list[Obj]:
    """The objects `kubectl kustomize` makes for the variant."""
    if not variant.components:
        text = kustomize(K8S / variant.root)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            # kustomize takes only relative paths to other kustomizations.
            rel = lambda p: os.path.relpath(K8S / p, tmp)  # noqa: E731
            doc = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [rel(variant.root)],
                "components": [rel(c) for c in variant.components],
            }
            Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(doc))
            text = kustomize(Path(tmp))
    return [d for d in yaml.safe_load_all(text) if d]


def has_component(variant: Variant, name: str) -> bool:
    return name in {c.split("/")[-1] for c in variant.components} or name in _listed_components(
        K8S / variant.root
    )


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def containers(workload: Obj, init: bool = True) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("containers", [])
    if init:
        yield from spec.get("initContainers", [])


def service_container(objs: list[Obj], service: str) -> Obj:
    dep = find(objs, "Deployment", service)
    (container,) = [c for c in pod_spec(dep)["containers"] if c["name"] == service]
    return container


def config_maps(objs: list[Obj]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objs, "ConfigMap")}


@dataclass
class ContainerEnv:
    """What a container's environment holds, and where each variable comes from."""

    literal: dict[str, str]  # env[].value and ConfigMap entries
    from_secret: dict[str, tuple[str, str]]  # name -> (Secret, key)
    other: set[str]  # valueFrom anything else (fieldRef, ...)

    @property
    def names(self) -> set[str]:
        return set(self.literal) | set(self.from_secret) | self.other


def container_env(objs: list[Obj], container: Obj) -> ContainerEnv:
    cms = config_maps(objs)
    env = ContainerEnv({}, {}, set())
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, (
            f"{container['name']}: envFrom secretRef hides which variables a Secret sets; "
            "use env[].valueFrom.secretKeyRef"
        )
        ref = source["configMapRef"]["name"]
        assert ref in cms, f"{container['name']}: ConfigMap {ref} is not in the build"
        assert "prefix" not in source
        env.literal.update(cms[ref])
    for item in container.get("env", []):
        name = item["name"]
        env.literal.pop(name, None)
        if "value" in item:
            env.literal[name] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env.from_secret[name] = (ref["name"], ref["key"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            assert ref["name"] in cms, f"ConfigMap {ref['name']} is not in the build"
            env.literal[name] = cms[ref["name"]][ref["key"]]
        else:
            env.other.add(name)
    return env


def secret_refs(objs: list[Obj]) -> set[tuple[str, str]]:
    """Every (Secret, key) a pod reads, by env or by volume."""
    refs: set[tuple[str, str]] = set()
    for wl in workloads(objs):
        for c in containers(wl):
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    for ing in of_kind(objs, "Ingress"):
        for tls in ing["spec"].get("tls", []):
            refs.add((tls["secretName"], "tls.crt"))
            refs.add((tls["secretName"], "tls.key"))
    return refs


_UNITS = {
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 1e-3, "": 1,
}  # fmt: skip


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("250m", "1Gi", "2") as a number (cores or bytes)."""
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m and m.group(2) in _UNITS, f"not a quantity: {value!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def secrets_script() -> list[Obj]:
    """The Secrets deploy/k8s/secrets.sh makes (fresh random values each run)."""
    proc = subprocess.run(
        [str(K8S / "secrets.sh"), "testns", "--print"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def decoded(secret: Obj) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
