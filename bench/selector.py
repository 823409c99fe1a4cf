"""Selector section: the listing with the new sources against the listing without them.

A suite runs as processes (services.devrun.Suite, its development TAP service
standing in for the Gaia archive), with BENCH_LISTING_IMAGES (12) images on
the OB's field. The gateway's selector (`Selector.list_images`, in this
process, over real gRPC to the suite's catalog) lists the OB with the new
sources: the named surveys, the Gaia image and the archive's images (one
listed on this field), their keys looked up in the catalog's one listing
query, the Gaia catalogue's state and the archive's answer from their caches.
Against it, in the same run, alternating: the catalog's `ListImages` as the
listing called it before them (no source key, no state, no archive). The HTTP layer above both is the same,
so the ratio of the end-to-end listing is at most this one. Median of
BENCH_LISTING_RUNS (300) calls of each. Goal (issue 14): <= 1.2x.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.table import Row
from bench.upload import RUN, USER, running_suite

GOAL_RATIO = 1.2
TARGET = (150.0, 2.0)
OB_ID = 4242


async def _upload_images(suite: object, folder: Path, count: int) -> None:
    from services import devworld

    headers = {"Authorization": f"Bearer {suite.token(USER)}"}  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            path = devworld.write_field(folder / f"field{n}.fits", TARGET, 256 + 2 * n, 2.0, filter_name="R")
            form = aiohttp.FormData()
            for key, value in (("run_id", RUN), ("target_ra", "150.0"), ("target_dec", "2.0")):
                form.add_field(key, value)
            form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/fits")
            url = f"{suite.gateway_url}/api/v1/obs/{OB_ID + 1 + n}/background-images"  # type: ignore[attr-defined]
            async with http.post(url, data=form, headers=headers) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"upload {n}: {resp.status} {await resp.text()}")


async def _measure(workdir: Path) -> list[Row]:
    from bgimages.catalog.v1 import catalog_pb2
    from bgimages.common.v1 import common_pb2
    from services.gateway import factory
    from services.shared.grpc_client import call
    from services.shared.settings import GatewaySettings, load

    runs = int(os.environ.get("BENCH_LISTING_RUNS", "300"))
    count = int(os.environ.get("BENCH_LISTING_IMAGES", "12"))
    async with running_suite(workdir, {}) as suite:
        await _upload_images(suite, workdir, count)
        settings = load(GatewaySettings, suite.env)
        gateway = factory.build(settings)
        try:
            caller = catalog_pb2.Caller(user_id=USER)
            ob = common_pb2.ObContext(
                ob_id=OB_ID,
                run_id=RUN,
                target=common_pb2.SkyPosition(ra_deg=TARGET[0], dec_deg=TARGET[1]),
                instrument="FORS2",
            )
            plain = catalog_pb2.ListImagesRequest(caller=caller, ob=ob)
            offer = await gateway.selector.list_images(caller, ob)  # warm: channel, probe, caches
            assert offer.gaia.status.available and len(offer.listing.shared) + len(offer.listing.own) == count
            assert offer.archive.found.available and len(offer.archive.entries) == 1
            with_gaia: list[float] = []
            without: list[float] = []
            for n in range(runs):
                if n % 100 == 0:
                    print(f"[bench] selector: listings ({n}/{runs})", file=sys.stderr, flush=True)
                for first in (True, False) if n % 2 == 0 else (False, True):
                    t0 = time.perf_counter()
                    if first:
                        await gateway.selector.list_images(caller, ob)
                    else:
                        await call(gateway.selector.catalog.ListImages, plain)
                    (with_gaia if first else without).append(time.perf_counter() - t0)
        finally:
            await gateway.close()
    ours, reference = statistics.median(with_gaia) * 1000, statistics.median(without) * 1000
    return [
        Row(
            "selector",
            f"listing of an OB with {count} images, with surveys, Gaia and archive entries",
            ours,
            reference,
            "ms",
            "the listing without them",
            f"ratio <= {GOAL_RATIO}",
            ours <= GOAL_RATIO * reference,
            f"median of {runs} each, alternating, over gRPC to the catalog",
        )
    ]


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-selector-") as tmp:
        return asyncio.run(_measure(Path(tmp)))
