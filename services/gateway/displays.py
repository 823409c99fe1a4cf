"""Displays as uses for culling: the HiPS seen on this gateway, sent to the
catalog in batches (one call per round, not a write per tile)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared.errors import ServiceError
from services.shared.grpc_client import call

log = logging.getLogger(__name__)

BATCH = 5000  # fits_hashes per RecordDisplays call


class Displays:
    """The displays seen since the last round, and the rounds every `flush_s`."""

    def __init__(self, *, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, flush_s: float) -> None:
        self.catalog = catalog
        self.flush_s = flush_s
        self._seen: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    def seen(self, fits_hash: str) -> None:
        self._seen.add(fits_hash)

    async def start(self) -> None:
        """Starts the background rounds."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever())

    async def close(self) -> None:
        """Stops the rounds and sends what is left, if the catalog takes it."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def flush(self) -> None:
        """Sends the displays seen since the last flush to the catalog (one call a batch)."""
        if not self._seen:
            return
        pending, self._seen = sorted(self._seen), set()
        for start in range(0, len(pending), BATCH):
            batch = pending[start : start + BATCH]
            try:
                await call(self.catalog.RecordDisplays, catalog_pb2.RecordDisplaysRequest(fits_hashes=batch))
            except ServiceError:
                self._seen.update(pending[start:])  # kept for the next round
                raise

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except ServiceError as err:
                log.warning("recording displays failed: %s", err.message)
