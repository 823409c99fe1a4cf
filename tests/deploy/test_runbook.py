"""docs/runbook.md names what exists: paths, Secrets, metrics, admin commands."""

from __future__ import annotations

import re

from tests.deploy.manifests import K8S, REPO

RUNBOOK = (REPO / "docs" / "runbook.md").read_text()


def test_paths_named_exist() -> None:
    for path in set(re.findall(r"\b((?:deploy/(?:k8s|Dockerfile)|docs/|services/)[\w./-]*\w)", RUNBOOK)):
        assert (REPO / path).exists(), path


def test_every_secret_is_documented() -> None:
    made = set(re.findall(r"^emit (bgimages-[a-z0-9-]+) ", (K8S / "secrets.sh").read_text(), re.MULTILINE))
    table = set(re.findall(r"^\| `(bgimages-[a-z0-9-]+)` \|", RUNBOOK, re.MULTILINE))
    assert made and made == table


def test_metrics_named_are_the_gateways() -> None:
    source = (REPO / "services" / "gateway" / "metrics.py").read_text()
    defined = set(re.findall(r'"(bgimages_[a-z_]+)"', source))
    named = {
        re.sub(r"_(total|bucket|count|sum)$", "", m) for m in re.findall(r"\b(bgimages_[a-z_]+)", RUNBOOK)
    }
    assert named <= defined, f"runbook names metrics the gateway lacks: {named - defined}"
    table = {re.sub(r"_total$", "", m) for m in re.findall(r"^\| `(bgimages_[a-z_]+)", RUNBOOK, re.MULTILINE)}
    assert defined <= table, f"metrics not described: {defined - table}"


def test_admin_commands_are_the_scripts() -> None:
    commands = set(re.findall(r"python - (\w+)", RUNBOOK))
    script = (K8S / "catalog_admin.py").read_text()
    offered = set(re.findall(r'sub\.add_parser\("(\w+)"', script))
    assert commands and commands <= offered
    assert {"usage", "cull"} <= commands
