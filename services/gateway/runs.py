"""Runs as p2 pushes them (admin): a run's owner and delegates, and forgetting a run."""

from __future__ import annotations

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared.errors import Code, ServiceError
from services.shared.grpc_client import call


class Runs:
    """Run and delegation updates, over the catalog."""

    def __init__(self, *, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
        self.catalog = catalog

    async def set(self, run_id: str, owner_id: str, delegate_ids: list[str]) -> catalog_pb2.Run:
        """Sets a run's owner and delegates, replacing the old list."""
        for name, value in [
            ("run_id", run_id),
            ("owner_id", owner_id),
            *(("delegate", d) for d in delegate_ids),
        ]:
            if not value or len(value) > 200 or not value.isprintable():
                raise ServiceError(Code.INVALID_ARGUMENT, f"{name} must be a non-empty printable string")
        return await call(
            self.catalog.SetRun,
            catalog_pb2.SetRunRequest(run_id=run_id, owner_id=owner_id, delegate_ids=delegate_ids),
        )

    async def remove(self, run_id: str) -> None:
        await call(self.catalog.RemoveRun, catalog_pb2.RemoveRunRequest(run_id=run_id))
