"""The orphan sweep, against both object stores: what no row references and no
live lease covers goes; rows' objects, live uploads and young objects stay."""

from __future__ import annotations

import asyncio

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.images import Images
from services.catalog.model import Caller
from services.catalog.repository import Repository
from services.shared import grpc_client
from services.shared.errors import Code, ServiceError
from services.shared.store import LocalStore, ObjectStore, S3Store
from tests.catalog.conftest import TOKEN, Harness, caller, fits_hash, next_ob, ob, square, start_catalog

RUN, OWNER = "p2:60.S-0001(A)", "p2:31"


class StoreThatCannotDelete:
    """A store whose removals fail, as in a crash right after the commit."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        raise ServiceError(Code.STORE_UNAVAILABLE, "gone away")


async def begin(h: Harness, label: str) -> catalog_pb2.BeginUploadResponse:
    resp: catalog_pb2.BeginUploadResponse = await h.call(
        "BeginUpload",
        catalog_pb2.BeginUploadRequest(
            caller=caller(OWNER), ob=ob(next_ob(), RUN, 5.0, 5.0), fits_hash=fits_hash(label)
        ),
    )
    return resp


async def expire(h: Harness, lease_id: str) -> None:
    async with h.pool.acquire() as conn:
        await conn.execute(
            "UPDATE upload_leases SET expires_at = now() - interval '1 second' WHERE lease_id = $1::uuid",
            lease_id,
        )


async def test_sweep_removes_orphans_only(db_url: str, store: LocalStore | S3Store) -> None:
    server, pool = await start_catalog(db_url, store, lease_ttl_s=3)
    channel = grpc_client.channel(f"127.0.0.1:{server.port}", TOKEN)
    h = Harness(catalog_pb2_grpc.CatalogServiceStub(channel), server, pool, store, db_url)
    try:
        await h.set_run(RUN, OWNER)
        kept = await h.upload(OWNER, next_ob(), RUN, "kept", [square(5.0, 5.0, 0.1)])
        # An upload that died after writing its objects (its lease has run out).
        dead = await begin(h, "dead")
        await h.write_objects(dead.output_prefix, "dead")
        await expire(h, dead.lease_id)
        # A removal interrupted after its commit: rows gone, objects left.
        interrupted = await h.upload(OWNER, next_ob(), RUN, "interrupted", [square(5.0, 5.0, 0.1)])
        crashing = Images(Repository(pool), StoreThatCannotDelete(store), 90)  # type: ignore[arg-type]
        await crashing.delete(Caller(OWNER), interrupted.fits_hash)
        assert await h.keys(f"content/{interrupted.fits_hash}/")
        # A content deleted during a reuse upload, whose upload then died.
        zero = await h.upload(OWNER, next_ob(), RUN, "zero", [square(5.0, 5.0, 0.1)])
        reuse = await begin(h, "zero")
        assert reuse.action == catalog_pb2.BeginUploadResponse.REUSE_CONTENT
        await h.call(
            "DeleteImage", catalog_pb2.DeleteImageRequest(caller=caller(OWNER), fits_hash=zero.fits_hash)
        )
        assert await h.keys(f"content/{zero.fits_hash}/")  # held by the lease
        await expire(h, reuse.lease_id)
        await store.put_bytes("staging/old-upload", b"x" * 10)

        await asyncio.sleep(3.2)  # the objects above are now older than the lease TTL

        live = await begin(h, "live")
        await h.write_objects(live.output_prefix, "live")
        young = await begin(h, "young")
        await h.write_objects(young.output_prefix, "young")
        await expire(h, young.lease_id)
        await store.put_bytes("staging/new-upload", b"y" * 10)

        # min_age 2: S3 modification times are whole seconds.
        resp = await h.call("Sweep", catalog_pb2.SweepRequest(min_age_seconds=2))
        keys = await h.keys()
        prefixes = {"/".join(k.split("/")[:3]) + "/" for k in keys if k.startswith("content/")}
        assert prefixes == {
            kept.fits_key.removesuffix("original.fits"),
            live.output_prefix,
            young.output_prefix,  # an orphan, but younger than min_age
        }
        assert "staging/old-upload" not in keys and "staging/new-upload" in keys
        assert resp.removed_objects == 3 * 4 + 1
        assert await h.scalar("SELECT count(*) FROM upload_leases") == 1  # the live one
        assert await h.scalar("SELECT count(*) FROM contents") == 1
        usage = await h.call("GetUsage", catalog_pb2.GetUsageRequest())
        reconciled = await h.call("GetUsage", catalog_pb2.GetUsageRequest(reconcile=True))
        assert usage == reconciled
    finally:
        await channel.close(None)
        await server.stop(0)
        await pool.close()
