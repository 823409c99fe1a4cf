"""Storage section: what one Process job stores per uploaded byte (the
original, the HiPS in FITS and PNG, the preview), as the processor reports
it in `stored_bytes` (the figure culling counts) and as the store holds it,
for 2048^2 and 4096^2 float32 images; and Hipsgen's LINT on the HiPS the
job stored (its warnings and errors).

Goals (issue 20): stored <= 3.5x the upload at 2048^2, <= 2.5x at 4096^2
and above; LINT: no warning.

Environment: BENCH_STORAGE_SIZES=2048,4096 (default), BENCH_DIR.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.hips import BENCH_DIR, HIPSGEN_JAR, SCALE, make_image
from bench.table import Row

WORK = BENCH_DIR / "storage"
GOAL_SMALL = 3.5  # at 2048^2
GOAL = 2.5  # at 4096^2 and above


async def _process(image: Path, root: Path) -> tuple[int, int, str]:
    """(stored_bytes reported, bytes under the prefix, prefix) of one job on a local store."""
    from services.processor.processing import HduChoice, Job, Processor
    from services.shared.settings import ProcessorSettings
    from services.shared.store import LocalStore

    store = LocalStore(root)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    prefix = f"content/{digest}/g1/"
    await store.put_file("staging/upload", image, "application/fits")
    processor = Processor(ProcessorSettings(scratch_dir=str(root.parent / "scratch")), store)
    try:
        job = Job(
            source_key="staging/upload",
            output_prefix=prefix,
            title="bench",
            hdus=[HduChoice(0, True, SCALE)],
            filter_name="Ks",
        )
        outcome = await processor.process(job)
    finally:
        processor.close()
    held = sum([info.size async for info in store.list(prefix)])
    return outcome.stored_bytes, held, prefix


def lint(folder: Path) -> list[str]:
    """Hipsgen's LINT on a HiPS folder: its WARN and ERROR lines."""
    proc = subprocess.run(
        ["java", "-jar", HIPSGEN_JAR, "-hipsgen", f"out={folder}", "LINT"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "WARN" in line or "ERROR" in line]


def run() -> list[Row]:
    sizes = [int(s) for s in os.environ.get("BENCH_STORAGE_SIZES", "2048,4096").split(",")]
    rows: list[Row] = []
    for size in sizes:
        image = make_image(BENCH_DIR / "hips" / f"tan{size}.fits", size, sip=False)
        root = WORK / "store"
        shutil.rmtree(WORK, ignore_errors=True)
        print(f"[bench] storage {size}x{size}: one Process job", file=sys.stderr, flush=True)
        reported, held, prefix = asyncio.run(_process(image, root))
        upload = image.stat().st_size
        goal = GOAL_SMALL if size <= 2048 else GOAL
        hips_dir = root / prefix / "hips"
        fits_tiles = sum(p.stat().st_size for p in hips_dir.rglob("Npix*.fits"))
        png_tiles = sum(p.stat().st_size for p in hips_dir.rglob("Npix*.png"))
        held_note = "= what the store holds" if reported == held else f"store holds {held / 1e6:.1f} MB!"
        rows.append(
            Row(
                section="storage",
                case=f"{size}x{size} float32 TAN: stored bytes per uploaded byte",
                ours=reported / upload,
                reference=None,
                unit="x",
                goal=f"<= {goal:g}x",
                met=reported / upload <= goal and reported == held,
                note=(
                    f"upload {upload / 1e6:.1f} MB, stored {reported / 1e6:.1f} MB "
                    f"({held_note}); "
                    f"FITS tiles {fits_tiles / 1e6:.1f} MB (16-bit), PNG tiles {png_tiles / 1e6:.1f} MB"
                ),
            )
        )
        if Path(HIPSGEN_JAR).exists():
            print(f"[bench] storage {size}x{size}: Hipsgen LINT", file=sys.stderr, flush=True)
            problems = lint(hips_dir)
            rows.append(
                Row(
                    section="storage",
                    case=f"{size}x{size}: Hipsgen LINT on the stored HiPS, warnings + errors",
                    ours=float(len(problems)),
                    reference=None,
                    unit="",
                    goal="0",
                    met=not problems,
                    note="; ".join(problems)[:300] or "fully IVOA HiPS 1.0 compatible",
                )
            )
        shutil.rmtree(WORK, ignore_errors=True)
    return rows
