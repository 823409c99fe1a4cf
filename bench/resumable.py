"""Resumable uploads: a resumed upload's total time against a one-shot upload of the same
file plus the time to send what was lost, in the same run, through the same loopback proxy.

The Python client (`BackgroundImages.upload_resumable`) sends a file through a TCP proxy that
cuts the connection at 60 % (tests.gateway.harness.CuttingProxy); the client asks where the
upload stands (HEAD) and sends the rest. The reference is the same client's one-shot upload
(`upload`) through the same proxy uncut, plus the lost bytes (sent before the cut but not
staged: what was in flight) at the one-shot's rate. The target is outside the file, so both end
in the same validation (422) with no processing after it. Alternating, median of
BENCH_RESUMABLE_RUNS (default 3). Then the same upload with the gateway restarted half way:
the SHA-256 computed again from the staged object (the seconds it took, from the gateway's log).
Settings: BENCH_RESUMABLE_MB (default 512).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from bgimages_client import BackgroundImages, BgImagesError

from bench.table import Row
from bench.upload import RUN, USER, big_fits, running_suite
from tests.gateway.harness import CuttingProxy

FAR = (10.0, 10.0)  # the file is at (150, 2): refused after the last byte, nothing to process
GOAL = 1.1


async def _one(api_call: object, *args: object, **kwargs: object) -> float:
    t0 = time.perf_counter()
    try:
        await asyncio.to_thread(api_call, *args, **kwargs)  # type: ignore[arg-type]
    except BgImagesError as err:
        if err.code != "TARGET_OUTSIDE_FIELD":
            raise
    return time.perf_counter() - t0


async def _measure(work: Path) -> list[Row]:
    mb = int(os.environ.get("BENCH_RESUMABLE_MB", "512"))
    runs = int(os.environ.get("BENCH_RESUMABLE_RUNS", "3"))
    path = big_fits(work / "big.fits", mb)
    size = path.stat().st_size
    rows: list[Row] = []
    async with running_suite(work, {}) as suite:
        token = suite.token(USER)
        one_shot, resumed, lost = [], [], []
        for n in range(runs + 1):  # the first warms up (page cache, connections)
            async with CuttingProxy(suite.gateway_url, 1 << 62) as proxy:
                api = BackgroundImages(proxy.url, token)
                t_one = await _one(api.upload, path, 800001 + n, RUN, FAR, check_first=False)
            async with CuttingProxy(suite.gateway_url, int(size * 0.6)) as proxy:
                api = BackgroundImages(proxy.url, token)
                t_res = await _one(
                    api.upload_resumable,
                    path,
                    810001 + n,
                    RUN,
                    FAR,
                    check_first=False,
                    resume_file=work / "resume.json",
                )
                # Sent in all through the proxy, less the file: what went twice (in flight at the cut).
                lost_bytes = max(0, proxy.forwarded - size)
            if n:
                one_shot.append(t_one)
                resumed.append(t_res)
                lost.append(t_one * lost_bytes / size)
        t_one, t_res, t_lost = (
            statistics.median(one_shot),
            statistics.median(resumed),
            statistics.median(lost),
        )
        reference = t_one + t_lost
        rows.append(
            Row(
                "resumable",
                f"{size / 1e6:.0f} MB, cut at 60 %, resumed (Python client, loopback proxy)",
                t_res,
                reference,
                "s",
                reference_name="one-shot upload + the lost part at its rate",
                goal=f"ratio <= {GOAL}",
                met=t_res <= GOAL * reference,
                note=f"median of {runs}; one-shot {t_one:.2f} s, lost part {t_lost:.3f} s",
            )
        )
        rows.append(await _rehash_row(suite, path, token))
    return rows


async def _rehash_row(suite: object, path: Path, token: str) -> Row:
    """Half the file by one PATCH, the gateway restarted, the rest: the hash computed again."""
    size = path.stat().st_size
    half = (size // 2) // 2880 * 2880
    base = suite.gateway_url  # type: ignore[attr-defined]
    tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    params = f"run_id={RUN}&target_ra={FAR[0]}&target_dec={FAR[1]}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/obs/820001/uploads?{params}", headers={**tus, "Upload-Length": str(size)}
        ) as resp:
            url = base + resp.headers["Location"]
        patch = {**tus, "Content-Type": "application/offset+octet-stream"}
        with path.open("rb") as f:
            async with http.patch(url, data=f.read(half), headers={**patch, "Upload-Offset": "0"}) as resp:
                assert resp.status == 204, await resp.text()
            await asyncio.to_thread(suite.restart, "gateway")  # type: ignore[attr-defined]
            async with http.patch(url, data=f.read(), headers={**patch, "Upload-Offset": str(half)}) as resp:
                assert resp.status == 422, await resp.text()
    log = suite.log_path("gateway").read_text()  # type: ignore[attr-defined]
    found = [
        json.loads(line)["duration_ms"]
        for line in log.splitlines()
        if line.startswith("{") and "hashed again from the store" in line
    ]
    seconds = float(found[-1]) / 1000 if found else float("nan")
    return Row(
        "resumable",
        f"{size / 1e6:.0f} MB: the gateway restarted half way, the SHA-256 computed again",
        seconds,
        None,
        "s",
        note=f"{size / 1e6 / seconds:.0f} MB/s from the staged object; a resumed upload pays it once",
    )


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-resumable-") as tmp:
        return asyncio.run(_measure(Path(tmp)))
