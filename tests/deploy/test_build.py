"""Every overlay and component combination builds, and every object in it is a valid
Kubernetes object (schemas shipped by kubernetes-validate, checked offline, strictly:
an unknown field is an error)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.deploy.manifests import KUBERNETES_VERSIONS, Variant, build, variants


def test_every_overlay_and_component_is_built() -> None:
    ids = {v.id for v in variants()}
    assert {"base", "base+network-policies", "dev", "prod"} <= ids


@pytest.mark.parametrize("variant", variants(), ids=lambda v: v.id)
def test_builds(variant: Variant) -> None:
    objs = build(variant)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ServiceAccount", "StatefulSet", "ConfigMap", "Ingress"} <= kinds
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "an object is built twice"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", variants(), ids=lambda v: v.id)
def test_objects_validate_against_kubernetes_schemas(variant: Variant, version: str) -> None:
    failures = []
    for obj in build(variant):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(exc.message)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "variant", [v for v in variants() if v.root.startswith("overlays/")], ids=lambda v: v.id
)
def test_overlays_put_everything_in_their_namespace(variant: Variant) -> None:
    objs = build(variant)
    (ns,) = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == ns, f"{o['kind']}/{o['metadata']['name']}"
