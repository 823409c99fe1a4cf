"""Races over real concurrent connections (one gRPC connection per client, a pool
of PostgreSQL connections in the server): a use against a cull, and a re-upload
of the same bytes against their deletion."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared import grpc_client
from services.shared.errors import ServiceError
from services.shared.store import LocalStore
from tests.catalog.conftest import CONTENT_BYTES, TOKEN, Harness, caller, next_ob, ob, square, start_catalog

RUN, OWNER, OTHER, RUN_B = "p2:60.R-0001(A)", "p2:21", "p2:22", "p2:60.R-0002(A)"
USER_IMAGE = catalog_pb2.SELECTION_KIND_USER_IMAGE
N, K = 10, 4  # contents per round; of which the first K (the oldest) are being used during the cull


@pytest.fixture
async def racy(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    store = LocalStore(tmp_path / "store")
    # The low mark leaves room for K contents and half of one more: a cull removes exactly N - K.
    low = (K * CONTENT_BYTES + CONTENT_BYTES // 2) / (N * CONTENT_BYTES)
    server, pool = await start_catalog(
        db_url, store, capacity_bytes=N * CONTENT_BYTES, high_water=0.95, low_water=low, db_pool_size=12
    )
    channel = grpc_client.channel(f"127.0.0.1:{server.port}", TOKEN)
    try:
        yield Harness(catalog_pb2_grpc.CatalogServiceStub(channel), server, pool, store, db_url)
    finally:
        await channel.close(None)
        await server.stop(0)
        await pool.close()


class Client:
    """A client with a gRPC connection of its own."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = catalog_pb2_grpc.CatalogServiceStub(self.channel)

    async def call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(
                request, metadata=(("x-service-token", TOKEN),), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            raise grpc_client.error_from_rpc(exc) from None

    async def close(self) -> None:
        await self.channel.close(None)


async def consistent(h: Harness) -> set[str]:
    """No row without objects, no content objects without a row, usage exact.
    Returns the prefixes of the content rows."""
    async with h.pool.acquire() as conn:
        rows = await conn.fetch("SELECT prefix, fits_key, preview_key, hips_prefix FROM contents")
        counted = await conn.fetchrow("SELECT used_bytes, content_count, image_count FROM usage")
        real = await conn.fetchrow(
            """SELECT coalesce(sum(stored_bytes), 0) AS b, count(*) AS c,
                      (SELECT count(*) FROM images) AS i FROM contents"""
        )
        bad_counts = await conn.fetchval(
            """SELECT count(*) FROM contents c
               WHERE c.image_count <> (SELECT count(*) FROM images i WHERE i.content_id = c.content_id)"""
        )
    prefixes = {r["prefix"] for r in rows}
    for r in rows:
        for key in (r["fits_key"], r["preview_key"], r["hips_prefix"] + "properties"):
            assert await h.store.stat(key) is not None, f"row without object {key}"
    stored = {"/".join(k.split("/")[:3]) + "/" for k in await h.keys("content/")}
    assert stored == prefixes, f"objects without rows: {stored - prefixes}"
    assert tuple(counted) == (real["b"], real["c"], real["i"])
    assert bad_counts == 0
    return prefixes


async def test_use_against_cull(racy: Harness) -> None:
    await racy.set_run(RUN, OWNER)
    clients = [Client(racy.server.port) for _ in range(K + 1)]
    won = lost = 0
    rng = random.Random(5)
    try:
        for round_ in range(25):
            images = [
                await racy.upload(OWNER, next_ob(), RUN, f"r{round_}-{n}", [square(60.0 + n, 0.0, 0.1)])
                for n in range(N)
            ]
            targets = images[:K]
            obs = [next_ob() for _ in targets]

            async def use(
                i: int, obs: list[int] = obs, targets: list[catalog_pb2.Image] = targets
            ) -> catalog_pb2.Selection | ServiceError:
                await asyncio.sleep(rng.random() * 0.004)
                try:
                    sel: catalog_pb2.Selection = await clients[i].call(
                        "Select",
                        catalog_pb2.SelectRequest(
                            caller=caller(OWNER),
                            ob=ob(obs[i], RUN, 60.0 + i, 0.0),
                            kind=USER_IMAGE,
                            value=targets[i].fits_hash,
                        ),
                    )
                    return sel
                except ServiceError as err:
                    return err

            async def cull() -> catalog_pb2.CullResponse:
                await asyncio.sleep(rng.random() * 0.004)
                resp: catalog_pb2.CullResponse = await clients[K].call("Cull", catalog_pb2.CullRequest())
                return resp

            cull_task = asyncio.create_task(cull())
            uses = await asyncio.gather(*(use(i) for i in range(K)))
            culled = await cull_task
            culled_hashes = {t.fits_hash for t in culled.culled}
            assert len(culled_hashes) == N - K
            for i, result in enumerate(uses):
                h = targets[i].fits_hash
                if isinstance(result, ServiceError):
                    # The cull committed first: the use is refused as "culled".
                    assert result.code == "GONE" and result.details["reason"] == "culled", result
                    assert h in culled_hashes
                    lost += 1
                else:
                    # The use committed first: it is not lost.
                    assert h not in culled_hashes
                    got = await racy.call(
                        "GetSelection", catalog_pb2.GetSelectionRequest(caller=caller(OWNER), ob_id=obs[i])
                    )
                    assert got.value == h and got.image.fits_hash == h
                    won += 1
            prefixes = await consistent(racy)
            assert len(prefixes) == K
            for image in images:  # clear the round
                try:
                    await racy.call(
                        "DeleteImage",
                        catalog_pb2.DeleteImageRequest(caller=caller(OWNER), fits_hash=image.fits_hash),
                    )
                except ServiceError as err:
                    assert err.code == "GONE"
            assert await consistent(racy) == set()
    finally:
        for c in clients:
            await c.close()
    print(f"use-vs-cull: {won} uses won, {lost} lost to the cull")
    assert won > 0


@pytest.mark.parametrize("uploader", [OTHER, OWNER])
async def test_reupload_against_delete(racy: Harness, uploader: str) -> None:
    """The owner deletes while `uploader` uploads the same bytes: the new image keeps its objects."""
    await racy.set_run(RUN, OWNER)
    await racy.set_run(RUN_B, OTHER, [OWNER])
    clients = [Client(racy.server.port) for _ in range(2)]
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    try:
        for round_ in range(25):
            label = f"del-{round_}"
            first = await racy.upload(OWNER, next_ob(), RUN, label, [square(70.0, 0.0, 0.1)])

            async def delete(first: catalog_pb2.Image = first) -> str:
                await asyncio.sleep(rng.random() * 0.004)
                await clients[0].call(
                    "DeleteImage",
                    catalog_pb2.DeleteImageRequest(caller=caller(OWNER), fits_hash=first.fits_hash),
                )
                return "deleted"

            async def reupload(first: catalog_pb2.Image = first, label: str = label) -> catalog_pb2.Image:
                await asyncio.sleep(rng.random() * 0.004)
                the_ob = ob(next_ob(), RUN_B, 70.0, 0.0)
                begun = await clients[1].call(
                    "BeginUpload",
                    catalog_pb2.BeginUploadRequest(
                        caller=caller(uploader), ob=the_ob, fits_hash=first.fits_hash
                    ),
                )
                req = catalog_pb2.CompleteUploadRequest(
                    caller=caller(uploader),
                    ob=the_ob,
                    lease_id=begun.lease_id,
                    fits_hash=first.fits_hash,
                    file_name="again.fits",
                    footprints=[square(70.0, 0.0, 0.1)],
                )
                await racy.add_products(req, begun, label)
                image: catalog_pb2.Image = await clients[1].call("CompleteUpload", req)
                key = "reuse" if begun.action == catalog_pb2.BeginUploadResponse.REUSE_CONTENT else "process"
                outcomes[key] = outcomes.get(key, 0) + 1
                return image

            _, image = await asyncio.gather(delete(), reupload())
            prefixes = await consistent(racy)
            try:
                own = await racy.call(
                    "GetImage",
                    catalog_pb2.GetImageRequest(caller=caller(uploader), fits_hash=first.fits_hash),
                )
            except ServiceError as err:
                # Only the owner's own re-upload can be undone by the delete that came after it.
                assert uploader == OWNER and err.code == "GONE", err
                assert prefixes == set()
            else:
                # Whatever the order, the new image is there with its objects.
                assert own.owner_id == uploader
                assert own.fits_key.removesuffix("original.fits") in prefixes
            # Clear the round.
            for user in (OTHER, OWNER):  # the other first: the owner, a delegate of RUN_B, may list it
                try:
                    await racy.call(
                        "DeleteImage",
                        catalog_pb2.DeleteImageRequest(caller=caller(user), fits_hash=first.fits_hash),
                    )
                except ServiceError as err:
                    assert err.code in ("GONE", "NOT_FOUND", "FORBIDDEN")  # FORBIDDEN: listed, not owned
            assert await consistent(racy) == set()
            del image
    finally:
        for c in clients:
            await c.close()
    print(f"re-upload vs delete ({uploader}): {outcomes}")
