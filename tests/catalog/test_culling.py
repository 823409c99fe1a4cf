"""LRU culling: order by the latest use of any image sharing a content, tombstones,
fall-backs, exact usage; the background round and the Cull RPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared import grpc_client
from services.shared.store import LocalStore
from tests.catalog.conftest import (
    CONTENT_BYTES,
    TOKEN,
    Harness,
    caller,
    fits_hash,
    next_ob,
    ob,
    square,
    start_catalog,
)

RUN, OWNER, OTHER, RUN_B = "p2:60.C-0001(A)", "p2:11", "p2:12", "p2:60.C-0002(A)"
USER_IMAGE = catalog_pb2.SELECTION_KIND_USER_IMAGE
S = CONTENT_BYTES


@pytest.fixture
async def small(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """A catalog whose capacity holds 5 of the test contents (S bytes each)."""
    store = LocalStore(tmp_path / "store")
    server, pool = await start_catalog(db_url, store, capacity_bytes=5 * S, high_water=0.9, low_water=0.6)
    channel = grpc_client.channel(f"127.0.0.1:{server.port}", TOKEN)
    try:
        yield Harness(catalog_pb2_grpc.CatalogServiceStub(channel), server, pool, store, db_url)
    finally:
        await channel.close(None)
        await server.stop(0)
        await pool.close()


async def test_culling_goes_strictly_by_last_use(small: Harness) -> None:
    await small.set_run(RUN, OWNER)
    await small.set_run(RUN_B, OTHER)
    images = {}
    obs = {}
    for n, label in enumerate("ABCDE"):
        obs[label] = next_ob()
        images[label] = await small.upload(
            OWNER, obs[label], RUN, f"img-{label}", [square(50.0 + n, 0.0, 0.1)]
        )
    sizes = {i.stored_bytes for i in images.values()}
    assert len(sizes) == 1 and sizes.pop() == S
    usage = await small.call("GetUsage", catalog_pb2.GetUsageRequest())
    assert usage.used_bytes == 5 * S > usage.high_water_bytes  # over the high mark

    # Uses: another owner uploads B's bytes (a use of B's content), the owner selects C,
    # A is displayed. Last uses, oldest first: D, E, B, C, A.
    await small.upload(OTHER, next_ob(), RUN_B, "img-B", [square(51.0, 0.0, 0.1)])
    await small.call(
        "Select",
        catalog_pb2.SelectRequest(
            caller=caller(OWNER),
            ob=ob(next_ob(), RUN, 52.0, 0.0),
            kind=USER_IMAGE,
            value=images["C"].fits_hash,
        ),
    )
    await small.call("RecordDisplays", catalog_pb2.RecordDisplaysRequest(fits_hashes=[images["A"].fits_hash]))

    resp = await small.call("Cull", catalog_pb2.CullRequest())
    # Down to the low mark (3 S): two contents go, D then E.
    assert [t.fits_hash for t in resp.culled] == [images["D"].fits_hash, images["E"].fits_hash]
    assert all(t.reason == catalog_pb2.REMOVAL_REASON_CULLED and t.owner_id == OWNER for t in resp.culled)
    assert resp.freed_bytes == 2 * S
    assert resp.usage.used_bytes == 3 * S <= resp.usage.low_water_bytes
    assert resp.usage.culled_images == 2  # the counter /metrics exports
    for label in "DE":
        assert await small.keys(f"content/{images[label].fits_hash}/") == []
        sel = await small.call(
            "GetSelection", catalog_pb2.GetSelectionRequest(caller=caller(OWNER), ob_id=obs[label])
        )
        assert sel.kind == catalog_pb2.SELECTION_KIND_DEFAULT  # fell back
        err = await small.fails(
            "GONE",
            "GetImage",
            catalog_pb2.GetImageRequest(caller=caller(OWNER), fits_hash=images[label].fits_hash),
        )
        assert err.details["reason"] == "culled"
    for label in "ABC":
        assert await small.keys(f"content/{images[label].fits_hash}/")
    # Under the high mark now: a Cull does nothing unless forced.
    assert not (await small.call("Cull", catalog_pb2.CullRequest())).culled
    reconciled = await small.call("GetUsage", catalog_pb2.GetUsageRequest(reconcile=True))
    assert (reconciled.used_bytes, reconciled.content_count, reconciled.image_count) == (3 * S, 3, 4)
    assert reconciled.culled_images == 2  # a history, not recomputed from rows


async def test_forced_cull_takes_both_owners_images_of_a_content(small: Harness) -> None:
    await small.set_run(RUN, OWNER)
    await small.set_run(RUN_B, OTHER)
    await small.upload(OWNER, next_ob(), RUN, "old-shared", [square(10.0, 10.0, 0.1)])
    await small.upload(OTHER, next_ob(), RUN_B, "old-shared", [square(10.0, 10.0, 0.1)])
    for n in range(2):
        await small.upload(OWNER, next_ob(), RUN, f"newer-{n}", [square(20.0 + n, 10.0, 0.1)])
    resp = await small.call("Cull", catalog_pb2.CullRequest(force=True))  # 3 S used, low mark 3 S: nothing
    assert not resp.culled
    await small.upload(OWNER, next_ob(), RUN, "newest-x", [square(30.0, 10.0, 0.1)])
    resp = await small.call("Cull", catalog_pb2.CullRequest(force=True))
    assert sorted(t.owner_id for t in resp.culled) == sorted([OWNER, OTHER])
    assert {t.fits_hash for t in resp.culled} == {fits_hash("old-shared")}
    assert resp.freed_bytes == S  # one content, counted once


async def test_usage_reconcile_repairs_the_counter(small: Harness) -> None:
    await small.set_run(RUN, OWNER)
    await small.upload(OWNER, next_ob(), RUN, "counted", [square(10.0, 10.0, 0.1)])
    async with small.pool.acquire() as conn:
        await conn.execute("UPDATE usage SET used_bytes = 999999, image_count = 7")
    usage = await small.call("GetUsage", catalog_pb2.GetUsageRequest(reconcile=True))
    assert (usage.used_bytes, usage.image_count, usage.content_count) == (S, 1, 1)
    assert (await small.call("GetUsage", catalog_pb2.GetUsageRequest())).used_bytes == S


async def test_background_round_culls(db_url: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    server, pool = await start_catalog(
        db_url, store, background=True, capacity_bytes=2 * S, high_water=0.9, low_water=0.5, cull_interval_s=1
    )
    channel = grpc_client.channel(f"127.0.0.1:{server.port}", TOKEN)
    h = Harness(catalog_pb2_grpc.CatalogServiceStub(channel), server, pool, store, db_url)
    try:
        await h.set_run(RUN, OWNER)
        first = await h.upload(OWNER, next_ob(), RUN, "bg-1", [square(1.0, 1.0, 0.1)])
        await h.upload(OWNER, next_ob(), RUN, "bg-2", [square(2.0, 1.0, 0.1)])
        for _ in range(50):
            if (await h.call("GetUsage", catalog_pb2.GetUsageRequest())).content_count == 1:
                break
            await asyncio.sleep(0.1)
        await h.fails(
            "GONE", "GetImage", catalog_pb2.GetImageRequest(caller=caller(OWNER), fits_hash=first.fits_hash)
        )
        assert await h.keys(f"content/{first.fits_hash}/") == []
    finally:
        await channel.close(None)
        await server.stop(0)
        await pool.close()


async def test_a_content_under_a_reuse_upload_is_not_culled(small: Harness) -> None:
    await small.set_run(RUN, OWNER)
    await small.set_run(RUN_B, OTHER)
    oldest = await small.upload(OWNER, next_ob(), RUN, "oldest", [square(1.0, 1.0, 0.1)])
    for n in range(4):
        await small.upload(OWNER, next_ob(), RUN, f"later-{n}", [square(2.0 + n, 1.0, 0.1)])
    the_ob = ob(next_ob(), RUN_B, 1.0, 1.0)
    begun = await small.call(
        "BeginUpload",
        catalog_pb2.BeginUploadRequest(caller=caller(OTHER), ob=the_ob, fits_hash=oldest.fits_hash),
    )
    assert begun.action == catalog_pb2.BeginUploadResponse.REUSE_CONTENT
    resp = await small.call("Cull", catalog_pb2.CullRequest())  # 5 S used: two must go
    assert oldest.fits_hash not in {t.fits_hash for t in resp.culled}
    assert [t.fits_hash for t in resp.culled] == [fits_hash("later-0"), fits_hash("later-1")]
    image = await small.call(
        "CompleteUpload",
        catalog_pb2.CompleteUploadRequest(
            caller=caller(OTHER),
            ob=the_ob,
            lease_id=begun.lease_id,
            fits_hash=oldest.fits_hash,
            footprints=[square(1.0, 1.0, 0.1)],
        ),
    )
    assert image.fits_key == oldest.fits_key and await small.store.stat(image.fits_key) is not None
