"""Process jobs against both object stores: single images, compressed uploads,
MEF mosaics, failures that leave nothing behind; and the gRPC servicer."""

from __future__ import annotations

import asyncio
import gzip
import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from bgimages.validator.v1 import validator_pb2
from services.processor import server
from services.processor.processing import Processor
from services.shared.errors import ServiceError
from services.shared.grpc_client import call, channel
from services.shared.grpc_edge import GrpcServer
from services.shared.settings import ProcessorSettings
from services.shared.store import LocalStore, S3Store
from tests.fitsgen import tan_wcs
from tests.processor.skyfiles import DEC, RA, paw_print, write_sky

CONTENT_HASH = "ab12" * 16
PREFIX = f"content/{CONTENT_HASH}/g1/"
TOKEN = "processor-test-token"


def settings(tmp: Path, **kw: object) -> ProcessorSettings:
    return ProcessorSettings(scratch_dir=str(tmp / "scratch"), service_token=TOKEN, **kw)  # type: ignore[arg-type]


def report_for(
    path: Path, displayable: list[int] | None = None, filter_name: str = "R"
) -> validator_pb2.ValidationReport:
    """A report like the validator's: which HDUs to show, their pixel scales."""
    hdus = []
    with fits.open(path) as hdul:
        for i, hdu in enumerate(hdul):
            shown = hdu.data is not None and hdu.data.ndim == 2 and (displayable is None or i in displayable)
            hdus.append(
                validator_pb2.HduReport(
                    index=i, displayable=bool(shown), pixel_scale_arcsec=0.0 if not shown else 0.0
                )
            )
    return validator_pb2.ValidationReport(ok=True, filter=filter_name, hdus=hdus, object_name="Test field")


def request(
    key: str, report: validator_pb2.ValidationReport, title: str = "my image"
) -> processor_pb2.ProcessRequest:
    return processor_pb2.ProcessRequest(source_key=key, report=report, output_prefix=PREFIX, title=title)


async def keys(store: LocalStore | S3Store, prefix: str = "") -> dict[str, int]:
    return {info.key: info.size async for info in store.list(prefix)}


async def stage(store: LocalStore | S3Store, data: bytes, key: str = "staging/upload-1") -> str:
    await store.put_bytes(key, data)
    return key


@pytest.fixture
def single(tmp_path: Path) -> Path:
    shape = (400, 500)
    return write_sky(
        tmp_path / "single.fits", tan_wcs(RA, DEC, 0.4, shape), shape, stars=[(RA, DEC + 0.005, 3000.0)]
    )


async def test_single_image_is_stored_with_hips_and_preview(
    store: LocalStore | S3Store, single: Path, tmp_path: Path
) -> None:
    data = single.read_bytes()
    key = await stage(store, data)
    processor = Processor(settings(tmp_path), store)
    from services.processor.processing import job_from_request

    outcome = await processor.process(job_from_request(request(key, report_for(single))))
    stored = await keys(store, PREFIX)
    assert outcome.fits_key == PREFIX + "original.fits"
    assert await store.get_bytes(outcome.fits_key) == data  # the exact uploaded bytes
    assert PREFIX + "mosaic.fits" not in stored
    assert outcome.preview_key == PREFIX + "preview.png"
    assert outcome.hips_prefix == PREFIX + "hips/"
    assert outcome.hips_order == 10
    assert outcome.stored_bytes == sum(stored.values())
    tiles = [k for k in stored if "/Npix" in k]
    assert outcome.tile_count == len(tiles) > 0
    props = (await store.get_bytes(PREFIX + "hips/properties")).decode()
    # The user's title (file name) and OBJECT stay out; the content's hash names the source.
    assert "obs_title" in props and "my image" not in props and "Test field" not in props
    assert f"sha256:{CONTENT_HASH}" in props
    assert "obs_filter" in props and "obs_regime" in props and "em_min" in props
    assert PREFIX + "hips/preview.jpg" in stored
    for name in ("Moc.fits", "Norder3/Allsky.fits", "Norder3/Allsky.png"):
        assert PREFIX + "hips/" + name in stored
    with Image.open(io.BytesIO(await store.get_bytes(outcome.preview_key))) as im:
        assert max(im.size) <= 1024
    assert outcome.cut.low < 100 < outcome.cut.high
    processor.close()


@pytest.mark.parametrize("compression", ["gzip", "compress", "fpack"])
async def test_compressed_uploads_are_uncompressed_and_kept_as_uploaded(
    compression: str, single: Path, tmp_path: Path
) -> None:
    import ncompress

    store = LocalStore(tmp_path / "store")
    if compression == "gzip":
        data = gzip.compress(single.read_bytes())
    elif compression == "compress":
        data = ncompress.compress(single.read_bytes())
        assert data[:2] == b"\x1f\x9d"
    else:
        with fits.open(single) as hdul:
            header = hdul[0].header.copy()
            for key in ("SIMPLE", "EXTEND"):
                header.remove(key, ignore_missing=True)
            packed = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(hdul[0].data, header)])
            buf = io.BytesIO()
            packed.writeto(buf)
        data = buf.getvalue()
        path = tmp_path / "packed.fits"
        path.write_bytes(data)
        single = path
    key = await stage(store, data)
    processor = Processor(settings(tmp_path), store)
    from services.processor.processing import job_from_request

    outcome = await processor.process(job_from_request(request(key, report_for(single))))
    assert await store.get_bytes(outcome.fits_key) == data
    assert outcome.tile_count > 0
    processor.close()


async def test_mef_with_several_chips_becomes_one_swarp_mosaic(
    store: LocalStore | S3Store, tmp_path: Path
) -> None:
    path, _ = paw_print(tmp_path / "paw.fits", chip=200, stars=[(RA, DEC, 3000.0)])
    key = await stage(store, path.read_bytes())
    processor = Processor(settings(tmp_path), store)
    from services.processor.processing import job_from_request

    outcome = await processor.process(job_from_request(request(key, report_for(path), title="")))
    assert outcome.fits_key == PREFIX + "mosaic.fits"
    mosaic = fits.open(io.BytesIO(await store.get_bytes(outcome.fits_key)))
    header = mosaic[0].header
    assert header["OBJECT"] == "Paw-print field"
    assert header["HIERARCH ESO INS FILT1 NAME"] == "Ks"
    assert header["FILTER"] == "R"  # the report's filter, the file has no FILTER keyword
    assert np.isnan(mosaic[0].data).any()  # the gaps are blank
    props = (await store.get_bytes(PREFIX + "hips/properties")).decode()
    assert "Test field" not in props and "Paw-print field" not in props  # OBJECT stays out
    values = dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in props.splitlines()))
    assert values["obs_filter"] == "R" and values["obs_regime"] == "Optical"
    assert float(values["t_min"]) == pytest.approx(60370.043, abs=1e-3)  # the primary's DATE-OBS
    stored = await keys(store, PREFIX)
    assert outcome.stored_bytes == sum(stored.values())
    processor.close()


async def test_only_displayable_chips_go_into_the_mosaic(tmp_path: Path) -> None:
    weight = fits.ImageHDU(np.ones((200, 200), np.float32), tan_wcs(RA, DEC, 0.4, (200, 200)).to_header())
    weight.header["EXTNAME"] = "WEIGHT"
    path, _ = paw_print(tmp_path / "paw.fits", chip=200, extra_hdus=[weight])
    store = LocalStore(tmp_path / "store")
    key = await stage(store, path.read_bytes())
    processor = Processor(settings(tmp_path), store)
    from services.processor.processing import job_from_request

    outcome = await processor.process(
        job_from_request(request(key, report_for(path, displayable=[1, 2, 3, 4])))
    )
    with fits.open(store.root / outcome.fits_key) as mosaic:
        history = str(mosaic[0].header["HISTORY"])
        data = mosaic[0].data
    assert "HDUs 1,2,3,4" in history
    # The weight map (all 1.0, on the centre) stayed out: the centre is a gap.
    ny, nx = data.shape
    assert np.isnan(data[ny // 2, nx // 2])
    processor.close()


async def test_failure_leaves_nothing_under_the_prefix(store: LocalStore | S3Store, tmp_path: Path) -> None:
    path, _ = paw_print(tmp_path / "paw.fits", chip=120)
    key = await stage(store, path.read_bytes())
    before = await keys(store)
    # SWarp that cannot run: the job fails after original.fits is written.
    processor = Processor(settings(tmp_path, swarp_bin=str(tmp_path / "no-such-swarp")), store)
    from services.processor.processing import job_from_request

    with pytest.raises(ServiceError) as info:
        await processor.process(job_from_request(request(key, report_for(path))))
    assert info.value.code == "PROCESSING_FAILED"
    assert "SWarp" in info.value.message
    assert await keys(store) == before
    assert not list((tmp_path / "scratch").iterdir())  # the scratch folder is cleaned too
    processor.close()


async def test_a_broken_upload_fails_cleanly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key = await stage(store, b"SIMPLE  = T" + b" " * 100)
    processor = Processor(settings(tmp_path), store)
    from services.processor.processing import job_from_request

    with pytest.raises(ServiceError) as info:
        await processor.process(job_from_request(request(key, validator_pb2.ValidationReport(ok=True))))
    assert info.value.code == "PROCESSING_FAILED"
    assert [k async for k in store.list(PREFIX)] == []
    processor.close()


async def test_process_over_grpc_with_the_service_token(single: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key = await stage(store, single.read_bytes())
    cfg = settings(tmp_path)
    processor = Processor(cfg, store)
    grpc_server = GrpcServer("127.0.0.1", 0, TOKEN)
    server.add_to(grpc_server, processor)
    await grpc_server.start()
    try:
        async with channel(f"127.0.0.1:{grpc_server.port}", TOKEN) as ch:
            stub = processor_pb2_grpc.ProcessorServiceStub(ch)
            response = await call(stub.Process, request(key, report_for(single)), timeout=120)
        assert response.fits_key == PREFIX + "original.fits"
        assert response.hips_prefix == PREFIX + "hips/"
        assert response.hips_order == 10
        assert response.pixel_cut.low < response.pixel_cut.high
        assert response.tile_count > 0
        assert response.stored_bytes == sum([info.size async for info in store.list(PREFIX)])
        assert (store.root / response.preview_key).exists()
        # A bad request is INVALID_ARGUMENT, a failing job PROCESSING_FAILED; no token: refused.
        async with channel(f"127.0.0.1:{grpc_server.port}", TOKEN) as ch:
            stub = processor_pb2_grpc.ProcessorServiceStub(ch)
            bad = processor_pb2.ProcessRequest(source_key="../etc/passwd", output_prefix="x/")
            with pytest.raises(ServiceError) as info:
                await call(stub.Process, bad)
            assert info.value.code == "INVALID_ARGUMENT"
            missing = request("staging/none", report_for(single))
            missing.output_prefix = "content/other/g1/"
            with pytest.raises(ServiceError) as info:
                await call(stub.Process, missing)
            assert info.value.code == "PROCESSING_FAILED"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as ch:
            stub = processor_pb2_grpc.ProcessorServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as rpc_error:
                await stub.Process(request(key, report_for(single)))
            assert rpc_error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await grpc_server.stop(0)
        processor.close()


async def test_a_cancelled_job_leaves_nothing_behind(tmp_path: Path) -> None:
    shape = (1500, 1500)
    path = write_sky(tmp_path / "big.fits", tan_wcs(RA, DEC, 0.2, shape), shape)
    store = LocalStore(tmp_path / "store")
    key = await stage(store, path.read_bytes())
    processor = Processor(settings(tmp_path), store)
    from services.processor.processing import job_from_request

    cancelled = 0
    for delay in (0.02, 0.1, 0.2, 0.3, 0.5, 0.8):
        task = asyncio.create_task(processor.process(job_from_request(request(key, report_for(path)))))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
            assert [info.key async for info in store.list(PREFIX)] == [], delay
        else:  # finished before the cancel: a complete result, removed for the next round
            await store.delete_prefix(PREFIX)
    assert cancelled >= 3
    processor.close()
