"""Gaia section: drawing a Gaia pseudo image against building its HiPS with our processor.

The image of a 10' field (radius 300", GAIA_im_IQ 1", so 0.4"/px) from 5,000
sources (what a TOP 5000 cone query returns: the demo catalogue over the cone
the image asks for) is drawn in-process (`gaia_image_fits`: stamps, noise, the
FITS bytes), as the service that builds it will; its HiPS is built by
`python -m services.processor hips`, timed as bench/hips.py times it (its
in-process figure, which the processor's service pays; the whole process in
the note). The median of BENCH_GAIA_RUNS (5) runs of each, alternating.
Goal (issue 14): drawing <= 0.5x the HiPS build.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from bench.hips import BENCH_DIR, compile_ours, median, ours
from bench.table import Row

WORK = BENCH_DIR / "gaia"
GOAL_RATIO = 0.5
RA, DEC = 150.0, 2.0
RADIUS_ARCSEC = 300.0
SOURCES = 5000


def run() -> list[Row]:
    from services.devtap import demo_table
    from services.processor.hips import choose_order
    from services.shared.gaia import GaiaSources
    from services.shared.gaia_image import GaiaImageSpec, draw, gaia_image_fits

    runs = int(os.environ.get("BENCH_GAIA_RUNS", "5"))
    spec = GaiaImageSpec.for_observation(RA, DEC, RADIUS_ARCSEC, 2027.25, iq_arcsec=1.0)
    t = demo_table(RA, DEC, radius_arcsec=spec.cone_radius_arcsec, count=SOURCES)
    sources = GaiaSources.from_table(t)
    WORK.mkdir(parents=True, exist_ok=True)
    image = WORK / "gaia.fits"
    image.write_bytes(gaia_image_fits(sources, spec))  # warm: first calls pay for lazy imports
    order = choose_order(spec.scale_arcsec)
    compile_ours()
    drawing: list[float] = []
    stamps: list[float] = []
    hips_inner: list[float] = []
    hips_wall: list[float] = []
    for n in range(runs):
        print(f"[bench] gaia: draw and HiPS ({n + 1}/{runs})", file=sys.stderr, flush=True)
        start = time.perf_counter()
        data = gaia_image_fits(sources, spec)
        drawing.append(time.perf_counter() - start)
        start = time.perf_counter()
        draw(sources, spec)
        stamps.append(time.perf_counter() - start)
        image.write_bytes(data)
        result = ours(image, WORK / "out", order)
        hips_wall.append(result.wall)
        hips_inner.append(result.inner if result.inner is not None else float("nan"))
    shutil.rmtree(WORK / "out", ignore_errors=True)
    ratio = median(drawing) / median(hips_inner)
    return [
        Row(
            section="gaia",
            case=(
                f"Gaia image {spec.side_px}x{spec.side_px} (10' field, {len(sources)} sources): "
                f"drawing vs its HiPS (order {order}), in-process, median of {runs}"
            ),
            ours=median(drawing),
            reference=median(hips_inner),
            unit="s",
            reference_name="processor HiPS build",
            goal=f"ratio <= {GOAL_RATIO:g}",
            met=ratio <= GOAL_RATIO,
            note=(
                f"drawing {min(drawing):.3f}-{max(drawing):.3f} s (stamps alone {median(stamps):.3f} s; "
                f"the rest noise and FITS bytes); HiPS whole process {median(hips_wall):.2f} s "
                f"(ratio {median(drawing) / median(hips_wall):.3f})"
            ),
        )
    ]
