"""The check before sending: a 2 GB, 64-HDU file's headers read as the page reads them and
judged by the route, against the time to upload the file over a 10 MB/s link.

The page's reader (services/gateway/static/fits_headers.js) runs in Node on the file
(`bench/check_first.mjs`: the same module, File.slice on a Blob of it), and posts to the
running suite's check route, as the page does; the Python client's check
(`BackgroundImages.check_headers`) is measured beside it. The file is sparse (its data holes
of the file system): neither reader touches the data. The upload time is computed, size over
10 MB/s (10^7 bytes/s): sending 2 GB at that rate takes minutes, which is the point.
Median of BENCH_CHECK_RUNS (default 5) runs each, alternating the two readers.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bgimages_client import BackgroundImages

from bench.table import Row
from bench.upload import RUN, USER, running_suite
from bench.validation import N_EXT, SCALE_ARCSEC, SHAPE, write_mef

ROOT = Path(__file__).resolve().parents[1]
LINK_BYTES_PER_S = 10e6
POINTING = (150.0, -30.0)
# The centre of a chip of the 8x8 grid (half a chip and gap from the pointing, which is in a
# gap): the headers pass, all 64 are read.
TARGET = (
    POINTING[0] - (SHAPE[1] + 30) / 2 * SCALE_ARCSEC / 3600 / math.cos(math.radians(POINTING[1])),
    POINTING[1] + (SHAPE[0] + 30) / 2 * SCALE_ARCSEC / 3600,
)
GOAL = 0.05


def _node(path: Path, url: str, token: str, ob: int) -> dict[str, float]:
    done = subprocess.run(
        [
            "node",
            str(ROOT / "bench" / "check_first.mjs"),
            str(path),
            url,
            token,
            str(ob),
            RUN,
            *map(str, TARGET),
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != 200:
        raise RuntimeError(f"the check answered {result}")
    return result


async def _measure(work: Path) -> list[Row]:
    path = work / "mef.fits"
    size = write_mef(path, ra0=POINTING[0], dec0=POINTING[1], n_ext=N_EXT, sparse=True)
    runs = int(os.environ.get("BENCH_CHECK_RUNS", "5"))
    upload_s = size / LINK_BYTES_PER_S
    async with running_suite(work, {"MAX_HDUS": "100"}) as suite:
        token = suite.token(USER)
        client = BackgroundImages(suite.gateway_url, token)
        page, python = [], []
        seen: dict[str, float] = {}
        for n in range(runs + 1):  # the first of each warms up (imports, connections, page cache)
            seen = await asyncio.to_thread(_node, path, suite.gateway_url, token, 700001 + n)
            t0 = time.perf_counter()
            checked = await asyncio.to_thread(client.check_headers, path, 700001 + n, RUN, TARGET)
            took = time.perf_counter() - t0
            assert checked.checked and checked.after_upload, checked
            if n:
                page.append(seen["read_s"] + seen["route_s"])
                python.append(took)
    page_s, python_s = statistics.median(page), statistics.median(python)
    shape = f"{size / 1e9:.2f} GB, {N_EXT} HDUs, {seen['header_bytes'] / 1e3:.0f} KB of headers"
    common = {
        "reference_name": "upload over a 10 MB/s link (size / 10^7 B/s)",
        "goal": f"ratio <= {GOAL}",
        "unit": "s",
    }
    return [
        Row(
            "check_first",
            f"page reader (Node, fits_headers.js) + route: {shape}",
            page_s,
            upload_s,
            met=page_s / upload_s <= GOAL,
            note=f"median of {runs}; read {seen['read_s']:.3f} s + route {seen['route_s']:.3f} s in the last",
            **common,  # type: ignore[arg-type]
        ),
        Row(
            "check_first",
            f"Python client check_headers + route: {shape}",
            python_s,
            upload_s,
            met=python_s / upload_s <= GOAL,
            note=f"median of {runs}, alternating with the page reader",
            **common,  # type: ignore[arg-type]
        ),
    ]


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        return asyncio.run(_measure(Path(tmp)))
