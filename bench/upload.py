"""Upload throughput of the gateway against a direct object-store put of the same file.

The suite runs as processes (services.devrun.Suite). The gateway receives the
file over HTTP (raw body, streamed from disk by the client), hashes it and
streams it into a staging object; the validator reads its headers and refuses
it (the OB target lies outside, so no processing follows), and the gateway
answers 422. That wall time against `store.put_stream` of the same file into
the same store, in the same run, is the ratio (goal >= 0.7). The gateway's
peak resident memory growth during the upload is reported too (goal < 100 MB).

Settings: BENCH_UPLOAD_MB (default 1024) for the local store, BENCH_UPLOAD_S3_MB
(default 256; 0 skips) against moto's S3 server, DATABASE_URL (else embedded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np

from bench.table import Row
from services.devrun import Suite, free_port
from services.shared.store import LocalStore, ObjectStore, S3Store
from tests.fitsgen import streamed_tan_header

RUN = "p2:60.A-9000(B)"
USER = "p2:bench"


def big_fits(path: Path, megabytes: int) -> Path:
    """A float32 TAN image of about `megabytes` MB with real (non-zero, non-sparse) pixels."""
    side = int(np.sqrt(megabytes * (1 << 20) / 4))
    rng = np.random.default_rng(1)
    rows = max(1, (8 << 20) // (side * 4))
    with path.open("wb") as out:
        out.write(streamed_tan_header(side))
        done = 0
        while done < side:
            n = min(rows, side - done)
            out.write(rng.normal(100, 5, (n, side)).astype(">f4").tobytes())
            done += n
        out.write(b"\0" * (-out.tell() % 2880))
    return path


def rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, size):
            yield chunk


async def gateway_upload(suite: Suite, path: Path, ob_id: int) -> tuple[float, int, int]:
    """Seconds for one upload the validator refuses; the gateway's RSS growth (peak, sampled) in KB."""
    pid = suite.procs["gateway"].pid
    base = rss_kb(pid)
    peak_sampled = base
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_sampled
        while not done.is_set():
            peak_sampled = max(peak_sampled, rss_kb(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    params = {"run_id": RUN, "target_ra": "10", "target_dec": "-60", "file_name": path.name}
    headers = {
        "Authorization": f"Bearer {suite.token(USER)}",
        "Content-Type": "application/fits",
        "Content-Length": str(path.stat().st_size),
    }
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        async with http.post(
            f"{suite.gateway_url}/api/v1/obs/{ob_id}/background-images",
            params=params,
            data=_file_chunks(path),
            headers=headers,
        ) as resp:
            body = await resp.json(content_type=None)
        elapsed = time.perf_counter() - t0
    done.set()
    await sampler
    if resp.status != 422 or body.get("code") != "TARGET_OUTSIDE_FIELD":
        raise RuntimeError(f"unexpected answer {resp.status}: {body}")
    return elapsed, peak_sampled - base, base


async def direct_put(store: ObjectStore, path: Path) -> float:
    key = f"bench/{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    await store.put_stream(key, _file_chunks(path), "application/fits")
    elapsed = time.perf_counter() - t0
    await store.delete(key)
    return elapsed


async def _database(server_url: str, name: str, create: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running_suite(workdir: Path, env: dict[str, str]) -> AsyncIterator[Suite]:
    """The four services on a fresh database of DATABASE_URL's server (else an embedded one)."""
    from urllib.parse import urlsplit, urlunsplit

    server = os.environ.get("DATABASE_URL")
    if not server:
        from services.shared import embedded_pg

        server = embedded_pg.start(workdir / "pg")
    name = "bench_" + uuid.uuid4().hex[:10]
    await _database(server, name, create=True)
    full = {**env, "DATABASE_URL": urlunsplit(urlsplit(server)._replace(path="/" + name))}
    suite = Suite(workdir / "suite", full)
    try:
        await asyncio.to_thread(suite.start)
        suite.set_run(RUN, USER)
        yield suite
    finally:
        suite.stop()
        await _database(server, name, create=False)


async def measure(suite: Suite, store: ObjectStore, path: Path, label: str) -> list[Row]:
    size_mb = path.stat().st_size / (1 << 20)
    # Warm the page cache so both sides read the file from memory.
    await direct_put(store, path)
    ours, reference, grown = [], [], []
    for n in range(2):
        reference.append(await direct_put(store, path))
        seconds, growth_kb, _ = await gateway_upload(suite, path, 900001 + n)
        ours.append(seconds)
        grown.append(growth_kb)
    gw = size_mb / min(ours)
    ref = size_mb / min(reference)
    ratio = gw / ref
    growth_mb = max(grown) / 1024
    return [
        Row(
            "upload",
            f"{label}: {size_mb:.0f} MB raw body, throughput",
            gw,
            ref,
            "MB/s",
            reference_name="store.put_stream of the same file",
            goal="ratio >= 0.7",
            met=ratio >= 0.7,
            note="best of 2; gateway = stream+hash+stage+header validation, answered 422",
        ),
        Row(
            "upload",
            f"{label}: {size_mb:.0f} MB upload, gateway RSS growth",
            growth_mb,
            None,
            "MB",
            goal="< 100 MB",
            met=growth_mb < 100,
            note="VmRSS sampled every 50 ms minus VmRSS before",
        ),
    ]


async def _run_all() -> list[Row]:
    rows: list[Row] = []
    local_mb = int(os.environ.get("BENCH_UPLOAD_MB", "1024"))
    s3_mb = int(os.environ.get("BENCH_UPLOAD_S3_MB", "256"))
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        work = Path(tmp)
        path = big_fits(work / "big.fits", local_mb)
        async with running_suite(work, {}) as suite:
            rows += await measure(suite, LocalStore(suite.env["STORE_DIR"]), path, "local store")
        if s3_mb > 0:
            # moto in a process of its own, as MinIO would be: not sharing this one's GIL.
            port = free_port()
            moto = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await _wait_port(port)
                bucket = "bench-" + uuid.uuid4().hex[:8]
                s3 = S3Store(f"127.0.0.1:{port}", "testing", "testing", bucket, False, "us-east-1")
                s3.ensure_bucket()
                env = {
                    "S3_ENDPOINT": f"127.0.0.1:{port}",
                    "S3_ACCESS_KEY": "testing",
                    "S3_SECRET_KEY": "testing",
                    "S3_BUCKET": bucket,
                }
                small = big_fits(work / "s3.fits", s3_mb)
                async with running_suite(work / "s3", env) as suite:
                    rows += await measure(suite, s3, small, "S3 (moto)")
            finally:
                moto.terminate()
                await moto.wait()
    return rows


async def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def run() -> list[Row]:
    return asyncio.run(_run_all())
