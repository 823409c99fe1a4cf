"""The network-policies component allows exactly the paths the suite uses: deny all, then
ingress controller -> gateway; gateway -> the three services, MinIO and p2's API (HTTPS
outside the cluster); validator, processor, catalog -> MinIO; catalog -> PostgreSQL;
minio-setup -> MinIO; Prometheus -> gateway and MinIO; every pod -> cluster DNS.

The check evaluates the built NetworkPolicy objects the way the API defines them (a pod
selected by a policy of a type admits only what some rule of those policies allows, on
both ends) over every pair of endpoints and every port the pods expose."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from tests.deploy.manifests import (
    Obj,
    Variant,
    build,
    containers,
    has_component,
    of_kind,
    pod_spec,
    variants,
    workloads,
)


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ip: str

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


EXTERNAL = Endpoint("p2-api", "", (), "134.171.0.10")  # a public address, as www.eso.org's
OUTSIDE = [
    Endpoint("ingress-nginx", "ingress-nginx", (("app.kubernetes.io/name", "ingress-nginx"),), "10.0.9.1"),
    Endpoint("prometheus", "monitoring", (("app.kubernetes.io/name", "prometheus"),), "10.0.9.2"),
    Endpoint("kube-dns", "kube-system", (("k8s-app", "kube-dns"),), "10.0.9.3"),
    Endpoint("intruder", "other", (("app.kubernetes.io/name", "gateway"),), "10.0.9.4"),
]
EXPECTED = {
    ("ingress-nginx", "gateway", 8080),
    ("prometheus", "gateway", 8080),
    ("prometheus", "minio", 9000),
    ("gateway", "validator", 50051),
    ("gateway", "processor", 50052),
    ("gateway", "catalog", 50053),
    ("gateway", "minio", 9000),
    ("gateway", "p2-api", 443),
    # The processor reads the chart surveys' HiPS tiles (CDS) for finding charts.
    ("processor", "p2-api", 443),
    ("validator", "minio", 9000),
    ("processor", "minio", 9000),
    ("catalog", "minio", 9000),
    ("catalog", "postgres", 5432),
    ("minio-setup", "minio", 9000),
}
DNS_PORTS = {53}


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the evaluator reads matchLabels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_matches(peer: dict, policy_ns: str, ep: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not ep.ip or ep.namespace:  # pod addresses: ipBlock is meant for outside the cluster
            return False
        addr = ipaddress.ip_address(ep.ip)
        block = peer["ipBlock"]
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ep.namespace}):
            return False
    elif ep.namespace != policy_ns:
        return False
    return "podSelector" not in peer or _matches(peer["podSelector"], ep.label_map)


def _port_ok(rule: dict, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("port") == port and p.get("protocol", "TCP") in ("TCP", "UDP") for p in ports
    )


def _admits(policies: list[Obj], kind: str, subject: Endpoint, other: Endpoint, port: int) -> bool:
    """Whether `subject`'s policies of `kind` (Ingress/Egress) admit traffic with `other`."""
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", "default") == subject.namespace
        and kind in p["spec"].get("policyTypes", [])
        and _matches(p["spec"]["podSelector"], subject.label_map)
    ]
    if not selecting:
        return True
    key, peers = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in selecting:
        ns = policy["metadata"].get("namespace", "default")
        for rule in policy["spec"].get(key, []) or []:
            if _port_ok(rule, port) and (
                not rule.get(peers) or any(_peer_matches(peer, ns, other) for peer in rule[peers])
            ):
                return True
    return False


def _pods(objs: list[Obj]) -> tuple[list[Endpoint], dict[str, set[int]]]:
    pods, ports = [], {}
    for i, wl in enumerate(workloads(objs)):
        labels = wl["spec"]["template"]["metadata"]["labels"]
        name = labels["app.kubernetes.io/name"]
        ns = wl["metadata"].get("namespace", "default")
        pods.append(Endpoint(name, ns, tuple(sorted(labels.items())), f"10.1.0.{i + 1}"))
        ports[name] = {p["containerPort"] for c in containers(wl) for p in c.get("ports", [])}
    return pods, ports


WITH_POLICIES = [v for v in variants() if has_component(v, "network-policies")]


def test_production_always_has_the_policies() -> None:
    assert {v.root for v in WITH_POLICIES} >= {"overlays/prod"}
    assert all(has_component(v, "network-policies") for v in variants() if v.root == "overlays/prod")


@pytest.mark.parametrize("variant", WITH_POLICIES, ids=lambda v: v.id)
def test_exactly_the_needed_paths_are_open(variant: Variant) -> None:
    objs = build(variant)
    policies = of_kind(objs, "NetworkPolicy")
    pods, ports = _pods(objs)
    ports["p2-api"] = {443}
    sources = pods + OUTSIDE
    destinations = pods + [EXTERNAL]
    wrong = []
    for src in sources:
        for dst in destinations:
            if src.name == dst.name or (src in OUTSIDE and dst is EXTERNAL):
                continue  # traffic that never touches this namespace
            for port in sorted(ports.get(dst.name, set())):
                allowed = _admits(policies, "Egress", src, dst, port) and _admits(
                    policies, "Ingress", dst, src, port
                )
                if allowed != ((src.name, dst.name, port) in EXPECTED and src.namespace != "other"):
                    wrong.append(f"{src.name} -> {dst.name}:{port} {'open' if allowed else 'closed'}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("variant", WITH_POLICIES, ids=lambda v: v.id)
def test_every_pod_reaches_dns_and_nothing_else_outside(variant: Variant) -> None:
    objs = build(variant)
    policies = of_kind(objs, "NetworkPolicy")
    pods, _ = _pods(objs)
    dns = OUTSIDE[2]
    for pod in pods:
        for port in DNS_PORTS:
            assert _admits(policies, "Egress", pod, dns, port), f"{pod.name} cannot resolve names"
        assert not _admits(policies, "Egress", pod, dns, 443)
        if pod.name not in ("gateway", "processor"):  # p2, the archives; the chart surveys
            assert not _admits(policies, "Egress", pod, EXTERNAL, 443), f"{pod.name} reaches the internet"


@pytest.mark.parametrize("variant", WITH_POLICIES, ids=lambda v: v.id)
def test_every_pod_is_denied_by_default(variant: Variant) -> None:
    objs = build(variant)
    deny = [
        p
        for p in of_kind(objs, "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    named = {
        p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for p in of_kind(objs, "NetworkPolicy")
    }
    for wl in workloads(objs):
        assert wl["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] in named, (
            f"{wl['metadata']['name']} has no policy of its own"
        )
        assert pod_spec(wl)
