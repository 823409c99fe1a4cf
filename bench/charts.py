"""Charts section: the set of 3 finding charts from a stored 4096x4096 image against the
reference, reading that FITS and writing one plain matplotlib JPEG of it (imshow, savefig).

Ours is the processor's chart job as its worker runs it (`charts.render_job`: the image
put on the chart's grid, then drawn with the field of view, arrows, scale bar, names),
three times (the default survey's chart and the Gaia one are drawn from stored FITS as
well here, so the figure holds no survey download). Alternating, median of
BENCH_CHARTS_RUNS (3). Goal (issue 16): the set <= 3x the reference; both times printed.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.hips import BENCH_DIR
from bench.table import Row

WORK = BENCH_DIR / "charts"
GOAL_RATIO = 3.0
SIZE = 4096


def _image(path: Path) -> Path:
    from astropy.io import fits
    from astropy.wcs import WCS

    if path.exists():
        return path
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [SIZE / 2, SIZE / 2]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    data = np.random.default_rng(0).normal(100.0, 5.0, (SIZE, SIZE)).astype(np.float32)
    fits.PrimaryHDU(data, w.to_header()).writeto(path)
    return path


def reference(path: Path) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.io import fits

    t0 = time.perf_counter()
    with fits.open(path, memmap=True) as hdul:
        data = np.asarray(hdul[0].data)
        fig = plt.figure(figsize=(8.0, 8.8), dpi=100)
        ax = fig.add_axes((0.1, 0.07, 0.85, 0.78))
        ax.imshow(data, cmap="gray_r", origin="lower")
        fig.savefig(io.BytesIO(), format="jpeg", dpi=100)
        plt.close(fig)
    return time.perf_counter() - t0


def ours(path: Path) -> float:
    from services.processor import charts
    from services.processor.finding_chart import ChartContext, Display

    ctx = ChartContext(
        "60.A-9252(A)", "A. Smith", "OB 1", "NGC 3115", (150.0, 2.0), "FORS2", None, 30.0, "R", "x"
    )
    t0 = time.perf_counter()
    for _ in range(3):
        charts.render_job(charts.ChartJob(ctx, Display(), str(path), 0))
    return time.perf_counter() - t0


def run() -> list[Row]:
    runs = int(os.environ.get("BENCH_CHARTS_RUNS", "3"))
    WORK.mkdir(parents=True, exist_ok=True)
    path = _image(WORK / "image4096.fits")
    reference(path)  # warm: imports, fonts, page cache
    ours(path)
    mine: list[float] = []
    theirs: list[float] = []
    for n in range(runs):
        print(f"[bench] charts: ({n + 1}/{runs})", file=sys.stderr, flush=True)
        if n % 2:
            theirs.append(reference(path))
            mine.append(ours(path))
        else:
            mine.append(ours(path))
            theirs.append(reference(path))
    a, b = statistics.median(mine), statistics.median(theirs)
    return [
        Row(
            "charts",
            f"3 finding charts from a stored {SIZE}x{SIZE} image (FORS2, PA 30)",
            a,
            b,
            "s",
            "one plain matplotlib JPEG of it",
            f"ratio <= {GOAL_RATIO}",
            a <= GOAL_RATIO * b,
            f"median of {runs}, alternating, in-process; per chart {a / 3:.2f} s",
        )
    ]
