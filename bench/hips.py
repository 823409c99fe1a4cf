"""HiPS section: our generator against Hipsgen and astropy reproject's
`reproject_to_hips` on the same images, at the same order, one after the
other in the same run.

Each tool runs as its own process (whole-process wall time, the ratio the
goal speaks of; peak memory from /usr/bin/time). Ours writes FITS and PNG
tiles; Hipsgen is asked for FITS and PNG tiles too; reproject writes FITS
tiles only (it has no PNG output), with threads=True, its fastest setting.

Environment: BENCH_HIPS_SIZES=4096,8192 (default), BENCH_HIPS_SKIP=reproject,hipsgen,
BENCH_DIR (default: <tmp>/bgimages-bench) for the images and outputs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.table import Row

ROOT = Path(__file__).resolve().parent.parent
# Outside the checkout: `make clean` and other tests may empty var/ mid-run.
BENCH_DIR = Path(os.environ.get("BENCH_DIR", Path(tempfile.gettempdir()) / "bgimages-bench"))
WORK = BENCH_DIR / "hips"
HIPSGEN_JAR = "/usr/share/java/aladin.jar"
SCALE = 0.2  # arcsec per pixel: order 11
GOAL = 0.1  # ours / theirs


@dataclass
class Run:
    wall: float
    peak_mb: float
    tiles: int  # deepest-order tiles (FITS files)
    inner: float | None = None  # our in-process time
    output: str = ""


def make_image(path: Path, size: int, sip: bool) -> Path:
    """A float32 TAN (or TAN-SIP, forward terms only) image with stars and noise."""
    if path.exists():
        return path
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(size + sip)
    data = rng.normal(100.0, 3.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[-6:7, -6:7]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 1.3**2)).astype(np.float32)
    for x, y, flux in zip(
        rng.integers(10, size - 10, 3000),
        rng.integers(10, size - 10, 3000),
        rng.uniform(50, 5000, 3000),
        strict=True,
    ):
        data[y - 6 : y + 7, x - 6 : x + 7] += np.float32(flux) * psf
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cd = np.array([[-SCALE / 3600, 0], [0, SCALE / 3600]])
    header = w.to_header()
    if sip:
        half = size / 2
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
        header["A_ORDER"] = header["B_ORDER"] = 3
        # A few pixels at the corners, forward terms only (no AP_/BP_).
        header["A_2_0"] = 2.0 / half**2
        header["A_1_1"] = -1.5 / half**2
        header["A_3_0"] = 1.5 / half**3
        header["B_0_2"] = 1.8 / half**2
        header["B_1_1"] = 1.0 / half**2
        header["B_0_3"] = -1.2 / half**3
    header["FILTER"] = "Ks"
    header["OBJECT"] = "bench"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def timed(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and output of a command run under /usr/bin/time."""
    fd, name = tempfile.mkstemp(prefix="time-", suffix=".txt")
    os.close(fd)
    stats = Path(name)
    try:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(stats), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        peak_kb = float(stats.read_text().split()[-1])
    finally:
        stats.unlink(missing_ok=True)
    return wall, peak_kb / 1024, proc.stdout + proc.stderr


def compile_ours() -> None:
    """Byte-compiles our code once, as installing a package does (pip
    compiles what it installs; the Python of the references, astropy and
    reproject, is compiled that way in site-packages). Without it, under
    PYTHONDONTWRITEBYTECODE=1 (set in the dev shell), every run of ours
    would compile the processor's source again (measured 0.015-0.02 s),
    a cost no reference pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "services")], check=True)


def warm(path: Path) -> None:
    """Reads a file so that every tool finds it in the page cache (the first
    one to run would otherwise pay for the disk)."""
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def count_tiles(out: Path, order: int) -> int:
    return len(list((out / f"Norder{order}").rglob("*.fits")))


def ours(image: Path, out: Path, order: int) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    warm(image)
    wall, peak, output = timed(
        [sys.executable, "-m", "services.processor", "hips", str(image), str(out), "--order", str(order)]
    )
    inner = re.search(r"([\d.]+) s\s*$", output.strip())
    return Run(wall, peak, count_tiles(out, order), float(inner[1]) if inner else None, output)


def hipsgen(image: Path, out: Path, order: int) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    warm(image)
    wall, peak, output = timed(
        [
            "java",
            "-jar",
            HIPSGEN_JAR,
            "-hipsgen",
            f"in={image}",
            f"out={out}",
            "creator_did=ivo://bench/hips",
            f"hips_order={order}",
            "INDEX",
            "TILES",
            "PNG",
        ]  # fmt: skip
    )
    return Run(wall, peak, count_tiles(out, order), output=output)


def reproject(image: Path, out: Path, order: int) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    warm(image)
    code = (
        "from reproject import reproject_interp\n"
        "from reproject.hips import reproject_to_hips\n"
        f"reproject_to_hips({str(image)!r}, coord_system_out='equatorial', "
        f"reproject_function=reproject_interp, output_directory={str(out)!r}, level={order}, threads=True)\n"
    )
    wall, peak, output = timed([sys.executable, "-c", code])
    return Run(wall, peak, count_tiles(out, order), output=output)


def run() -> list[Row]:
    from services.processor.hips import choose_order

    sizes = [int(s) for s in os.environ.get("BENCH_HIPS_SIZES", "4096,8192").split(",")]
    skip = set(os.environ.get("BENCH_HIPS_SKIP", "").split(","))
    cases: list[tuple[str, Path]] = []
    for size in sizes:
        cases.append((f"{size}x{size} TAN", make_image(WORK / f"tan{size}.fits", size, sip=False)))
        if size == 4096:
            cases.append((f"{size}x{size} TAN-SIP", make_image(WORK / f"sip{size}.fits", size, sip=True)))
    order = choose_order(SCALE)
    compile_ours()
    rows: list[Row] = []
    for name, image in cases:
        case = f"{name}, order {order}"
        print(f"[bench] hips {case}: ours", file=sys.stderr, flush=True)
        mine = ours(image, WORK / "out-ours", order)
        refs: dict[str, Run] = {}
        if "hipsgen" not in skip and Path(HIPSGEN_JAR).exists():
            print(f"[bench] hips {case}: Hipsgen", file=sys.stderr, flush=True)
            refs["Hipsgen"] = hipsgen(image, WORK / "out-hipsgen", order)
        if "reproject" not in skip:
            print(f"[bench] hips {case}: reproject_to_hips", file=sys.stderr, flush=True)
            refs["reproject_to_hips"] = reproject(image, WORK / "out-reproject", order)
        for ref_name, ref in refs.items():
            ratio = mine.wall / ref.wall
            rows.append(
                Row(
                    section="hips",
                    case=f"{case}: whole process",
                    ours=mine.wall,
                    reference=ref.wall,
                    unit="s",
                    reference_name=ref_name,
                    goal=f"ratio <= {GOAL}",
                    met=ratio <= GOAL,
                    note=(
                        f"speed-up {1 / ratio:.1f}x; ours in-process {mine.inner or float('nan'):.2f} s; "
                        f"tiles {mine.tiles} vs {ref.tiles}; peak {mine.peak_mb:.0f} vs {ref.peak_mb:.0f} MB"
                    ),
                )
            )
        if not refs:
            rows.append(
                Row("hips", f"{case}: whole process", mine.wall, None, "s", note=f"in-process {mine.inner} s")
            )
        shutil.rmtree(WORK / "out-ours", ignore_errors=True)
        shutil.rmtree(WORK / "out-hipsgen", ignore_errors=True)
        shutil.rmtree(WORK / "out-reproject", ignore_errors=True)
    return rows
