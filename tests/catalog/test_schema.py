"""Migrations (idempotent, two replicas at once), the footprint index and exact
test, and health following the database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from services.catalog import footprint
from services.catalog.app import CatalogServer
from services.catalog.model import FootprintIn, SkyPoint
from services.catalog.repository import create_pool, migrate, migration_files
from services.shared.settings import CatalogSettings
from services.shared.store import LocalStore
from tests.catalog.conftest import TOKEN


async def test_two_replicas_migrate_at_once(db_url: str) -> None:
    a, b = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        done = await asyncio.gather(migrate(a), migrate(b))
        names = [name for _, name, _ in migration_files()]
        assert sorted(done, key=len) == [[], names]  # one applied everything, the other waited
        assert await migrate(a) == []  # and again: nothing
        assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
    finally:
        await a.close()
        await b.close()


def poly(*corners: tuple[float, float]) -> FootprintIn:
    return FootprintIn(0, tuple(SkyPoint(ra, dec) for ra, dec in corners), 1.0)


async def holds(conn: asyncpg.Connection, fp: FootprintIn, ra: float, dec: float) -> bool:
    """The exact test and the index together, as the compatible-images query runs them."""
    _, xyz = footprint.corner_arrays(fp)
    p = SkyPoint(ra, dec)
    x, y, z = footprint.unit_vector(p)
    exact = await conn.fetchval("SELECT footprint_holds($1::float8[], $2, $3, $4)", xyz, x, y, z)
    indexed = bool(set(footprint.cells(fp)) & set(footprint.point_keys(p)))
    if exact:
        assert indexed, "the index must find every footprint the exact test accepts"
    return bool(exact)


async def test_exact_footprint_test(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await migrate(conn)
        square = poly((10, -1), (12, -1), (12, 1), (10, 1))
        assert await holds(conn, square, 11, 0)
        assert await holds(conn, square, 10.01, 0.99)
        assert not await holds(conn, square, 12.01, 0)
        assert not await holds(conn, square, 191, 0)  # the antipode
        reversed_ = poly((10, 1), (12, 1), (12, -1), (10, -1))
        assert await holds(conn, reversed_, 11, 0)
        across_zero = poly((359, 0), (1, 0), (1, 2), (359, 2))
        assert await holds(conn, across_zero, 0.0, 1.0)
        assert await holds(conn, across_zero, 359.5, 1.0)
        assert not await holds(conn, across_zero, 2.0, 1.0)
        around_pole = poly((0, 88), (90, 88), (180, 88), (270, 88))
        assert await holds(conn, around_pole, 123, 89.9)
        assert not await holds(conn, around_pole, 45, 87.5)
        # An L shape (concave): the notch is outside.
        ell = poly((0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2))
        assert await holds(conn, ell, 0.5, 1.5)
        assert await holds(conn, ell, 1.5, 0.5)
        assert not await holds(conn, ell, 1.5, 1.5)
        # A big field is indexed by coarse cells, not thousands of order-10 ones.
        big = poly((100, -10), (110, -10), (110, 0), (100, 0))
        assert len(footprint.cells(big)) < 2000
        assert await holds(conn, big, 105, -5)
    finally:
        await conn.close()


async def test_health_follows_the_database(db_url: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(db_url)
    await migrate(conn)
    await conn.close()
    name = urlsplit(db_url).path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(urlsplit(db_url)._replace(path="/postgres")))
    pool = await create_pool(db_url, min_size=1, max_size=2)
    settings = CatalogSettings(port=0, database_url=SecretStr(db_url), service_token=SecretStr(TOKEN))
    server = CatalogServer(settings, pool, LocalStore(tmp_path / "store"))
    await server.start(background=False, health_interval=0.2)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)

    async def status() -> int:
        resp = await health.Check(health_pb2.HealthCheckRequest(service="bgimages.catalog.v1.CatalogService"))
        return int(resp.status)

    async def wait_for(want: int) -> None:
        for _ in range(100):
            if await status() == want:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"health never became {want}")

    try:
        assert await status() == health_pb2.HealthCheckResponse.SERVING
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await wait_for(health_pb2.HealthCheckResponse.SERVING)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await channel.close(None)
        await server.stop(0)
        await pool.close()


def test_nested_index_matches_cdshealpix() -> None:
    """The plain-Python HEALPix index used per query agrees with cdshealpix.

    (Points exactly on a cell corner, like RA 45 Dec 0, belong to several cells
    and the two conventions may differ there; a footprint holding such a point
    overlaps all of them, so either answer finds it.)"""
    import astropy.units as u
    import numpy as np
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix import nested

    rng = np.random.default_rng(3)
    ra = np.concatenate([rng.uniform(0, 360, 20000), [0.0, 90.0, 359.999999, 180.0, 45.0, 45.0001]])
    dec = np.concatenate(
        [np.degrees(np.arcsin(rng.uniform(-1, 1, 20000))), [90.0, -90.0, 0.0, 41.81, -41.81, 0.0]]
    )
    for order in (0, 5, footprint.ORDER):
        ref = nested.lonlat_to_healpix(Longitude(ra * u.deg), Latitude(dec * u.deg), order)
        mine = [footprint.nested_index(order, a, d) for a, d in zip(ra.tolist(), dec.tolist(), strict=True)]
        assert mine == ref.tolist()


def test_migrate_command_brings_the_schema_up_and_exits(db_url: str) -> None:
    """`python -m services.catalog migrate`: what the Kubernetes init container runs."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": db_url, "LOG_FORMAT": "text"}
    for _ in range(2):  # the second run finds nothing to do
        done = subprocess.run(
            [sys.executable, "-m", "services.catalog", "migrate"], env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr.decode()

    async def applied() -> int:
        conn = await asyncpg.connect(db_url)
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM schema_migrations")
            return count
        finally:
            await conn.close()

    assert asyncio.run(applied()) == len(migration_files())
    assert b"none needed" in done.stderr
