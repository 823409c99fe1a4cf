"""Removal of images, for delete and cull alike (DESIGN.md, "Identity and stored objects").

One transaction, holding the content row's lock, removes the image rows
(with their associations; OBs that selected them fall back to the default
survey), writes tombstones, and removes the content row when no image uses
it and no upload lease holds it. The objects go only after the commit
(`purge`); a crash in between leaves objects without rows, for the sweep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import asyncpg

from services.catalog.model import RemovalReason, TombstoneView
from services.catalog.repository import Repository
from services.shared.store import ObjectStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Removed:
    tombstones: list[TombstoneView] = dataclasses.field(default_factory=list)
    prefixes: list[str] = dataclasses.field(default_factory=list)
    freed_bytes: int = 0


async def remove_images(
    repo: Repository,
    conn: asyncpg.Connection,
    content: asyncpg.Record,
    image_ids: Sequence[int],
    reason: RemovalReason,
    removed: Removed,
) -> None:
    """Removes image_ids, all of content `content`, whose row the transaction has locked."""
    if image_ids:
        removed.tombstones += await repo.remove_images(conn, image_ids, reason)
    count = await repo.add_to_content_count(conn, content["content_id"], -len(image_ids))
    gone_contents = freed = 0
    if count == 0 and await repo.live_leases_on(conn, content["content_id"]) == 0:
        for row in await repo.delete_contents(conn, [content["content_id"]]):
            removed.prefixes.append(row["prefix"])
            freed += row["stored_bytes"]
            gone_contents += 1
    removed.freed_bytes += freed
    culled = len(image_ids) if reason == RemovalReason.CULLED else 0
    await repo.add_usage(conn, bytes_=-freed, contents=-gone_contents, images=-len(image_ids), culled=culled)


async def remove_contents(
    repo: Repository,
    conn: asyncpg.Connection,
    contents: Sequence[asyncpg.Record],
    reason: RemovalReason,
    removed: Removed,
) -> None:
    """Removes contents whose rows the transaction has locked (and checked: no
    live lease), with every image using them, in a few statements (culling)."""
    if not contents:
        return
    ids = [c["content_id"] for c in contents]
    image_ids = await repo.images_of_contents(conn, ids)
    if image_ids:
        removed.tombstones += await repo.remove_images(conn, image_ids, reason)
    freed = 0
    gone = await repo.delete_contents(conn, ids)
    for row in gone:
        removed.prefixes.append(row["prefix"])
        freed += row["stored_bytes"]
    removed.freed_bytes += freed
    culled = len(image_ids) if reason == RemovalReason.CULLED else 0
    await repo.add_usage(conn, bytes_=-freed, contents=-len(gone), images=-len(image_ids), culled=culled)


PURGE_CONCURRENCY = 16


async def purge(store: ObjectStore, prefixes: Sequence[str]) -> tuple[int, int]:
    """Removes the objects of removed contents (after the commit); what fails
    here is left for the sweep."""
    totals = [0, 0]
    gate = asyncio.Semaphore(PURGE_CONCURRENCY)

    async def one(prefix: str) -> None:
        async with gate:
            try:
                n, b = await store.delete_prefix(prefix)
            except Exception:
                log.warning("could not remove objects under %s; the sweep will", prefix, exc_info=True)
                return
            totals[0] += n
            totals[1] += b

    await asyncio.gather(*(one(p) for p in prefixes))
    return totals[0], totals[1]
