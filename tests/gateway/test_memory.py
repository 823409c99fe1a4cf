"""A 2 GB upload through the gateway raises its resident memory by less than 100 MB.

The file is sparse on disk (header, then 2 GB of zero pixels) so that making it
costs nothing; the gateway receives, hashes and stages every byte all the same.
Its target is outside the image, so the validator (headers only) refuses it
and no processing follows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.devrun import Suite
from tests.fitsgen import streamed_tan_header
from tests.gateway.harness import new_ob

SIZE = 2 << 30
LIMIT_MB = 100
RUN = "p2:60.A-9999(M)"
USER = "p2:memory"


def sparse_fits(path: Path, size: int) -> Path:
    side = int((size / 4) ** 0.5) + 1
    head = streamed_tan_header(side)
    data = side * side * 4
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + data + (-data % 2880))
    return path


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while block := await asyncio.to_thread(f.read, 1 << 20):
            yield block


@pytest.mark.parametrize("mode", ["raw", "multipart"])
async def test_two_gigabytes_upload_keeps_memory_flat(suite: Suite, tmp_path: Path, mode: str) -> None:
    suite.set_run(RUN, USER)
    path = sparse_fits(tmp_path / "two-gigabytes.fits", SIZE)
    size = path.stat().st_size
    assert size >= SIZE
    pid = suite.procs["gateway"].pid
    before, peak_before = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    highest = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal highest
        while not done.is_set():
            highest = max(highest, status_kb(pid, "VmRSS"))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    url = f"{suite.gateway_url}/api/v1/obs/{new_ob()}/background-images"
    context = {"run_id": RUN, "target_ra": "10", "target_dec": "-60"}
    auth = {"Authorization": f"Bearer {suite.token(USER)}"}
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:
        if mode == "raw":
            headers = {**auth, "Content-Type": "application/fits", "Content-Length": str(size)}
            request = http.post(url, params=context, data=chunks(path), headers=headers)
        else:
            form = aiohttp.FormData()
            for key, value in context.items():
                form.add_field(key, value)
            form.add_field("file", path.open("rb"), filename=path.name, content_type="application/fits")
            request = http.post(url, data=form, headers=auth)
        async with request as resp:
            body = await resp.json(content_type=None)
    seconds = time.perf_counter() - t0
    done.set()
    await sampler
    assert resp.status == 422 and body["code"] == "TARGET_OUTSIDE_FIELD", body
    grown_mb = (highest - before) / 1024
    peak_grown_mb = (status_kb(pid, "VmHWM") - peak_before) / 1024
    gib = size / 2**30
    print(f"{mode}: {gib:.2f} GiB in {seconds:.1f} s, RSS +{grown_mb:.1f} MB (peak +{peak_grown_mb:.1f} MB)")
    assert grown_mb < LIMIT_MB
    assert peak_grown_mb < LIMIT_MB
