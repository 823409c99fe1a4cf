"""Mosaic section: our mosaic step (`python -m services.processor mosaic`:
input preparation, SWarp, blanking the gaps from the weight map, carrying
the header keywords) against bare SWarp with the same arguments, on the
same HAWK-I-like 4-chip file (4 x 2048 x 2048 float32, 0.106"/pixel).
Goal: ours within 1.1 times SWarp's wall time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from bench.hips import BENCH_DIR, compile_ours, timed, warm
from bench.table import Row

WORK = BENCH_DIR / "mosaic"
CHIP = 2048
SCALE = 0.106
GOAL = 1.1
REPEATS = 3  # best of, for both, alternating


def make_paw_print(path: Path) -> Path:
    if path.exists():
        return path
    from tests.processor.skyfiles import paw_print

    path.parent.mkdir(parents=True, exist_ok=True)
    paw_print(path, chip=CHIP, scale_arcsec=SCALE, gap_arcsec=15.0)
    return path


def run() -> list[Row]:
    from services.processor import mosaic

    WORK.mkdir(parents=True, exist_ok=True)
    paw = make_paw_print(WORK / "hawki-like.fits")
    compile_ours()
    ours_times, ours_peaks, bare_times, bare_peaks = [], [], [], []
    for _ in range(REPEATS):
        out = WORK / "ours.fits"
        warm(paw)
        print("[bench] mosaic: ours", file=sys.stderr, flush=True)
        wall, peak, _ = timed([sys.executable, "-m", "services.processor", "mosaic", str(paw), str(out)])
        ours_times.append(wall)
        ours_peaks.append(peak)
        out.unlink(missing_ok=True)
        job = Path(tempfile.mkdtemp(dir=WORK))
        try:
            warm(paw)
            print("[bench] mosaic: bare SWarp", file=sys.stderr, flush=True)
            args = mosaic.swarp_args(paw, job / "coadd.fits", job / "coadd.weight.fits", None, job)
            wall, peak, _ = timed(args, cwd=job)
            bare_times.append(wall)
            bare_peaks.append(peak)
        finally:
            shutil.rmtree(job, ignore_errors=True)
    ours, bare = min(ours_times), min(bare_times)
    return [
        Row(
            section="mosaic",
            case=f"4 x {CHIP}x{CHIP} paw-print: whole process (best of {REPEATS})",
            ours=ours,
            reference=bare,
            unit="s",
            reference_name="bare SWarp",
            goal=f"ratio <= {GOAL}",
            met=ours / bare <= GOAL,
            note=(
                f"peak {max(ours_peaks):.0f} vs {max(bare_peaks):.0f} MB; runs "
                f"{[round(t, 2) for t in ours_times]} vs {[round(t, 2) for t in bare_times]}"
            ),
        )
    ]
