"""The gRPC face: a real server on port 0, a real channel, the service credential, status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from bgimages.common.v1 import common_pb2
from bgimages.validator.v1 import validator_pb2, validator_pb2_grpc
from services.shared.errors import ServiceError
from services.shared.fits_header import Limits
from services.shared.grpc_client import call, channel
from services.shared.grpc_edge import GrpcServer
from services.shared.store import LocalStore, ObjectMissing, S3Store
from services.validator.server import add_to
from tests.fitsgen import write_image
from tests.validator import instruments

TOKEN = "validator-test-token"


@pytest.fixture
async def server(store: LocalStore | S3Store) -> AsyncIterator[tuple[str, LocalStore | S3Store]]:
    srv = GrpcServer("127.0.0.1", 0, TOKEN)
    add_to(srv, store, Limits())
    await srv.start()
    try:
        yield f"127.0.0.1:{srv.port}", store
    finally:
        await srv.stop(0)


def request(
    key: str, ra: float, dec: float, boa: tuple[float, float] | None = None
) -> validator_pb2.ValidateRequest:
    ob = common_pb2.ObContext(
        ob_id=7, run_id="p2:60.A-9252(A)", target=common_pb2.SkyPosition(ra_deg=ra, dec_deg=dec)
    )
    if boa is not None:
        ob.boa_star.CopyFrom(common_pb2.SkyPosition(ra_deg=boa[0], dec_deg=boa[1]))
    return validator_pb2.ValidateRequest(object_key=key, ob=ob)


async def test_validate_over_a_channel(server: tuple[str, LocalStore | S3Store], tmp_path: Path) -> None:
    addr, store = server
    path = instruments.hawki_pawprint(tmp_path / "hawki.fits")
    await store.put_file("staging/abc", path)
    centres = instruments.hawki_chip_centres()
    async with channel(addr, TOKEN) as ch:
        stub = validator_pb2_grpc.ValidatorServiceStub(ch)
        ok = await call(stub.Validate, request("staging/abc", *centres[3], boa=centres[2]))
        report = ok.report
        assert report.ok, report.errors
        assert report.filter == "NB2090" and report.filter_source == "ESO INS FILT2 NAME"
        assert report.compression == validator_pb2.COMPRESSION_NONE
        assert report.object_name == "NGC 1234"
        assert [h.index for h in report.hdus] == [0, 1, 2, 3, 4]
        assert [h.displayable for h in report.hdus] == [False, True, True, True, True]
        chip3 = report.hdus[3]
        assert chip3.extname == "CHIP3.INT1" and list(chip3.shape) == [256, 256]
        assert chip3.contains_target and not report.hdus[2].contains_target
        assert report.hdus[2].contains_boa and report.hdus[2].HasField("contains_boa")
        assert not report.hdus[0].HasField("contains_target")
        assert len(chip3.footprint) == 4
        assert chip3.pixel_scale_arcsec == pytest.approx(instruments.HAWKI_SCALE, rel=1e-6)

        # A bad file is a normal answer.
        gap = await call(stub.Validate, request("staging/abc", 150.0, -30.0))
        assert not gap.report.ok
        assert [e.code for e in gap.report.errors] == [common_pb2.TARGET_IN_CHIP_GAP]
        assert not gap.report.errors[0].HasField("hdu")


async def test_wrong_requests_are_grpc_errors(
    server: tuple[str, LocalStore | S3Store], tmp_path: Path
) -> None:
    addr, store = server
    await store.put_file("staging/one", write_image(tmp_path / "one.fits"))
    async with channel(addr, TOKEN) as ch:
        stub = validator_pb2_grpc.ValidatorServiceStub(ch)
        with pytest.raises(ServiceError) as err:
            await call(stub.Validate, request("staging/nothing-here", 150.0, 2.0))
        assert err.value.code == "NOT_FOUND"
        for ra, dec in ((float("nan"), 2.0), (150.0, 91.0), (150.0, float("inf"))):
            with pytest.raises(ServiceError) as err:
                await call(stub.Validate, request("staging/one", ra, dec))
            assert err.value.code == "INVALID_ARGUMENT"
        with pytest.raises(ServiceError) as err:
            await call(stub.Validate, request("staging/one", 150.0, 2.0, boa=(150.0, -95.0)))
        assert err.value.code == "INVALID_ARGUMENT" and "boa" in err.value.message
        with pytest.raises(ServiceError) as err:
            await call(stub.Validate, request("../etc/passwd", 150.0, 2.0))
        assert err.value.code == "INVALID_ARGUMENT"
        # Raw gRPC status, as any client sees it.
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await stub.Validate(request("staging/nothing-here", 150.0, 2.0))
        assert raw.value.code() == grpc.StatusCode.NOT_FOUND


async def test_call_without_the_token_is_refused(
    server: tuple[str, LocalStore | S3Store], tmp_path: Path
) -> None:
    addr, store = server
    await store.put_file("staging/one", write_image(tmp_path / "one.fits"))
    for bad in (None, "wrong-token"):
        ch = grpc.aio.insecure_channel(addr) if bad is None else channel(addr, bad)
        async with ch:
            stub = validator_pb2_grpc.ValidatorServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as raw:
                await stub.Validate(request("staging/one", 150.0, 2.0))
            assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_follows_the_store(tmp_path: Path) -> None:
    import asyncio
    import contextlib
    import shutil

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.shared.grpc_edge import follow_health
    from services.validator.server import SERVICE_NAME

    store = LocalStore(tmp_path / "store")
    srv = GrpcServer("127.0.0.1", 0, TOKEN)
    add_to(srv, store, Limits())
    await srv.start()
    watcher = asyncio.create_task(follow_health(srv, store.ping, 0.05, "object store"))

    async def status() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            )
            return int(resp.status)

    async def wait_for(expected: int) -> None:
        for _ in range(100):
            if await status() == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"health never became {expected}")

    try:
        assert await status() == health_pb2.HealthCheckResponse.SERVING
        shutil.rmtree(tmp_path / "store")
        await wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        (tmp_path / "store").mkdir()
        await wait_for(health_pb2.HealthCheckResponse.SERVING)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await srv.stop(0)


async def test_compressed_objects_from_the_store(store: LocalStore | S3Store, tmp_path: Path) -> None:
    """gzip, .Z and fpack objects read from either store, through the same ranged reader the service uses."""
    import asyncio

    from services.validator import Target, validate_object

    plain = instruments.hawki_pawprint(tmp_path / "h.fits")
    variants = {
        "gzip": instruments.gzipped(plain),
        "compress": instruments.unix_compressed(plain),
        "none": instruments.fpacked(plain, tmp_path / "h.fits.fz"),
    }
    centre = instruments.hawki_chip_centres()[4]
    for compression, path in variants.items():
        key = f"staging/{compression}"
        await store.put_file(key, path)
        report = await asyncio.to_thread(validate_object, store, key, Target(centre))
        assert report.ok, report.errors
        assert report.compression == compression
        assert [h.index for h in report.hdus if h.contains_target] == [4]
        assert all(h.tile_compressed for h in report.hdus[1:]) == (path.suffix == ".fz")


async def test_ranged_reads_fetch_little(s3_endpoint: str, tmp_path: Path) -> None:
    """On S3, the header walk of a 16 MB MEF fetches one 64 KB range per HDU (and one for the target's
    pixels): a few percent of the file, where 1 MB blocks would have fetched a third of it."""
    import asyncio

    from astropy.io import fits

    from services.validator import Target, validate_object
    from tests.conftest import make_s3_store

    s3 = make_s3_store(s3_endpoint)
    exts = [instruments.sky_ext(150.0 + 0.3 * i, 2.0, size=1024) for i in range(4)]
    path = instruments.mef(tmp_path / "mef.fits", exts, fits.Header({"FILTER": "R"}))
    await s3.put_file("staging/mef", path)
    fetched: list[int] = []
    real_get = s3.client.get_object

    def counting_get(*args: object, **kwargs: object) -> object:
        fetched.append(int(kwargs.get("length") or 0))  # type: ignore[call-overload]
        return real_get(*args, **kwargs)  # type: ignore[arg-type]

    s3.client.get_object = counting_get  # type: ignore[method-assign,assignment]
    report = await asyncio.to_thread(validate_object, s3, "staging/mef", Target((150.3, 2.0)))
    assert report.ok, report.errors
    assert len(fetched) == 6 and sum(fetched) <= 6 * (64 << 10), fetched
    with pytest.raises(ObjectMissing) as err:
        validate_object(s3, "staging/none", Target((150.3, 2.0)))
    assert err.value.code == "NOT_FOUND"


async def test_concurrent_calls_share_the_slots(tmp_path: Path) -> None:
    """More calls than slots: each waits its turn and every answer is right."""
    import asyncio

    store = LocalStore(tmp_path / "store")
    srv = GrpcServer("127.0.0.1", 0, TOKEN)
    servicer = add_to(srv, store, Limits(), max_concurrent=2)
    await srv.start()
    try:
        path = instruments.hawki_pawprint(tmp_path / "h.fits")
        gz = instruments.gzipped(path)
        await store.put_file("staging/plain", path)
        await store.put_file("staging/gz", gz)
        centres = instruments.hawki_chip_centres()
        async with channel(f"127.0.0.1:{srv.port}", TOKEN) as ch:
            stub = validator_pb2_grpc.ValidatorServiceStub(ch)
            calls = [
                call(stub.Validate, request(f"staging/{'gz' if i % 2 else 'plain'}", *centres[1 + i % 4]))
                for i in range(12)
            ]
            answers = await asyncio.gather(*calls)
        for i, answer in enumerate(answers):
            assert answer.report.ok
            assert [h.index for h in answer.report.hdus if h.contains_target] == [1 + i % 4]
        assert servicer.admission.inside == 0  # every turn given back
    finally:
        await srv.stop(0)
