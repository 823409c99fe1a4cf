"""Catalog benchmark: the compatible-images query for random OBs among 1,000,000
images and 100,000 runs, through gRPC and inside the database; culling 10,000 images.

The data are generated once into a database `bench_catalog` (runs, members,
contents, images and associations by SQL generate_series; the footprints'
HEALPix cells by the catalog's own `footprint.cells`, in two processes) and
kept for the next run (in var/bench/catalog-pg, or BENCH_CATALOG_PG_DIR, unless
DATABASE_URL names a server); what a previous run culled is generated again. The catalog runs as
its own process (`python -m services.catalog`), the client here.

Reference, same run: a bare GIN lookup of one order-10 HEALPix cell among
the footprints over asyncpg (the floor the issue quotes: 0.18 ms p50,
0.47 ms p99 on PostgreSQL 16).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import math
import multiprocessing
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np

from bench.table import Row

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = int(os.environ.get("BENCH_CATALOG_IMAGES", 1_000_000))
N_RUNS = int(os.environ.get("BENCH_CATALOG_RUNS", 100_000))
N_USERS = N_RUNS // 2
QUERIES = int(os.environ.get("BENCH_CATALOG_QUERIES", 2000))
WARMUP = 200
CULL = min(10_000, N_IMAGES // 10)
STORED = 1_000_000  # bytes per content
DB = "bench_catalog"
TOKEN = "bench-token"
CATALOG_LOG = ROOT / "var" / "bench" / "catalog.log"
SEED = 20240611


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from services.shared import embedded_pg

    return embedded_pg.start(os.environ.get("BENCH_CATALOG_PG_DIR") or ROOT / "var" / "bench" / "catalog-pg")


def _field(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (uniform on the sky) and half-sizes (3' to 15') of image fields 1..n."""
    rng = np.random.default_rng(SEED)
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-0.998, 0.998, n)))
    half = rng.uniform(0.05, 0.25, n)
    return ra, dec, half


def _corners(ra: float, dec: float, half: float) -> list[tuple[float, float]]:
    dra = half / math.cos(math.radians(dec))
    return [
        ((ra - dra) % 360.0, dec - half),
        ((ra + dra) % 360.0, dec - half),
        ((ra + dra) % 360.0, dec + half),
        ((ra - dra) % 360.0, dec + half),
    ]


def _index_rows(args: tuple[list[int], list[float], list[float], list[float]]) -> list[tuple]:  # type: ignore[type-arg]
    """Footprint rows for some images, with the catalog's own index code (runs in a worker)."""
    from services.catalog import footprint
    from services.catalog.model import FootprintIn, SkyPoint

    ids, ras, decs, halves = args
    out = []
    for cid, ra, dec, half in zip(ids, ras, decs, halves, strict=True):
        fp = FootprintIn(0, tuple(SkyPoint(a, d) for a, d in _corners(ra, dec, half)), 0.3)
        flat, xyz = footprint.corner_arrays(fp)
        out.append((cid, 0, flat, xyz, 0.3, footprint.cells(fp)))
    return out


async def _ensure_database(server_url: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB):
            await conn.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await conn.close()
    return _with_db(server_url, DB)


async def _populate(conn: asyncpg.Connection) -> dict[str, float]:
    """Generates what is missing; returns the time each step took."""
    times: dict[str, float] = {}
    if await conn.fetchval("SELECT count(*) FROM runs") < N_RUNS:
        t = time.perf_counter()
        await conn.execute("TRUNCATE runs, run_members CASCADE")
        # Run k: PI user k mod N_USERS, delegates two other users.
        await conn.execute(
            """INSERT INTO runs (run_id, owner_id)
               SELECT 'p2:run-' || k, 'p2:u' || (k % $2) FROM generate_series(1, $1) k""",
            N_RUNS,
            N_USERS,
        )
        await conn.execute(
            """INSERT INTO run_members (user_id, run_id, is_owner)
               SELECT DISTINCT ON (u, k) u, 'p2:run-' || k, u = 'p2:u' || (k % $2)
               FROM generate_series(1, $1) k,
                    LATERAL (VALUES ('p2:u' || (k % $2)), ('p2:u' || ((k * 7 + 1) % $2)),
                                    ('p2:u' || ((k * 13 + 2) % $2))) v(u)""",
            N_RUNS,
            N_USERS,
        )
        times["runs"] = time.perf_counter() - t
    missing = [
        r["g"]
        for r in await conn.fetch(
            """SELECT g FROM generate_series(1, $1) g
               WHERE NOT EXISTS (SELECT 1 FROM contents c WHERE c.content_id = g)""",
            N_IMAGES,
        )
    ]
    if not missing:
        return times
    print(f"[bench] catalog: generating {len(missing)} images ...", file=sys.stderr, flush=True)
    ra, dec, half = _field(N_IMAGES)
    idx = np.asarray(missing) - 1
    t = time.perf_counter()
    chunks = []
    step = 20_000
    for s in range(0, len(missing), step):
        sel = idx[s : s + step]
        chunks.append(((sel + 1).tolist(), ra[sel].tolist(), dec[sel].tolist(), half[sel].tolist()))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        rows_chunks = pool.map(_index_rows, chunks)
    times["footprint cells (2 processes)"] = time.perf_counter() - t

    t = time.perf_counter()
    bulk = len(missing) > 100_000
    if bulk:
        await conn.execute("DROP INDEX IF EXISTS footprints_cells")
    await conn.execute(
        """INSERT INTO contents (content_id, fits_hash, generation, prefix, fits_key, preview_key,
                                 hips_prefix, hips_order, cut_low, cut_high, stored_bytes, image_count,
                                 created_at, last_used_at)
           SELECT g, h, g, p, p || 'original.fits', p || 'preview.png', p || 'hips/', 9, 0, 100, $2, 1,
                  now() - interval '400 days',
                  now() - (((hashtext(g::text) & 2147483647)::float8 / 2147483647) * interval '365 days')
           FROM unnest($1::bigint[]) g,
                LATERAL (SELECT md5(g::text) || md5('x' || g) AS h) hh,
                LATERAL (SELECT 'content/' || hh.h || '/g' || g || '/' AS p) pp""",
        missing,
        STORED,
    )
    for rows in rows_chunks:
        await conn.copy_records_to_table(
            "footprints",
            records=rows,
            columns=["content_id", "hdu", "corners", "xyz", "pixel_scale_arcsec", "cells"],
        )
    # Image g is uploaded by the PI of run r(g) for that run; a fifth are also used in a second run.
    await conn.execute(
        """INSERT INTO images (image_id, owner_id, fits_hash, content_id, file_name, filter, object_name,
                               created_at, last_used_at)
           SELECT g, r.owner_id, c.fits_hash, g, 'field-' || g || '.fits', 'R', 'field ' || g,
                  c.created_at, c.last_used_at
           FROM unnest($1::bigint[]) g
           JOIN contents c ON c.content_id = g
           JOIN runs r ON r.run_id = 'p2:run-' || ((g * 7919) % $2 + 1)""",
        missing,
        N_RUNS,
    )
    await conn.execute(
        """INSERT INTO image_runs (image_id, run_id)
           SELECT g, 'p2:run-' || ((g * 7919) % $2 + 1) FROM unnest($1::bigint[]) g
           UNION
           SELECT g, 'p2:run-' || ((g * 104729) % $2 + 1) FROM unnest($1::bigint[]) g WHERE g % 5 = 0""",
        missing,
        N_RUNS,
    )
    times["rows (COPY, INSERT ... SELECT)"] = time.perf_counter() - t
    if bulk:
        t = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("CREATE INDEX footprints_cells ON footprints USING gin (cells)")
        times["GIN index"] = time.perf_counter() - t
    await conn.execute("SELECT setval('contents_content_id_seq', (SELECT max(content_id) FROM contents))")
    await conn.execute("SELECT setval('images_image_id_seq', (SELECT max(image_id) FROM images))")
    await conn.execute("SELECT setval('content_generation', (SELECT max(generation) FROM contents))")
    await conn.execute(
        """UPDATE usage SET used_bytes = (SELECT coalesce(sum(stored_bytes), 0) FROM contents),
                            content_count = (SELECT count(*) FROM contents),
                            image_count = (SELECT count(*) FROM images)"""
    )
    await conn.execute("VACUUM ANALYZE")
    return times


def _queries(n: int) -> list[dict]:  # type: ignore[type-arg]
    """Random OBs: 70% at a point inside a random image, by a user with access to
    one of its runs (it lists); 30% by a random user at a random point."""
    ra, dec, half = _field(N_IMAGES)
    rng = random.Random(SEED + 1)
    out = []
    for _ in range(n):
        if rng.random() < 0.7:
            g = rng.randint(1, N_IMAGES)
            k = (g * 7919) % N_RUNS + 1
            user = rng.choice([k % N_USERS, (k * 7 + 1) % N_USERS, (k * 13 + 2) % N_USERS])
            r = math.radians(dec[g - 1])
            h = half[g - 1] * 0.8
            t_ra = (ra[g - 1] + rng.uniform(-h, h) / math.cos(r)) % 360.0
            t_dec = dec[g - 1] + rng.uniform(-h, h)
        else:
            user = rng.randrange(N_USERS)
            k = user if user > 0 else N_USERS
            t_ra, t_dec = rng.uniform(0, 360), math.degrees(math.asin(rng.uniform(-1, 1)))
        out.append({"user": f"p2:u{user}", "run": f"p2:run-{k}", "ra": t_ra, "dec": t_dec})
    return out


def _start_catalog(
    db_url: str, store_dir: Path, port: int, capacity: int, low: float
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CATALOG_PORT": str(port),
        "SERVICE_TOKEN": TOKEN,
        "STORE_DIR": str(store_dir),
        "STORE_CAPACITY_BYTES": str(capacity),
        "CULL_HIGH_WATER": "1.0",
        "CULL_LOW_WATER": repr(low),
        "CULL_INTERVAL_S": "86400",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
    }
    log = open(CATALOG_LOG, "wb")  # noqa: SIM115 - the child keeps it; closed when this process ends
    return subprocess.Popen(
        [sys.executable, "-m", "services.catalog"], cwd=ROOT, env=env, stdout=log, stderr=log
    )


async def _wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError("the catalog exited")
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("catalog not serving")


async def _measure(db_url: str) -> list[Row]:
    from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
    from bgimages.common.v1 import common_pb2
    from services.catalog import footprint
    from services.catalog.model import Caller, SkyPoint
    from services.catalog.repository import LISTING, Repository, create_pool, listing_args, migrate
    from services.shared import grpc_client

    rows: list[Row] = []
    conn = await asyncpg.connect(db_url)
    try:
        await migrate(conn)
        times = await _populate(conn)
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM images) AS i, (SELECT count(*) FROM runs) AS r,
                      (SELECT count(*) FROM footprints) AS f,
                      (SELECT avg(cardinality(cells)) FROM footprints) AS cells,
                      (SELECT used_bytes FROM usage) AS used"""
        )
    finally:
        await conn.close()
    for step, secs in times.items():
        rows.append(Row("catalog", f"generate: {step}", secs, None, "s"))
    scale = f"{counts['i']:,} images, {counts['r']:,} runs"
    queries = _queries(WARMUP + QUERIES)

    # Inside the database: the one statement ListImages runs (access check, compatible images
    # with the exact test, selection, tombstones), its execution time (EXPLAIN ANALYZE) and over asyncpg.
    pool = await create_pool(db_url, min_size=1, max_size=2)
    repo = Repository(pool)
    plan_ms: list[float] = []
    rt_ms: list[float] = []
    gin_ms: list[float] = []
    hits = 0
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=90)
    async with pool.acquire() as c:
        for n, q in enumerate(queries):
            p = SkyPoint(q["ra"], q["dec"])
            key = (footprint.point_keys(p), footprint.unit_vector(p))
            caller = Caller(q["user"])
            ob_id = 10_000_000 + n
            t = time.perf_counter()
            _, found, _, _, _ = await repo.listing(c, caller, ob_id, q["run"], key, None, since)
            rt = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            await c.fetch("SELECT content_id FROM footprints WHERE cells && $1::bigint[]", key[0][-1:])
            gin = (time.perf_counter() - t) * 1e3
            if n >= WARMUP:
                rt_ms.append(rt)
                gin_ms.append(gin)
                hits += bool(found)
            if n >= WARMUP and n < WARMUP + 500:
                plan = await c.fetchval(
                    "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + LISTING,
                    *listing_args(caller, ob_id, q["run"], key, None, since),
                )
                plan_ms.append(float(json.loads(plan)[0]["Execution Time"]))
    await pool.close()

    # Through gRPC: the catalog as its own process, ListImages (access check, compatible
    # images with the exact test, the OB's selection, the caller's tombstones).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store_dir = ROOT / "var" / "bench" / "catalog-store"
    low = (counts["used"] - CULL * STORED + STORED // 2) / counts["used"]
    proc = _start_catalog(db_url, store_dir, port, counts["used"], low)
    try:
        await _wait_serving(port, proc)
        channel = grpc_client.channel(f"127.0.0.1:{port}", TOKEN)
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        grpc_ms: list[float] = []
        listed = 0
        gc.collect()
        gc.freeze()  # the generated data stay out of the client's collector passes
        for n, q in enumerate(queries):
            req = catalog_pb2.ListImagesRequest(
                caller=catalog_pb2.Caller(user_id=q["user"]),
                ob=common_pb2.ObContext(
                    ob_id=10_000_000 + n,
                    run_id=q["run"],
                    target=common_pb2.SkyPosition(ra_deg=q["ra"], dec_deg=q["dec"]),
                ),
            )
            t = time.perf_counter()
            resp = await stub.ListImages(req, timeout=10)
            ms = (time.perf_counter() - t) * 1e3
            if n >= WARMUP:
                grpc_ms.append(ms)
                listed += len(resp.own) + len(resp.shared) > 0
        p99 = _pct(grpc_ms, 99)
        rows += [
            Row(
                "catalog",
                f"compatible images via gRPC ListImages p50 ({scale})",
                _pct(grpc_ms, 50),
                _pct(gin_ms, 50),
                "ms",
                "bare GIN lookup of 1 cell",
            ),
            Row(
                "catalog",
                "compatible images via gRPC ListImages p99",
                p99,
                _pct(gin_ms, 99),
                "ms",
                "bare GIN lookup of 1 cell",
                goal="p99 < 2 ms",
                met=p99 < 2.0,
                note=f"{QUERIES} random OBs, {listed} with images listed",
            ),
            Row("catalog", "ListImages statement over asyncpg p50", _pct(rt_ms, 50), None, "ms"),
            Row("catalog", "ListImages statement over asyncpg p99", _pct(rt_ms, 99), None, "ms"),
            Row(
                "catalog",
                "ListImages statement in PostgreSQL (EXPLAIN ANALYZE) p50",
                _pct(plan_ms, 50),
                None,
                "ms",
            ),
            Row(
                "catalog",
                "ListImages statement in PostgreSQL (EXPLAIN ANALYZE) p99",
                _pct(plan_ms, 99),
                None,
                "ms",
                note=f"{len(plan_ms)} queries; avg {counts['cells']:.1f} cells a footprint",
            ),
        ]

        # Culling: objects for the CULL contents used longest ago, then one Cull through gRPC.
        conn = await asyncpg.connect(db_url)
        try:
            oldest = await conn.fetch(
                "SELECT prefix FROM contents ORDER BY last_used_at, content_id LIMIT $1", CULL
            )
        finally:
            await conn.close()
        from services.shared.store import LocalStore

        store = LocalStore(store_dir)
        for r in oldest:
            store.put_bytes_sync(r["prefix"] + "original.fits", b"F" * 2880)
            store.put_bytes_sync(r["prefix"] + "hips/properties", b"hips_order = 9\n")
        t = time.perf_counter()
        culled = await stub.Cull(catalog_pb2.CullRequest(force=True), timeout=600)
        cull_s = time.perf_counter() - t
        left = sum(1 for p in (store.root / "content").rglob("*") if p.is_file())
        split = re.findall(r"rows ([\d.]+) s, objects ([\d.]+) s", CATALOG_LOG.read_text(errors="replace"))
        rows_s = sum(float(a) for a, _ in split)
        objects_s = sum(float(b) for _, b in split)
        rows.append(
            Row(
                "catalog",
                f"cull {len(culled.culled):,} images (rows, tombstones, objects)",
                cull_s,
                None,
                "s",
                note=f"rows {rows_s:.2f} s, objects {objects_s:.2f} s; {left}/{2 * len(oldest)} left",
            )
        )
        await channel.close(None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def run() -> list[Row]:
    return asyncio.run(_main())


async def _main() -> list[Row]:
    server = await asyncio.to_thread(_server_url)
    db_url = await _ensure_database(server)
    return await _measure(db_url)
