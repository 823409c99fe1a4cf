"""The catalog served on port 0 in-process, called over a real gRPC channel with
the service token, against a fresh PostgreSQL database and a local store."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from pydantic import SecretStr

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from bgimages.common.v1 import common_pb2
from services.catalog.app import CatalogServer
from services.catalog.repository import create_pool, migrate
from services.shared import grpc_client
from services.shared.errors import ServiceError
from services.shared.settings import CatalogSettings
from services.shared.store import LocalStore, ObjectStore

TOKEN = "catalog-test-token"
CONTENT_BYTES = 1024  # what write_objects stores for one upload
_counter = itertools.count(1)


def fits_hash(label: str) -> str:
    """The SHA-256 of some bytes standing for one uploaded file."""
    return hashlib.sha256(label.encode()).hexdigest()


def square(ra: float, dec: float, half_deg: float, hdu: int = 0) -> catalog_pb2.Footprint:
    """A square footprint centred on (ra, dec), half_deg from centre to edge."""
    dra = half_deg / math.cos(math.radians(dec))
    corners = [
        (ra - dra, dec - half_deg),
        (ra + dra, dec - half_deg),
        (ra + dra, dec + half_deg),
        (ra - dra, dec + half_deg),
    ]
    return catalog_pb2.Footprint(
        hdu=hdu,
        corners=[common_pb2.SkyPosition(ra_deg=a % 360, dec_deg=d) for a, d in corners],
        pixel_scale_arcsec=0.3,
    )


def caller(user: str, runs: Sequence[str] | None = None) -> catalog_pb2.Caller:
    msg = catalog_pb2.Caller(user_id=user)
    if runs is not None:
        msg.runs.run_ids.extend(runs)
    return msg


def ob(
    ob_id: int, run_id: str, ra: float, dec: float, boa: tuple[float, float] | None = None
) -> common_pb2.ObContext:
    msg = common_pb2.ObContext(
        ob_id=ob_id, run_id=run_id, target=common_pb2.SkyPosition(ra_deg=ra, dec_deg=dec)
    )
    if boa is not None:
        msg.boa_star.CopyFrom(common_pb2.SkyPosition(ra_deg=boa[0], dec_deg=boa[1]))
    return msg


@dataclasses.dataclass
class Harness:
    stub: Any
    server: CatalogServer
    pool: asyncpg.Pool
    store: ObjectStore
    db_url: str

    async def call(self, method: str, request: Any) -> Any:
        """One RPC; a failure raises the ServiceError the server sent."""
        return await grpc_client.call(getattr(self.stub, method), request, timeout=30)

    async def fails(self, code: str, method: str, request: Any) -> ServiceError:
        with pytest.raises(ServiceError) as err:
            await self.call(method, request)
        assert err.value.code == code, f"{method}: expected {code}, got {err.value.code}: {err.value.message}"
        return err.value

    async def set_run(self, run_id: str, owner: str, delegates: Sequence[str] = ()) -> None:
        await self.call(
            "SetRun", catalog_pb2.SetRunRequest(run_id=run_id, owner_id=owner, delegate_ids=list(delegates))
        )

    async def add_products(
        self,
        req: catalog_pb2.CompleteUploadRequest,
        begun: catalog_pb2.BeginUploadResponse,
        label: str,
    ) -> None:
        """For new content, writes what the processor would and names it in `req`."""
        if begun.action != catalog_pb2.BeginUploadResponse.PROCESS:
            return
        p = begun.output_prefix
        req.stored_bytes = await self.write_objects(p, label)
        req.fits_key, req.preview_key, req.hips_prefix = (p + "original.fits", p + "preview.png", p + "hips/")
        req.hips_order, req.cut_low, req.cut_high = 3, 1.0, 99.0

    async def write_objects(self, prefix: str, label: str) -> int:
        """What the processor writes under a prefix (small stand-ins of the real files)."""
        seed = hashlib.sha256(label.encode()).digest()
        files = {
            "original.fits": (seed * 32)[:1000],
            "preview.png": b"\x89PNG" + seed[:4],
            "hips/properties": b"hips_order = 3\n",
            "hips/Norder3/Dir0/Npix1.png": b"t",
        }
        for name, data in files.items():
            await self.store.put_bytes(prefix + name, data)
        return sum(len(d) for d in files.values())

    async def upload(
        self,
        user: str,
        ob_id: int,
        run_id: str,
        label: str,
        footprints: Sequence[catalog_pb2.Footprint],
        target: tuple[float, float] | None = None,
        runs: Sequence[str] | None = None,
        file_name: str = "",
    ) -> catalog_pb2.Image:
        """The gateway's side of an upload whose validation passed."""
        h = fits_hash(label)
        first = footprints[0].corners
        if target is None:
            target = (
                sum(c.ra_deg for c in first) / len(first),
                sum(c.dec_deg for c in first) / len(first),
            )
        the_ob = ob(ob_id, run_id, *target)
        begun = await self.call(
            "BeginUpload",
            catalog_pb2.BeginUploadRequest(
                caller=caller(user, runs), ob=the_ob, fits_hash=h, size_bytes=1000
            ),
        )
        req = catalog_pb2.CompleteUploadRequest(
            caller=caller(user, runs),
            ob=the_ob,
            lease_id=begun.lease_id,
            fits_hash=h,
            file_name=file_name or f"{label}.fits",
            filter="R",
            object_name=label,
            footprints=list(footprints),
        )
        await self.add_products(req, begun, label)
        image: catalog_pb2.Image = await self.call("CompleteUpload", req)
        return image

    async def keys(self, prefix: str = "") -> list[str]:
        return sorted([info.key async for info in self.store.list(prefix)])

    async def scalar(self, sql: str, *args: Any) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)


def next_ob() -> int:
    return 1000 + next(_counter)


async def start_catalog(
    db_url: str, store: ObjectStore, background: bool = False, **overrides: Any
) -> tuple[CatalogServer, asyncpg.Pool]:
    conn = await asyncpg.connect(db_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    settings = CatalogSettings(
        port=0,
        database_url=SecretStr(db_url),
        service_token=SecretStr(TOKEN),
        bind_host="127.0.0.1",
        **overrides,
    )
    pool = await create_pool(db_url, max_size=overrides.get("db_pool_size", 10))
    server = CatalogServer(settings, pool, store)
    await server.start(background=background)
    return server, pool


@pytest.fixture
async def catalog(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    store = LocalStore(tmp_path / "store")
    server, pool = await start_catalog(db_url, store)
    channel = grpc_client.channel(f"127.0.0.1:{server.port}", TOKEN)
    try:
        yield Harness(catalog_pb2_grpc.CatalogServiceStub(channel), server, pool, store, db_url)
    finally:
        await channel.close(None)
        await server.stop(0)
        await pool.close()


async def gather_results(*aws: Awaitable[Any]) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*aws, return_exceptions=True))


__all__ = ["grpc"]
