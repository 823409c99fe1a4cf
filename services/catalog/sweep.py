"""The orphan sweep: objects that no row references and no live upload lease
covers are removed (uploads that died half way, removals interrupted after
their commit, expired leases), and the temporary files of writes that died;
tombstones older than TOMBSTONE_DAYS go too.
Keys carry the content's generation, so a new upload of the same bytes never
shares a prefix with a removed one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncIterator

from services.catalog.removal import purge
from services.catalog.repository import Repository
from services.catalog.resumable import Resumables
from services.shared.store import ObjectStore

log = logging.getLogger(__name__)

_CONTENT_KEY = re.compile(r"^(content/[0-9a-f]{64}/g\d+/)")
STAGING = "staging/"
BATCH = 1000


@dataclasses.dataclass(frozen=True)
class SweepResult:
    removed_objects: int
    removed_bytes: int


async def unheld_objects(repo: Repository, store: ObjectStore) -> AsyncIterator[tuple[str, int, float]]:
    """(key, size, modified) of every object under content/ and staging/ that
    no content row of its generation and no live upload lease holds."""
    # Objects under content/: group by prefix, ask which prefixes rows hold.
    by_prefix: dict[str, list[tuple[str, int, float]]] = {}
    async for info in store.list("content/"):
        m = _CONTENT_KEY.match(info.key)
        by_prefix.setdefault(m.group(1) if m else info.key, []).append((info.key, info.size, info.modified))
    prefixes = list(by_prefix)
    for start in range(0, len(prefixes), BATCH):
        chunk = prefixes[start : start + BATCH]
        async with repo.connection() as conn:
            held = await repo.referenced_prefixes(conn, chunk)
        for prefix in chunk:
            if prefix not in held:
                for item in by_prefix[prefix]:
                    yield item
    # Staging objects are the gateway's; a live lease holds the one of its upload.
    staged = [(i.key, i.size, i.modified) async for i in store.list(STAGING)]
    for start in range(0, len(staged), BATCH):
        chunk_items = staged[start : start + BATCH]
        async with repo.connection() as conn:
            held = await repo.held_staging_keys(conn, list({_staged(key) for key, _, _ in chunk_items}))
        for item in chunk_items:
            if _staged(item[0]) not in held:
                yield item


_TAIL = re.compile(r"\.tail\d+$")


def _staged(key: str) -> str:
    """The staging object a key belongs to: itself, or the one whose tail it is (a resumable
    upload's bytes short of an S3 part, `<key>.tail<N>`)."""
    return _TAIL.sub("", key)


class Sweeper:
    def __init__(self, repo: Repository, store: ObjectStore, tombstone_days: int = 90) -> None:
        self.repo = repo
        self.store = store
        self.tombstone_days = tombstone_days

    async def sweep(self, min_age_s: int) -> SweepResult:
        """Removes every object nothing holds that is at least min_age_s old
        (0: all of them at once, e.g. after an outage); live leases hold their
        content prefix and their staging object whatever the age."""
        if min_age_s < 0:
            raise ValueError("min_age_s is negative")
        now = time.time()
        objects = size = 0
        async with self.repo.transaction() as conn:
            expired = await self.repo.drop_expired_leases(conn)
            old = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.tombstone_days)
            forgotten = await self.repo.drop_old_tombstones(conn, old)
        if expired or forgotten:
            log.info("dropped %d expired upload leases, %d old tombstones", expired, forgotten)
        # Resumable uploads left idle past their expiry: their records and what they staged.
        if dropped := await Resumables(self.repo, self.store).expire():
            log.info("removed %d expired resumable uploads", dropped)
        n, b = await self._unused_contents()
        objects, size = objects + n, size + b

        async for key, length, modified in unheld_objects(self.repo, self.store):
            if now - modified >= min_age_s:
                await self.store.delete(key)
                objects += 1
                size += length
        async with self.repo.connection() as conn:
            in_progress = await self.repo.live_multipart_ids(conn)
        n, b = await self.store.remove_abandoned_writes(min_age_s, in_progress)
        objects, size = objects + n, size + b
        if objects:
            log.info("sweep removed %d objects, %d bytes", objects, size)
        return SweepResult(objects, size)

    async def _unused_contents(self) -> tuple[int, int]:
        """Content rows left with no image and no lease (a delete during a reuse upload that died)."""
        prefixes: list[str] = []
        async with self.repo.transaction() as conn:
            ids = await self.repo.unused_contents(conn)
            if ids:
                for row in await self.repo.lock_for_removal(conn, ids):
                    if row["image_count"] != 0:
                        continue
                    for gone in await self.repo.delete_contents(conn, [row["content_id"]]):
                        prefixes.append(gone["prefix"])
                        await self.repo.add_usage(conn, bytes_=-gone["stored_bytes"], contents=-1)
        return await purge(self.store, prefixes)
