"""RenderCharts jobs: each chart's image put on the chart's grid (north up, centred on the
target, covering the instrument's field) and drawn (`finding_chart.render`), in a worker
process with a time limit (CHART_TIMEOUT_S) and an address-space limit
(CHART_MEMORY_BYTES): a chart that takes too long or too much is stopped, its worker
replaced, and the request answered with a code.

A stored FITS is downloaded to the job's scratch folder and read there (memory-mapped,
its displayable HDU); a survey is read from its HiPS FITS tiles (`hips_cutout`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import resource
import shutil
import tempfile
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from services.processor.finding_chart import ChartContext, Display
from services.shared.errors import Code, ServiceError
from services.shared.store import ObjectStore, check_key

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ChartJob:
    """One chart: its image (a local FITS file and HDU, or a HiPS) and what it says."""

    ctx: ChartContext
    display: Display
    fits_path: str = ""
    hdu: int = 0
    hips: str = ""


def _limit_memory(max_bytes: int) -> None:
    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


class ChartFailed(Exception):
    """A chart the worker could not draw: (code, message), picklable across the process."""


def run_in_worker(job: ChartJob) -> bytes:
    """`render_job` as the worker runs it: a ServiceError crosses back as ChartFailed."""
    try:
        return render_job(job)
    except ServiceError as err:
        raise ChartFailed(str(err.code), err.message) from None


def render_job(job: ChartJob) -> bytes:
    """In the worker: the image on the chart's grid, then the chart."""
    import numpy as np

    from services.processor import finding_chart, hips_cutout

    if job.hips:
        scale = 1.0
        grid, shape = finding_chart.chart_grid(job.ctx, scale)
        data = hips_cutout.cutout(job.hips, grid, shape)
    else:
        from astropy.io import fits
        from astropy.wcs import WCS
        from reproject import reproject_interp

        with fits.open(job.fits_path, memmap=True) as hdul:
            hdu = hdul[job.hdu]
            wcs = WCS(hdu.header).celestial
            scale = float(np.mean([abs(s.to_value("arcsec")) for s in wcs.proj_plane_pixel_scales()]))
            grid, shape = finding_chart.chart_grid(job.ctx, scale)
            data, _ = reproject_interp((hdu.data, wcs), grid, shape_out=shape)
    if not np.isfinite(data).any():
        raise ValueError("the image does not cover the chart's field")
    return finding_chart.render(data, grid, job.ctx, job.display)


class ChartWorkers:
    """A worker process for charts (forkserver: no gRPC threads are forked), replaced when a
    chart passes its time limit or its worker dies."""

    def __init__(self, timeout_s: float, memory_bytes: int) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["services.processor.finding_chart"])
            self._pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=context, initializer=_limit_memory, initargs=(self.memory_bytes,)
            )
        return self._pool

    def _replace(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    process.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    async def render(self, job: ChartJob) -> bytes:
        """The chart's JPEG; PROCESSING_FAILED when it cannot be drawn, too slow or too big."""
        async with self._lock:  # one chart at a time: each worker uses a core
            future = asyncio.wrap_future(self._executor().submit(run_in_worker, job))
            try:
                return await asyncio.wait_for(future, self.timeout_s)
            except TimeoutError:
                self._replace()
                raise ServiceError(
                    Code.PROCESSING_FAILED, f"the chart took longer than {self.timeout_s:g} s"
                ) from None
            except (BrokenProcessPool, MemoryError) as err:
                self._replace()
                raise ServiceError(
                    Code.PROCESSING_FAILED, "the chart needed more memory than allowed"
                ) from err
            except ChartFailed as err:
                code, message = err.args
                raise ServiceError(Code(code), message) from None
            except Exception as err:
                raise ServiceError(Code.PROCESSING_FAILED, f"the chart could not be drawn: {err}") from err

    def close(self) -> None:
        self._replace()


@dataclasses.dataclass(frozen=True)
class ChartSpec:
    """A chart as the request names it: a stored FITS key or a HiPS."""

    ctx: ChartContext
    display: Display
    fits_key: str = ""
    hdu: int = 0
    hips: str = ""


async def render_all(
    specs: list[ChartSpec], store: ObjectStore, workers: ChartWorkers, scratch: str | None
) -> list[bytes]:
    """Every chart, in order; the stored images downloaded to a scratch folder removed after."""
    folder = Path(tempfile.mkdtemp(prefix="charts-", dir=scratch))
    try:
        out = []
        for n, spec in enumerate(specs):
            path = ""
            if spec.fits_key:
                check_key(spec.fits_key)
                path = str(folder / f"{n}.fits")
                await store.download(spec.fits_key, path)
            job = ChartJob(spec.ctx, spec.display, path, spec.hdu, spec.hips)
            out.append(await workers.render(job))
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
