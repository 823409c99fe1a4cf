"""LRU culling (DESIGN.md, "Disk space and culling"): when usage passes the high
mark, the contents used longest ago go, with every image using them, until
usage is under the low mark.

Each batch: read the oldest candidates, lock them (FOR UPDATE SKIP LOCKED:
one in use right now is skipped), re-check their last use under the lock
(a use that committed since the read wins), remove rows and write
tombstones in that transaction; objects only after the commit.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from services.catalog.model import RemovalReason, TombstoneView, UsageView
from services.catalog.removal import Removed, purge, remove_contents
from services.catalog.repository import Repository
from services.shared.store import ObjectStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Capacity:
    capacity_bytes: int
    high_water: float
    low_water: float

    def __post_init__(self) -> None:
        if not 0 < self.low_water <= self.high_water <= 1:
            raise ValueError("culling needs 0 < low water <= high water <= 1")

    @property
    def high_bytes(self) -> int:
        return int(self.capacity_bytes * self.high_water)

    @property
    def low_bytes(self) -> int:
        return int(self.capacity_bytes * self.low_water)


@dataclasses.dataclass(frozen=True)
class CullResult:
    culled: list[TombstoneView]
    freed_bytes: int
    usage: UsageView


class Culler:
    def __init__(self, repo: Repository, store: ObjectStore, capacity: Capacity, batch: int = 500) -> None:
        self.repo = repo
        self.store = store
        self.capacity = capacity
        self.batch = batch

    async def usage(self, reconcile: bool = False) -> UsageView:
        async with self.repo.transaction() as conn:
            row = await (self.repo.reconcile_usage(conn) if reconcile else self.repo.usage(conn))
        return UsageView(
            used_bytes=row["used_bytes"],
            capacity_bytes=self.capacity.capacity_bytes,
            high_water_bytes=self.capacity.high_bytes,
            low_water_bytes=self.capacity.low_bytes,
            image_count=row["image_count"],
            content_count=row["content_count"],
            culled_images=row["culled_images"],
        )

    async def cull(self, force: bool = False) -> CullResult:
        """Culls down to the low mark when over the high mark (or when forced)."""
        usage = await self.usage()
        used = usage.used_bytes
        culled: list[TombstoneView] = []
        freed = 0
        if not force and used <= self.capacity.high_bytes:
            return CullResult(culled, 0, usage)
        low = self.capacity.low_bytes
        stalls = 0
        while used > low:
            removed = Removed()
            started = time.perf_counter()
            async with self.repo.transaction() as conn:
                candidates = await self.repo.cull_candidates(conn, self.batch)
                if not candidates:
                    break
                seen = {r["content_id"]: r["last_used_at"] for r in candidates}
                locked = await self.repo.lock_for_removal(conn, list(seen))
                # A use committed since the candidates were read moved last_used_at: it wins.
                still_old = [r for r in locked if r["last_used_at"] == seen[r["content_id"]]]
                still_old.sort(key=lambda r: (r["last_used_at"], r["content_id"]))
                if not still_old:
                    stalls += 1
                    if stalls >= 3:
                        break  # what is left is in use right now; the next round will see
                    continue
                chosen = []
                goal = used
                for content in still_old:
                    if goal <= low:
                        break
                    chosen.append(content)
                    goal -= content["stored_bytes"]
                await remove_contents(self.repo, conn, chosen, RemovalReason.CULLED, removed)
            # Committed: now the objects.
            committed = time.perf_counter()
            await purge(self.store, removed.prefixes)
            purged = time.perf_counter()
            culled += removed.tombstones
            freed += removed.freed_bytes
            used = (await self.usage()).used_bytes
            log.info(
                "culled %d images, %d bytes (rows %.3f s, objects %.3f s); usage %d bytes",
                len(removed.tombstones),
                removed.freed_bytes,
                committed - started,
                purged - committed,
                used,
            )
        return CullResult(culled, freed, await self.usage())
