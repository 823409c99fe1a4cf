"""Resumable uploads (tus 1.0) against the running suite: a connection cut at 60 % is resumed
and the stored image is the file; uploads are their creator's alone; a mismatched offset, a
PATCH past Upload-Length, an expired or terminated upload answer with their codes and leave
nothing behind (the consistency checker agrees); a gateway restarted half way hashes again."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from bgimages_client import BackgroundImages, BgImagesError

from services.devrun import Suite
from tests.conftest import S3_KEYS
from tests.gateway import harness
from tests.gateway.harness import CuttingProxy, Gateway, big_file, field, new_ob, new_user

TARGET = (150.0, 2.0)
TUS = {"Tus-Resumable": "1.0.0"}


def _client(url: str, gateway: Gateway, user: str) -> BackgroundImages:
    return BackgroundImages(url, gateway.token(user))


async def test_a_cut_connection_is_resumed_and_the_stored_image_is_the_file(
    suite: Suite, tmp_path: Path
) -> None:
    gateway = Gateway(suite)  # uploads up to 4 GB
    owner = new_user()
    run = gateway.new_run(owner)
    path = big_file(tmp_path, 200)
    size = path.stat().st_size
    seen: list[int] = []
    async with CuttingProxy(gateway.url, int(size * 0.6)) as proxy:
        api = _client(proxy.url, gateway, owner)
        image = await asyncio.to_thread(
            api.upload_resumable,
            path,
            new_ob(),
            run,
            TARGET,
            progress=lambda sent, total: seen.append(sent),
            resume_file=tmp_path / "resume.json",
        )
    assert proxy.cut, "the proxy never cut the connection"
    assert image.fits_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image.file_name == "big.fits" and image.file_bytes == size
    # It resumed: the bytes sent in all are the file and what was in flight when cut, not twice the file.
    assert seen[-1] == size and len(seen) > 2
    assert not (tmp_path / "resume.json").exists() or "big" not in (tmp_path / "resume.json").read_text()
    gateway.sweep_and_check()


async def _tus(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], data: bytes = b""
) -> tuple[int, Any, Any]:
    async with http.request(method, url, headers={**TUS, **headers}, data=data or None) as resp:
        body = await resp.json(content_type=None) if resp.status >= 400 and method != "HEAD" else None
        return resp.status, resp.headers, body


async def create(http: aiohttp.ClientSession, gateway: Gateway, user: str, run: str, length: int) -> str:
    params = f"run_id={run}&target_ra=150.0&target_dec=2.0"
    status, headers, body = await _tus(
        http,
        "POST",
        f"{gateway.url}/api/v1/obs/{new_ob()}/uploads?{params}",
        {**gateway.auth(user), "Upload-Length": str(length), "Upload-Metadata": "filename YS5maXRz"},
    )
    assert status == 201, body
    assert headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in headers
    return f"{gateway.url}{headers['Location']}"


def patch_headers(gateway: Gateway, user: str, offset: int) -> dict[str, str]:
    return {
        **gateway.auth(user),
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }


@pytest.fixture()
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_uploads_are_their_creators_and_refuse_what_is_wrong(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner, stranger = new_user(), new_user()
    run = gateway.new_run(owner)
    data = field(tmp_path, "a.fits").read_bytes()
    async with http.options(f"{gateway.url}/api/v1/uploads") as resp:
        assert resp.status == 204 and resp.headers["Tus-Version"] == "1.0.0"
        assert set(resp.headers["Tus-Extension"].split(",")) == {"creation", "expiration", "termination"}
        assert int(resp.headers["Tus-Max-Size"]) == harness.MAX_UPLOAD
    url = await create(http, gateway, owner, run, len(data))
    status, headers, _ = await _tus(http, "HEAD", url, gateway.auth(owner))
    assert (status, headers["Upload-Offset"], headers["Upload-Length"]) == (200, "0", str(len(data)))
    assert headers["Cache-Control"] == "no-store"
    for method in ("HEAD", "PATCH", "DELETE"):
        status, _, _ = await _tus(http, method, url, patch_headers(gateway, stranger, 0), data[:10])
        assert status == 404, method  # not told it exists

    status, headers, _ = await _tus(http, "PATCH", url, patch_headers(gateway, owner, 0), data[:5000])
    assert (status, headers["Upload-Offset"]) == (204, "5000")
    status, _, problem = await _tus(http, "PATCH", url, patch_headers(gateway, owner, 4000), data[4000:6000])
    assert (status, problem["code"]) == (409, "UPLOAD_OFFSET_MISMATCH") and problem["offset"] == 5000
    status, _, problem = await _tus(
        http, "PATCH", url, patch_headers(gateway, owner, 5000), data[5000:] + b"x"
    )
    assert (status, problem["code"]) == (413, "TOO_LARGE")
    status, _, problem = await _tus(
        http, "PATCH", url, {**patch_headers(gateway, owner, 5000), "Tus-Resumable": "0.2.2"}, data[5000:]
    )
    assert status == 412 and problem["code"] == "TUS_VERSION_UNSUPPORTED"
    status, headers, _ = await _tus(http, "HEAD", url, gateway.auth(owner))
    assert headers["Upload-Offset"] == "5000"  # nothing of the refused PATCHes was kept

    async with http.patch(
        url, data=data[5000:], headers={**patch_headers(gateway, owner, 5000), **TUS}
    ) as resp:
        assert resp.status == 201, await resp.text()
        image = await resp.json()
        assert resp.headers["Upload-Offset"] == str(len(data))
    assert image["fits_hash"] == hashlib.sha256(data).hexdigest() and image["file_name"] == "a.fits"
    status, _, _ = await _tus(http, "HEAD", url, gateway.auth(owner))
    assert status == 404  # complete: the upload is gone, the image is there
    gateway.sweep_and_check()


async def test_a_refused_file_and_a_terminated_upload_leave_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    keys, rows = await gateway.store_keys(), await gateway.image_rows()
    far = field(tmp_path, "far.fits", ra=10.0, dec=10.0).read_bytes()
    url = await create(http, gateway, owner, run, len(far))
    status, _, problem = await _tus(http, "PATCH", url, patch_headers(gateway, owner, 0), far)
    assert (status, problem["code"]) == (422, "TARGET_OUTSIDE_FIELD")
    assert (await _tus(http, "HEAD", url, gateway.auth(owner)))[0] == 404

    url = await create(http, gateway, owner, run, len(far))
    assert (await _tus(http, "PATCH", url, patch_headers(gateway, owner, 0), far[:3000]))[0] == 204
    assert len(await gateway.store_keys()) == len(keys) + 1  # staged, held
    assert (await _tus(http, "DELETE", url, gateway.auth(owner)))[0] == 204
    assert (await _tus(http, "HEAD", url, gateway.auth(owner)))[0] == 404
    assert (await gateway.store_keys(), await gateway.image_rows()) == (keys, rows)
    gateway.sweep_and_check()


async def test_an_expired_upload_answers_gone_and_the_sweep_removes_it(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    keys = await gateway.store_keys()
    data = field(tmp_path, "e.fits").read_bytes()
    url = await create(http, gateway, owner, run, len(data))
    assert (await _tus(http, "PATCH", url, patch_headers(gateway, owner, 0), data[:3000]))[0] == 204
    gateway.sweep_and_check()  # held while alive: the sweep leaves it
    assert len(await gateway.store_keys()) == len(keys) + 1
    # Left idle past RESUMABLE_TTL_S (the clock moved on: its expiry set in the past).
    conn = await asyncpg.connect(gateway.suite.env["DATABASE_URL"])
    try:
        await conn.execute("UPDATE resumable_uploads SET expires_at = now() - interval '1 second'")
    finally:
        await conn.close()
    status, _, problem = await _tus(http, "PATCH", url, patch_headers(gateway, owner, 3000), data[3000:])
    assert (status, problem["code"]) == (410, "UPLOAD_EXPIRED")
    gateway.sweep_and_check()
    assert await gateway.store_keys() == keys


async def test_one_patch_at_a_time(gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    data = field(tmp_path, "c.fits").read_bytes()
    url = await create(http, gateway, owner, run, len(data))
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield data[:1000]
        await gate.wait()
        yield data[1000:2000]

    first = asyncio.ensure_future(
        http.patch(
            url, data=slow(), headers={**patch_headers(gateway, owner, 0), **TUS, "Content-Length": "2000"}
        )
    )
    await asyncio.sleep(1.0)
    status, _, problem = await _tus(http, "PATCH", url, patch_headers(gateway, owner, 0), data[:100])
    assert (status, problem["code"]) == (409, "UPLOAD_LOCKED")
    gate.set()
    async with await first as resp:
        assert resp.status == 204 and resp.headers["Upload-Offset"] == "2000"
    assert (await _tus(http, "DELETE", url, gateway.auth(owner)))[0] == 204


@pytest.fixture(scope="module")
def on_s3(
    suite_factory: Callable[..., Suite], s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    """A suite on moto's S3 server, shared by this module's S3 tests."""
    env = harness.gateway_env(tmp_path_factory.mktemp("s3"))
    env.update(S3_KEYS, S3_ENDPOINT=s3_endpoint, S3_BUCKET="tus-" + os.urandom(4).hex())
    env["MAX_UPLOAD_BYTES"] = str(64 << 20)
    return Gateway(suite_factory(env))


async def test_a_gateway_restarted_half_way_hashes_what_is_staged(
    gateway: Gateway, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gw = gateway  # restarted: it serves again before the test ends
    owner = new_user()
    run = gw.new_run(owner)
    data = field(tmp_path, "r.fits", size=512).read_bytes()
    url = await create(http, gw, owner, run, len(data))
    half = len(data) // 2
    assert (await _tus(http, "PATCH", url, patch_headers(gw, owner, 0), data[:half]))[0] == 204
    await asyncio.to_thread(gw.suite.restart, "gateway")
    async with http.patch(url, data=data[half:], headers={**patch_headers(gw, owner, half), **TUS}) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["fits_hash"] == hashlib.sha256(data).hexdigest()
    log = gw.suite.log_path("gateway").read_text()
    assert "hashed again from the store" in log


async def test_on_s3_patches_become_parts(on_s3: Gateway, tmp_path: Path) -> None:
    """S3 cannot append: 8 MiB parts, the tail spooled on the gateway's disk; cut at 60 %."""
    gw = on_s3
    owner = new_user()
    run = gw.new_run(owner)
    path = big_file(tmp_path, 40)
    async with CuttingProxy(gw.url, int(path.stat().st_size * 0.6)) as proxy:
        api = _client(proxy.url, gw, owner)
        image = await asyncio.to_thread(
            api.upload_resumable, path, new_ob(), run, TARGET, resume_file=tmp_path / "r.json"
        )
    assert proxy.cut
    assert image.fits_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(BgImagesError) as err:
        _client(gw.url, gw, owner).upload_resumable(
            big_file(tmp_path, 1, "far.fits"), new_ob(), run, (10.0, 10.0), check_first=False
        )
    assert err.value.code == "TARGET_OUTSIDE_FIELD"


async def test_idle_uploads_hold_no_place_but_are_bounded(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Abandoned uploads do not count against the uploads in progress per user (a PATCH holds
    a place only while its bytes come); RESUMABLE_MAX_PER_USER bounds how many one may keep."""
    owner = new_user()
    run = gateway.new_run(owner)
    data = field(tmp_path, "p.fits").read_bytes()
    limit = int(gateway.suite.env.get("RESUMABLE_MAX_PER_USER", "10"))
    urls = [await create(http, gateway, owner, run, len(data)) for _ in range(limit)]
    for url in urls[:3]:
        assert (await _tus(http, "PATCH", url, patch_headers(gateway, owner, 0), data[:2880]))[0] == 204
    resp, image = await gateway.upload(http, field(tmp_path, "q.fits"), new_ob(), run, TARGET, owner)
    assert resp.status == 201, image
    params = f"run_id={run}&target_ra=150.0&target_dec=2.0"
    status, _, problem = await _tus(
        http,
        "POST",
        f"{gateway.url}/api/v1/obs/{new_ob()}/uploads?{params}",
        {**gateway.auth(owner), "Upload-Length": str(len(data))},
    )
    assert (status, problem["code"]) == (429, "TOO_MANY_UPLOADS")
    for url in urls:
        assert (await _tus(http, "DELETE", url, gateway.auth(owner)))[0] == 204
    gateway.sweep_and_check()


async def test_on_s3_the_tail_short_of_a_part_survives_a_gateway_restart(
    on_s3: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The bytes short of a part are kept in the store when a PATCH ends: a restarted gateway
    (or another replica) resumes from them."""
    gw = on_s3
    owner = new_user()
    run = gw.new_run(owner)
    data = big_file(tmp_path, 12).read_bytes()  # one part and a bit
    url = await create(http, gw, owner, run, len(data))
    first = 3 << 20
    assert (await _tus(http, "PATCH", url, patch_headers(gw, owner, 0), data[:first]))[0] == 204
    await asyncio.to_thread(gw.suite.restart, "gateway")
    status, headers, _ = await _tus(http, "HEAD", url, gw.auth(owner))
    assert (status, headers["Upload-Offset"]) == (200, str(first))
    second = first + (7 << 20)  # past the first part's end: a part, and a new tail
    status, headers, _ = await _tus(http, "PATCH", url, patch_headers(gw, owner, first), data[first:second])
    assert (status, headers["Upload-Offset"]) == (204, str(second))
    gw.sweep_and_check()  # the staging object's tail is held with it
    async with http.patch(
        url, data=data[second:], headers={**patch_headers(gw, owner, second), **TUS}
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["fits_hash"] == hashlib.sha256(data).hexdigest()
    gw.sweep_and_check()


async def test_the_same_call_after_a_failure_resumes_from_the_resume_file(
    suite: Suite, tmp_path: Path
) -> None:
    """The link stays down, the client gives up; run again (after a crash or Ctrl-C, say),
    it finds the upload's URL in its resume file and sends only the rest."""
    gateway = Gateway(suite)
    owner = new_user()
    run = gateway.new_run(owner)
    path = big_file(tmp_path, 64)
    size = path.stat().st_size
    resume = tmp_path / "uploads.json"
    ob = new_ob()
    async with CuttingProxy(gateway.url, int(size * 0.6), stay_down=True) as proxy:
        api = _client(proxy.url, gateway, owner)
        with pytest.raises(BgImagesError) as err:
            await asyncio.to_thread(
                api.upload_resumable, path, ob, run, TARGET, retries=1, resume_file=resume
            )
        assert err.value.code == "UNAVAILABLE" and resume.exists()
        proxy.down = False
        before = proxy.forwarded
        image = await asyncio.to_thread(api.upload_resumable, path, ob, run, TARGET, resume_file=resume)
        resent = proxy.forwarded - before
    assert image.fits_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert resent < 0.5 * size, f"{resent / size:.2f} of the file sent again"
    assert "/api/v1/uploads/" not in resume.read_text()
