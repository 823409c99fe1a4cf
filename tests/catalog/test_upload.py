"""The upload protocol as the gateway drives it: Begin, Complete, Abort; listing and GetImage."""

from __future__ import annotations

from bgimages.catalog.v1 import catalog_pb2
from tests.catalog.conftest import Harness, caller, fits_hash, next_ob, ob, square

RUN = "p2:60.A-9001(A)"
OWNER = "p2:1001"
PROCESS = catalog_pb2.BeginUploadResponse.PROCESS
REUSE = catalog_pb2.BeginUploadResponse.REUSE_CONTENT


async def test_upload_is_recorded_selected_and_listed(catalog: Harness) -> None:
    await catalog.set_run(RUN, OWNER)
    ob_id = next_ob()
    image = await catalog.upload(
        OWNER, ob_id, RUN, "field-a", [square(150.0, 2.0, 0.1)], file_name="a b.fits"
    )
    assert image.fits_hash == fits_hash("field-a")
    assert image.owner_id == OWNER and image.owned_by_caller
    assert list(image.run_ids) == [RUN]
    assert image.file_name == "a b.fits" and image.filter == "R" and image.hips_order == 3
    assert image.fits_key.startswith(f"content/{image.fits_hash}/g") and image.fits_key.endswith(
        "/original.fits"
    )
    sizes = [info.size async for info in catalog.store.list("content/")]
    assert image.stored_bytes == sum(sizes)
    assert image.file_bytes == 1000  # the size BeginUpload was told: the file as uploaded
    assert len(image.footprints) == 1 and len(image.footprints[0].corners) == 4

    listing = await catalog.call(
        "ListImages", catalog_pb2.ListImagesRequest(caller=caller(OWNER), ob=ob(ob_id, RUN, 150.05, 2.05))
    )
    assert [i.fits_hash for i in listing.own] == [image.fits_hash]
    assert not listing.shared
    assert listing.selected.kind == catalog_pb2.SELECTION_KIND_USER_IMAGE
    assert listing.selected.value == image.fits_hash
    assert listing.selected.image.fits_hash == image.fits_hash

    # A target outside the footprint lists nothing (but the selection stays).
    outside = await catalog.call(
        "ListImages", catalog_pb2.ListImagesRequest(caller=caller(OWNER), ob=ob(ob_id, RUN, 150.3, 2.0))
    )
    assert not outside.own and outside.selected.value == image.fits_hash

    got = await catalog.call(
        "GetImage", catalog_pb2.GetImageRequest(caller=caller(OWNER), fits_hash=image.fits_hash)
    )
    assert got.fits_hash == image.fits_hash and got.owned_by_caller
    usage = await catalog.call("GetUsage", catalog_pb2.GetUsageRequest())
    assert (usage.used_bytes, usage.image_count, usage.content_count) == (image.stored_bytes, 1, 1)
    assert await catalog.scalar("SELECT count(*) FROM upload_leases") == 0


async def test_boa_star_must_be_inside_too(catalog: Harness) -> None:
    await catalog.set_run(RUN, OWNER)
    img = await catalog.upload(OWNER, next_ob(), RUN, "boa", [square(10.0, -30.0, 0.1)])
    inside = await catalog.call(
        "ListImages",
        catalog_pb2.ListImagesRequest(
            caller=caller(OWNER), ob=ob(next_ob(), RUN, 10.0, -30.0, boa=(10.05, -29.95))
        ),
    )
    assert [i.fits_hash for i in inside.own] == [img.fits_hash]
    outside = await catalog.call(
        "ListImages",
        catalog_pb2.ListImagesRequest(
            caller=caller(OWNER), ob=ob(next_ob(), RUN, 10.0, -30.0, boa=(10.0, -29.8))
        ),
    )
    assert not outside.own


async def test_paw_print_gap_does_not_count(catalog: Harness) -> None:
    """Two chips side by side with a gap: a target in the gap is not compatible."""
    await catalog.set_run(RUN, OWNER)
    chips = [square(100.0, 0.0, 0.05, hdu=1), square(100.12, 0.0, 0.05, hdu=2)]
    img = await catalog.upload(OWNER, next_ob(), RUN, "paw", chips, target=(100.0, 0.0))
    assert [f.hdu for f in img.footprints] == [1, 2]

    async def listed(ra: float, dec: float, boa: tuple[float, float] | None = None) -> bool:
        resp = await catalog.call(
            "ListImages",
            catalog_pb2.ListImagesRequest(caller=caller(OWNER), ob=ob(next_ob(), RUN, ra, dec, boa)),
        )
        return [i.fits_hash for i in resp.own] == [img.fits_hash]

    assert await listed(100.0, 0.0)
    assert await listed(100.12, 0.01)
    assert not await listed(100.06, 0.0)  # in the gap
    assert await listed(100.0, 0.0, boa=(100.12, 0.0))  # target and BOA star on different chips
    assert not await listed(100.0, 0.0, boa=(100.06, 0.0))  # BOA star in the gap


async def test_same_bytes_same_owner_is_the_same_image(catalog: Harness) -> None:
    run2 = "p2:60.A-9001(B)"
    await catalog.set_run(RUN, OWNER)
    await catalog.set_run(run2, OWNER)
    first = await catalog.upload(OWNER, next_ob(), RUN, "dup", [square(20.0, 20.0, 0.1)])
    ob2 = next_ob()
    begun = await catalog.call(
        "BeginUpload",
        catalog_pb2.BeginUploadRequest(
            caller=caller(OWNER), ob=ob(ob2, run2, 20.0, 20.0), fits_hash=first.fits_hash, size_bytes=10
        ),
    )
    assert begun.action == REUSE
    assert begun.existing.fits_hash == first.fits_hash and begun.existing.owned_by_caller
    assert begun.output_prefix == first.fits_key.removesuffix("original.fits")
    second = await catalog.call(
        "CompleteUpload",
        catalog_pb2.CompleteUploadRequest(
            caller=caller(OWNER),
            ob=ob(ob2, run2, 20.0, 20.0),
            lease_id=begun.lease_id,
            fits_hash=first.fits_hash,
            file_name="again.fits",
            filter="R",
            footprints=[square(20.0, 20.0, 0.1)],
        ),
    )
    assert second.fits_key == first.fits_key
    assert sorted(second.run_ids) == sorted([RUN, run2])  # now also used for the new OB's run
    assert await catalog.scalar("SELECT count(*) FROM images") == 1
    sel = await catalog.call("GetSelection", catalog_pb2.GetSelectionRequest(caller=caller(OWNER), ob_id=ob2))
    assert sel.value == first.fits_hash


async def test_two_owners_share_one_stored_content(catalog: Harness) -> None:
    other, run_b = "p2:2002", "p2:60.B-0002(A)"
    await catalog.set_run(RUN, OWNER)
    await catalog.set_run(run_b, other)
    a = await catalog.upload(OWNER, next_ob(), RUN, "shared-bytes", [square(30.0, 5.0, 0.1)])
    keys_before = await catalog.keys()
    b = await catalog.upload(other, next_ob(), run_b, "shared-bytes", [square(30.0, 5.0, 0.1)])
    assert b.owner_id == other and b.fits_key == a.fits_key
    assert await catalog.keys() == keys_before  # nothing stored twice
    usage = await catalog.call("GetUsage", catalog_pb2.GetUsageRequest())
    assert (usage.used_bytes, usage.image_count, usage.content_count) == (a.stored_bytes, 2, 1)

    # The first owner deletes: the content stays for the other.
    await catalog.call(
        "DeleteImage", catalog_pb2.DeleteImageRequest(caller=caller(OWNER), fits_hash=a.fits_hash)
    )
    assert await catalog.keys() == keys_before
    # The last one goes: so do the objects.
    await catalog.call(
        "DeleteImage", catalog_pb2.DeleteImageRequest(caller=caller(other), fits_hash=a.fits_hash)
    )
    assert await catalog.keys("content/") == []
    usage = await catalog.call("GetUsage", catalog_pb2.GetUsageRequest(reconcile=True))
    assert (usage.used_bytes, usage.image_count, usage.content_count) == (0, 0, 0)


async def test_abort_removes_what_was_written_and_changes_nothing(catalog: Harness) -> None:
    await catalog.set_run(RUN, OWNER)
    ob_id = next_ob()
    begun = await catalog.call(
        "BeginUpload",
        catalog_pb2.BeginUploadRequest(
            caller=caller(OWNER), ob=ob(ob_id, RUN, 1.0, 1.0), fits_hash=fits_hash("bad"), size_bytes=5
        ),
    )
    assert (
        begun.action == PROCESS and begun.output_prefix == f"content/{fits_hash('bad')}/g{begun.generation}/"
    )
    await catalog.write_objects(begun.output_prefix, "bad")
    await catalog.call("AbortUpload", catalog_pb2.AbortUploadRequest(lease_id=begun.lease_id))
    await catalog.call(
        "AbortUpload", catalog_pb2.AbortUploadRequest(lease_id=begun.lease_id)
    )  # twice: harmless
    assert await catalog.keys() == []
    assert await catalog.scalar("SELECT count(*) FROM images") == 0
    assert await catalog.scalar("SELECT count(*) FROM contents") == 0
    assert await catalog.scalar("SELECT count(*) FROM upload_leases") == 0
    # An aborted lease cannot be completed.
    await catalog.fails(
        "NOT_FOUND",
        "CompleteUpload",
        catalog_pb2.CompleteUploadRequest(
            caller=caller(OWNER),
            ob=ob(ob_id, RUN, 1.0, 1.0),
            lease_id=begun.lease_id,
            fits_hash=fits_hash("bad"),
        ),
    )


async def test_generations_differ_per_upload(catalog: Harness) -> None:
    await catalog.set_run(RUN, OWNER)
    reqs = [
        catalog_pb2.BeginUploadRequest(
            caller=caller(OWNER), ob=ob(next_ob(), RUN, 1.0, 1.0), fits_hash=fits_hash("same"), size_bytes=5
        )
        for _ in range(2)
    ]
    a, b = [await catalog.call("BeginUpload", r) for r in reqs]
    assert a.action == b.action == PROCESS
    assert a.generation != b.generation and a.output_prefix != b.output_prefix


async def test_p2api_runs_replace_setrun_data(catalog: Harness) -> None:
    """With Caller.runs (the p2api face), the catalog takes p2's answer for the runs of U."""
    run = "p2:0.C-0003(A)"  # never pushed by SetRun
    img = await catalog.upload("p2:77", next_ob(), run, "p2api", [square(40.0, 0.0, 0.1)], runs=[run])
    assert list(img.run_ids) == [run]
    listing = await catalog.call(
        "ListImages",
        catalog_pb2.ListImagesRequest(caller=caller("p2:78", [run]), ob=ob(next_ob(), run, 40.0, 0.0)),
    )
    assert [i.fits_hash for i in listing.shared] == [img.fits_hash]
    await catalog.fails(
        "FORBIDDEN",
        "ListImages",
        catalog_pb2.ListImagesRequest(caller=caller("p2:78", []), ob=ob(next_ob(), run, 40.0, 0.0)),
    )
    # Without runs the same user relies on SetRun data, where the run is unknown.
    await catalog.fails(
        "UNKNOWN_RUN",
        "ListImages",
        catalog_pb2.ListImagesRequest(caller=caller("p2:78"), ob=ob(next_ob(), run, 40.0, 0.0)),
    )
