"""Upload leases and what a failed upload leaves: no OB pin, leases that
expire within their short TTL unless renewed, a sweep whose min-age 0 means
0, and the consistency check SREs run."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared import grpc_client
from services.shared.store import LocalStore
from tests.catalog.conftest import TOKEN, Harness, caller, fits_hash, next_ob, ob, square, start_catalog

RUN_A, RUN_B = "p2:60.A-0001(A)", "p2:60.A-0002(B)"
PI_A, PI_B = "p2:41", "p2:42"


def begin_request(user: str, ob_id: int, run: str, label: str, staging_key: str = "") -> object:
    return catalog_pb2.BeginUploadRequest(
        caller=caller(user),
        ob=ob(ob_id, run, 5.0, 5.0),
        fits_hash=fits_hash(label),
        size_bytes=1000,
        staging_key=staging_key,
    )


async def pinned_run(h: Harness, ob_id: int) -> str | None:
    run: str | None = await h.scalar("SELECT run_id FROM obs WHERE ob_id = $1", ob_id)
    return run


async def test_a_failed_upload_pins_nothing(catalog: Harness) -> None:
    h = catalog
    await h.set_run(RUN_A, PI_A)
    await h.set_run(RUN_B, PI_B)
    ob_id = next_ob()
    # Run A's upload for a new OB fails (validator refusal, 503, crash: the gateway aborts).
    begun = await h.call("BeginUpload", begin_request(PI_A, ob_id, RUN_A, "refused"))
    await h.write_objects(begun.output_prefix, "refused")
    await h.call("AbortUpload", catalog_pb2.AbortUploadRequest(lease_id=begun.lease_id))
    assert await pinned_run(h, ob_id) is None
    assert await h.keys("content/") == []
    # So run B's member may still upload for that OB, and it is then B's.
    image = await h.upload(PI_B, ob_id, RUN_B, "accepted", [square(5.0, 5.0, 0.1)])
    assert await pinned_run(h, ob_id) == RUN_B
    assert image.run_ids == [RUN_B]
    await h.fails("RUN_MISMATCH", "BeginUpload", begin_request(PI_A, ob_id, RUN_A, "late"))


async def test_two_runs_racing_for_a_new_ob_one_wins_whole(catalog: Harness) -> None:
    h = catalog
    await h.set_run(RUN_A, PI_A)
    await h.set_run(RUN_B, PI_B)
    ob_id = next_ob()
    first = await h.upload(PI_A, ob_id, RUN_A, "first", [square(5.0, 5.0, 0.1)])
    assert first.run_ids == [RUN_A]
    # B began before A completed: its completion is refused and records nothing.
    ob_id2 = next_ob()
    a = await h.call("BeginUpload", begin_request(PI_A, ob_id2, RUN_A, "a"))
    b = await h.call("BeginUpload", begin_request(PI_B, ob_id2, RUN_B, "b"))
    for begun, user, run, label in ((a, PI_A, RUN_A, "a"), (b, PI_B, RUN_B, "b")):
        req = catalog_pb2.CompleteUploadRequest(
            caller=caller(user),
            ob=ob(ob_id2, run, 5.0, 5.0),
            lease_id=begun.lease_id,
            fits_hash=fits_hash(label),
            file_name=f"{label}.fits",
            filter="R",
            footprints=[square(5.0, 5.0, 0.1)],
        )
        await h.add_products(req, begun, label)
        if label == "a":
            await h.call("CompleteUpload", req)
        else:
            await h.fails("RUN_MISMATCH", "CompleteUpload", req)
            await h.call("AbortUpload", catalog_pb2.AbortUploadRequest(lease_id=begun.lease_id))
    assert await pinned_run(h, ob_id2) == RUN_A
    assert await h.scalar("SELECT count(*) FROM images WHERE owner_id = $1", PI_B) == 0
    assert not await h.keys(b.output_prefix)


async def test_a_lease_lives_while_renewed_and_expires_soon_after(db_url: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    server, pool = await start_catalog(db_url, store, lease_ttl_s=2)
    channel = grpc_client.channel(f"127.0.0.1:{server.port}", TOKEN)
    h = Harness(catalog_pb2_grpc.CatalogServiceStub(channel), server, pool, store, db_url)
    try:
        await h.set_run(RUN_A, PI_A)
        begun = await h.call("BeginUpload", begin_request(PI_A, next_ob(), RUN_A, "slow"))
        assert begun.lease_ttl_seconds == 2
        for _ in range(4):  # 3 s in all: longer than the TTL, kept alive by renewals
            await asyncio.sleep(0.75)
            renewed = await h.call("RenewLease", catalog_pb2.RenewLeaseRequest(lease_id=begun.lease_id))
            assert renewed.lease_ttl_seconds == 2
        await h.write_objects(begun.output_prefix, "slow")
        swept = await h.call("Sweep", catalog_pb2.SweepRequest(min_age_seconds=0))
        assert swept.removed_objects == 0  # held by the live lease
        await asyncio.sleep(2.2)  # its holder stopped renewing (died)
        await h.fails("NOT_FOUND", "RenewLease", catalog_pb2.RenewLeaseRequest(lease_id=begun.lease_id))
        swept = await h.call("Sweep", catalog_pb2.SweepRequest(min_age_seconds=0))
        assert swept.removed_objects == 4 and await h.keys() == []
        await h.fails("NOT_FOUND", "RenewLease", catalog_pb2.RenewLeaseRequest(lease_id=str(uuid.uuid4())))
        await h.fails("INVALID_ARGUMENT", "RenewLease", catalog_pb2.RenewLeaseRequest(lease_id="x"))
    finally:
        await channel.close(None)
        await server.stop(0)
        await pool.close()


async def test_sweep_min_age_zero_means_zero(catalog: Harness) -> None:
    h = catalog
    await h.set_run(RUN_A, PI_A)
    held_key = "staging/" + uuid.uuid4().hex
    await h.store.put_bytes(held_key, b"in flight")
    await h.call("BeginUpload", begin_request(PI_A, next_ob(), RUN_A, "held", held_key))
    await h.store.put_bytes("staging/" + uuid.uuid4().hex, b"left by a dead gateway")
    dead = await h.call("BeginUpload", begin_request(PI_A, next_ob(), RUN_A, "dead"))
    await h.write_objects(dead.output_prefix, "dead")
    await h.call("AbortUpload", catalog_pb2.AbortUploadRequest(lease_id=dead.lease_id))
    await h.write_objects(dead.output_prefix, "dead")  # written again after the abort
    # A write that died before its rename (the temporary file of a killed writer).
    assert isinstance(h.store, LocalStore)
    (h.store.root / ".tmp" / "killed-writer").write_bytes(b"half a tile")

    # Unset: the catalog's SWEEP_MIN_AGE_S (3600) keeps all of these young objects.
    kept = await h.call("Sweep", catalog_pb2.SweepRequest())
    assert kept.removed_objects == 0
    swept = await h.call("Sweep", catalog_pb2.SweepRequest(min_age_seconds=0))
    assert swept.removed_objects == 4 + 1 + 1
    assert await h.keys() == [held_key]
    assert list((h.store.root / ".tmp").iterdir()) == []


async def test_consistency_check_both_ways(catalog: Harness) -> None:
    h = catalog
    await h.set_run(RUN_A, PI_A)
    image = await h.upload(PI_A, next_ob(), RUN_A, "stored", [square(5.0, 5.0, 0.1)])
    clean = await h.call("CheckConsistency", catalog_pb2.CheckConsistencyRequest())
    assert list(clean.unheld_objects) == [] and list(clean.missing_objects) == []
    assert clean.contents_checked == 1 and clean.objects_checked == 4

    orphan = f"content/{fits_hash('orphan')}/g999/original.fits"
    await h.store.put_bytes(orphan, b"no row")
    await h.store.delete(image.preview_key)
    found = await h.call("CheckConsistency", catalog_pb2.CheckConsistencyRequest())
    assert list(found.unheld_objects) == [orphan]
    assert list(found.missing_objects) == [image.preview_key]
    young = await h.call("CheckConsistency", catalog_pb2.CheckConsistencyRequest(min_age_seconds=3600))
    assert list(young.unheld_objects) == []  # may be an upload in flight
    assert list(young.missing_objects) == [image.preview_key]
