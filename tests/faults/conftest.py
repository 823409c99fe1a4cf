"""The fault suite's world: the four services as supervised processes (a
crashed one is started again, as Kubernetes would), a PostgreSQL the tests
own and may kill, failpoints to place each kill at a step of an upload, and
what an SRE would look at afterwards (the sweep and the consistency check)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import requests

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.devrun import Suite
from tests import contract
from tests.faults.private_pg import PrivatePostgres
from tests.gateway.harness import field

LEASE_TTL_S = 6  # short, so a lease whose holder died ends within the test
STEPS = ("upload.staging", "upload.validate", "upload.process", "upload.complete")


@dataclasses.dataclass
class World:
    suite: Suite
    pg: PrivatePostgres
    failpoints: Path
    files: Path

    # ---- failpoints ------------------------------------------------------------------------

    def arm(self, step: str) -> None:
        (self.failpoints / f"{step}.reached").unlink(missing_ok=True)
        (self.failpoints / f"{step}.arm").touch()

    def wait_reached(self, step: str, timeout: float = 60.0) -> int:
        """The pid of the process that reached the step (and now holds there)."""
        reached = self.failpoints / f"{step}.reached"
        deadline = time.monotonic() + timeout
        while not reached.exists():
            assert time.monotonic() < deadline, f"{step} was not reached in {timeout} s"
            time.sleep(0.02)
        return int(reached.read_text())

    def release(self, step: str) -> None:
        (self.failpoints / f"{step}.arm").unlink(missing_ok=True)

    # ---- what a user does ------------------------------------------------------------------

    def upload(self, user: str, ob_id: int, run_id: str, path: Path) -> requests.Response:
        with path.open("rb") as body:
            return requests.post(
                f"{self.suite.gateway_url}/api/v1/obs/{ob_id}/background-images",
                headers={"Authorization": f"Bearer {self.suite.token(user)}"},
                data={"run_id": run_id, "target_ra": "150.0", "target_dec": "2.0"},
                files={"file": (path.name, body, "application/fits")},
                timeout=120,
            )

    def new_file(self) -> Path:
        return field(self.files, name=f"f{time.monotonic_ns()}.fits", size=256)

    # ---- what an SRE looks at --------------------------------------------------------------

    def catalog(self, method: str, request: Any, timeout: float = 60) -> Any:
        with grpc.insecure_channel(self.suite.address("catalog")) as ch:
            stub = catalog_pb2_grpc.CatalogServiceStub(ch)
            metadata = (("x-service-token", self.suite.env["SERVICE_TOKEN"]),)
            return getattr(stub, method)(request, metadata=metadata, timeout=timeout)

    def sql(self, query: str, *args: Any) -> Any:
        async def fetch() -> Any:
            conn = await asyncpg.connect(self.suite.env["DATABASE_URL"])
            try:
                return await conn.fetchval(query, *args)
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def wait_leases_ended(self, timeout: float = 4 * LEASE_TTL_S) -> None:
        """Every upload lease ended (aborted by its holder, retried once the
        catalog is back) or expired (its holder died)."""
        deadline = time.monotonic() + timeout
        while self.sql("SELECT count(*) FROM upload_leases WHERE expires_at > now()"):
            assert time.monotonic() < deadline, "an upload lease outlived its holder"
            time.sleep(0.2)

    def sweep_and_check(self) -> catalog_pb2.CheckConsistencyResponse:
        """One sweep (min-age 0), then the consistency check: nothing left."""
        self.catalog("Sweep", catalog_pb2.SweepRequest(min_age_seconds=0))
        report: catalog_pb2.CheckConsistencyResponse = self.catalog(
            "CheckConsistency", catalog_pb2.CheckConsistencyRequest(min_age_seconds=0)
        )
        assert list(report.unheld_objects) == [], report.unheld_objects
        assert list(report.missing_objects) == [], report.missing_objects
        store = Path(self.suite.env["STORE_DIR"])
        assert list((store / ".tmp").iterdir()) == [], "a dead writer's temporary file is left"
        staging = store / "staging"
        assert not staging.exists() or not any(staging.iterdir()), "a staging object is left"
        scratch = Path(self.suite.env["SCRATCH_DIR"])
        assert not list(scratch.glob("process-*")), "a killed processor's job folder is left"
        return report


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("faults")
    # Not under pytest's private temp folder: PostgreSQL runs as its own user.
    pg_folder = Path(tempfile.mkdtemp(prefix="bgimages-faults-pg-"))
    pg_folder.chmod(0o755)
    pg = PrivatePostgres(pg_folder)
    pg.init()
    pg.start()
    failpoints = folder / "failpoints"
    failpoints.mkdir()
    files = folder / "files"
    files.mkdir()
    suite = Suite(
        folder / "suite",
        {
            "DATABASE_URL": pg.url,
            "FAILPOINTS_DIR": str(failpoints),
            "UPLOAD_LEASE_TTL_S": str(LEASE_TTL_S),
            # No background rounds: each test runs the one sweep it means.
            "CULL_INTERVAL_S": "3600",
        },
        supervise=True,
    )
    suite.start()
    contract.watch(suite.gateway_url)
    try:
        yield World(suite, pg, failpoints, files)
    finally:
        for arm in failpoints.glob("*.arm"):
            arm.unlink()
        suite.stop()
        pg.stop()
        shutil.rmtree(pg_folder, ignore_errors=True)
