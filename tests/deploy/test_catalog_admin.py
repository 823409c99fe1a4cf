"""The runbook's catalog commands (deploy/k8s/catalog_admin.py, fed to the pod's Python on
stdin) against a real catalog process and PostgreSQL, as `kubectl exec -i` runs them."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import free_port
from tests.deploy.manifests import K8S, REPO

SCRIPT = K8S / "catalog_admin.py"
CAPACITY = 5 << 30


@pytest.fixture
def catalog(db_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A catalog process with the environment a pod gives it."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "STORE_DIR": str(tmp_path / "store"),
        "CATALOG_PORT": str(free_port()),
        "SERVICE_TOKEN": secrets.token_hex(16),
        "STORE_CAPACITY_BYTES": str(CAPACITY),
        "BIND_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.catalog"], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{env['CATALOG_PORT']}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while True:
                assert proc.poll() is None, "catalog exited"
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "catalog did not become SERVING"
                time.sleep(0.2)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    with SCRIPT.open() as stdin:
        return subprocess.run(
            [sys.executable, "-", *args],
            stdin=stdin,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_usage_cull_and_sweep_through_the_pods_python(catalog: dict[str, str]) -> None:
    usage = _admin(catalog, "usage", "--reconcile")
    assert usage.returncode == 0, usage.stderr
    report = json.loads(usage.stdout)
    assert int(report["capacityBytes"]) == CAPACITY
    assert int(report["usedBytes"]) == 0 and int(report["imageCount"]) == 0

    cull = _admin(catalog, "cull", "--force")
    assert cull.returncode == 0, cull.stderr
    assert int(json.loads(cull.stdout)["freedBytes"]) == 0

    sweep = _admin(catalog, "sweep", "--min-age", "0")
    assert sweep.returncode == 0, sweep.stderr
    assert int(json.loads(sweep.stdout)["removedObjects"]) == 0


def test_a_wrong_credential_is_refused(catalog: dict[str, str]) -> None:
    result = _admin({**catalog, "SERVICE_TOKEN": "not-the-token"}, "usage")
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stderr or "credential" in result.stderr


def test_sweep_min_age_zero_removes_a_fresh_orphan_and_check_reports_both_ways(
    catalog: dict[str, str],
) -> None:
    store = Path(catalog["STORE_DIR"])
    orphan = store / "content" / ("ab" * 32) / "g7" / "original.fits"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by an upload that died")

    found = _admin(catalog, "check", "--min-age", "0")
    assert found.returncode == 1, found.stdout + found.stderr
    assert json.loads(found.stdout)["unheldObjects"] == [f"content/{'ab' * 32}/g7/original.fits"]
    assert "1 objects nothing holds" in found.stderr
    young = _admin(catalog, "check")  # default --min-age 600: a fresh object may be an upload in flight
    assert young.returncode == 0, young.stderr

    kept = _admin(catalog, "sweep")  # the catalog's SWEEP_MIN_AGE_S (3600) keeps it
    assert int(json.loads(kept.stdout)["removedObjects"]) == 0 and orphan.exists()
    swept = _admin(catalog, "sweep", "--min-age", "0")  # 0 means 0
    assert swept.returncode == 0, swept.stderr
    assert int(json.loads(swept.stdout)["removedObjects"]) == 1 and not orphan.exists()
    clean = _admin(catalog, "check", "--min-age", "0")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["unheldObjects"] == []
