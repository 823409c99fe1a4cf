"""Every queue is bounded and slow bodies are cut (issue 11), over real HTTP against
the suite's processes:

- a body that trickles (1 byte every 3 s) or stalls answers 408 REQUEST_TIMEOUT and
  is closed well within 45 s, holding no temp file or staging object, while a real
  slow link (1 MB/s) goes through;
- uploads are bounded per user (429 TOO_MANY_UPLOADS) and in all (503 BUSY), both
  with Retry-After, on the native API and the p2api face;
- the validator's and the processor's queues are bounded: one call more answers
  BUSY, which the gateway turns into 503 with Retry-After.

Nothing is stored for a refused request. Suites of their own, with their limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.devrun import Suite
from services.shared.settings import GatewaySettings
from tests.fitsgen import streamed_tan_header
from tests.gateway.harness import Gateway, field, gateway_env, new_ob, new_user, paw_print

TARGET = (150.0, 2.0)
DEFAULTS = GatewaySettings()
TRICKLERS = 40


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        yield session


def temp_files(gateway: Gateway) -> list[str]:
    return os.listdir(Path(gateway.suite.env["STORE_DIR"]) / ".tmp")


async def left_behind(gateway: Gateway) -> tuple[list[str], list[str]]:
    """Staging objects and temp files in the store (none once every request is answered)."""
    staging = [k for k in await gateway.store_keys() if k.startswith("staging/")]
    return staging, temp_files(gateway)


async def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def sparse_fits(path: Path, side: int) -> Path:
    """A float32 image of zeros, header first, sparse on disk; its target is (150, 2)."""
    head = streamed_tan_header(side)
    data = side * side * 4
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + data + (-data % 2880))
    return path


class RawUpload:
    """An upload on a socket of its own, sent by the test at its own pace."""

    def __init__(self, gateway: Gateway, user: str, length: int) -> None:
        self.gateway, self.user, self.length = gateway, user, length
        self.status = 0
        self.body: dict[str, Any] = {}
        self.headers: dict[str, str] = {}
        self.answered_s = self.closed_s = -1.0

    async def run(self, send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
        url = urlsplit(self.gateway.url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        query = f"run_id=p2:60.A-0000(A)&target_ra={TARGET[0]}&target_dec={TARGET[1]}"
        writer.write(
            (
                f"POST /api/v1/obs/{new_ob()}/background-images?{query} HTTP/1.1\r\n"
                f"Host: {url.netloc}\r\nAuthorization: Bearer {self.gateway.token(self.user)}\r\n"
                f"Content-Type: application/fits\r\nContent-Length: {self.length}\r\n\r\n"
            ).encode()
        )
        t0 = time.monotonic()

        async def sending() -> None:
            with contextlib.suppress(OSError):
                await send(writer)

        sender = asyncio.create_task(sending())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            self.answered_s = time.monotonic() - t0
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            self.body = json.loads(await reader.readexactly(int(self.headers["content-length"])))
            with contextlib.suppress(OSError):
                while await asyncio.wait_for(reader.read(1 << 16), 120):
                    pass
            self.closed_s = time.monotonic() - t0
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            writer.close()


# ---- slow bodies --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paced(suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    """The body limits and upload bounds at their defaults; uploads up to 128 MB."""
    env = {**gateway_env(tmp_path_factory.mktemp("paced")), "MAX_UPLOAD_BYTES": str(128 << 20)}
    return Gateway(suite_factory(env))


async def test_slow_bodies_are_cut_and_a_slow_link_passes(
    paced: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = paced
    owner = new_user()
    run = gw.new_run(owner)
    before = (await gw.store_keys(), await gw.image_rows())

    # A real slow link: 1 MB/s for a 64 MB file, more than two rate windows long.
    slow_link = sparse_fits(tmp_path / "slow-link.fits", 4096)
    size = slow_link.stat().st_size
    rate = 1 << 20

    async def at_one_megabyte_per_second() -> AsyncIterator[bytes]:
        t0 = time.monotonic()
        sent = 0
        with slow_link.open("rb") as f:
            while block := f.read(64 << 10):
                yield block
                sent += len(block)
                await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))

    async def slow_link_upload() -> tuple[int, Any, float]:
        t0 = time.monotonic()
        async with http.post(
            f"{gw.url}/api/v1/obs/{new_ob()}/background-images",
            # The target is outside the image: the validator refuses it once it is all in.
            params={"run_id": run, "target_ra": "10", "target_dec": "-60"},
            data=at_one_megabyte_per_second(),
            headers={**gw.auth(owner), "Content-Type": "application/fits", "Content-Length": str(size)},
        ) as resp:
            return resp.status, await resp.json(content_type=None), time.monotonic() - t0

    async def one_byte_every_3_s(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(b"\0")
            await writer.drain()
            await asyncio.sleep(3)

    async def some_then_nothing(writer: asyncio.StreamWriter) -> None:
        writer.write(b"\0" * (64 << 10))
        await writer.drain()
        await asyncio.sleep(3600)

    link = asyncio.create_task(slow_link_upload())
    await wait_until(lambda: len(temp_files(gw)) == 1)
    staller = RawUpload(gw, new_user(), 1 << 20)
    stalled = asyncio.create_task(staller.run(some_then_nothing))
    await wait_until(lambda: len(temp_files(gw)) == 2)
    tricklers = [RawUpload(gw, new_user(), 1 << 20) for _ in range(TRICKLERS)]
    trickling = [asyncio.create_task(t.run(one_byte_every_3_s)) for t in tricklers]
    await asyncio.sleep(10)
    held = len(temp_files(gw))  # the uploads in progress hold one temp file each, no more
    await asyncio.gather(stalled, *trickling)
    status, body, link_s = await link

    print(f"\nslow link: {size / 2**20:.0f} MiB at 1 MiB/s in {link_s:.1f} s -> {status} {body['code']}")
    print(
        f"staller: {staller.status} {staller.body['code']} at {staller.answered_s:.1f} s, closed at "
        f"{staller.closed_s:.1f} s"
    )
    cut = [t for t in tricklers if t.status == 408]
    refused = [t for t in tricklers if t.status == 503]
    print(
        f"{TRICKLERS} at 1 byte/3 s: {len(cut)} cut (408) at {min(t.answered_s for t in cut):.1f}-"
        f"{max(t.answered_s for t in cut):.1f} s, closed by {max(t.closed_s for t in cut):.1f} s; "
        f"{len(refused)} refused (503) at once; {held} temp files held at 10 s"
    )

    assert status == 422 and body["code"] == "TARGET_OUTSIDE_FIELD", body  # every byte arrived
    assert link_s >= size / rate - 1
    assert staller.status == 408 and staller.body["code"] == "REQUEST_TIMEOUT", staller.body
    assert "nothing" in staller.body["detail"]
    assert DEFAULTS.body_idle_timeout_s <= staller.answered_s < DEFAULTS.body_idle_timeout_s + 10
    assert held <= DEFAULTS.max_uploads
    # Two slots are held by the slow link and the staller; the tricklers get the rest.
    assert len(cut) == DEFAULTS.max_uploads - 2 and len(cut) + len(refused) == TRICKLERS
    for t in cut:
        assert t.body["code"] == "REQUEST_TIMEOUT" and "bytes/s" in t.body["detail"], t.body
        assert t.closed_s < 45, t.closed_s
    for t in refused:
        assert t.body["code"] == "BUSY" and t.headers["retry-after"] == str(DEFAULTS.upload_retry_after_s)
        assert t.answered_s < 5
    assert (await gw.store_keys(), await gw.image_rows()) == before
    assert await left_behind(gw) == ([], [])


# ---- bounded uploads and queues -------------------------------------------------------------------


RETRY_UPLOAD, RETRY_VALIDATOR, RETRY_PROCESSOR = 7, 9, 11
SWARP_DELAY_S = 6


@pytest.fixture(scope="module")
def bounded(suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    """One upload per user, two in all; one validation and one job at a time, none waiting;
    a SWarp that takes its time."""
    folder = tmp_path_factory.mktemp("bounded")
    slow_swarp = folder / "slow-swarp"
    slow_swarp.write_text(
        f'#!/bin/sh\ncase "$1" in -v) ;; *) sleep {SWARP_DELAY_S} ;; esac\nexec SWarp "$@"\n'
    )
    slow_swarp.chmod(slow_swarp.stat().st_mode | stat.S_IXUSR)
    env = {
        **gateway_env(folder),
        "MAX_UPLOADS_PER_USER": "1",
        "MAX_UPLOADS": "2",
        "UPLOAD_RETRY_AFTER_S": str(RETRY_UPLOAD),
        "VALIDATOR_MAX_CONCURRENT": "1",
        "VALIDATOR_MAX_QUEUED": "0",
        "VALIDATOR_RETRY_AFTER_S": str(RETRY_VALIDATOR),
        "PROCESSOR_MAX_JOBS": "1",
        "PROCESSOR_MAX_QUEUED": "0",
        "PROCESSOR_RETRY_AFTER_S": str(RETRY_PROCESSOR),
        "SWARP_BIN": str(slow_swarp),
    }
    return Gateway(suite_factory(env))


def multipart_body(path: Path, fields: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/fits")
    return form


async def test_uploads_are_bounded_per_user_and_in_all(
    bounded: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = bounded
    alice, bob, carol = new_user(), new_user(), new_user()
    runs = {user: gw.new_run(user) for user in (alice, bob, carol)}
    before = (await gw.store_keys(), await gw.image_rows())
    releases = {alice: asyncio.Event(), bob: asyncio.Event()}

    async def held(user: str, path: Path) -> tuple[int, Any]:
        data = path.read_bytes()
        release = releases[user]

        async def body() -> AsyncIterator[bytes]:
            yield data[: len(data) // 2]
            await release.wait()
            yield data[len(data) // 2 :]

        async with http.post(
            f"{gw.url}/api/v1/obs/{new_ob()}/background-images",
            params={"run_id": runs[user], "target_ra": "150", "target_dec": "2"},
            data=body(),
            headers={**gw.auth(user), "Content-Type": "application/fits"},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    first = asyncio.create_task(held(alice, field(tmp_path, "alice.fits")))
    await wait_until(lambda: len(temp_files(gw)) == 1)

    # Alice's second upload, while her first is in progress: 429, nothing read or stored.
    form = {"run_id": runs[alice], "target_ra": "150", "target_dec": "2"}
    async with http.post(
        f"{gw.url}/api/v1/obs/{new_ob()}/background-images",
        data=multipart_body(field(tmp_path, "alice-2.fits"), form),
        headers=gw.auth(alice),
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 429 and body["code"] == "TOO_MANY_UPLOADS", body
        assert resp.headers["Retry-After"] == str(RETRY_UPLOAD)
        assert resp.content_type == "application/problem+json"

    second = asyncio.create_task(held(bob, field(tmp_path, "bob.fits")))
    await wait_until(lambda: len(temp_files(gw)) == 2)

    # Two in progress, the gateway's bound: Carol gets 503 with Retry-After, on both faces.
    form = {"run_id": runs[carol], "target_ra": "150", "target_dec": "2"}
    async with http.post(
        f"{gw.url}/api/v1/obs/{new_ob()}/background-images",
        data=multipart_body(field(tmp_path, "carol.fits"), form),
        headers=gw.auth(carol),
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 503 and body["code"] == "BUSY", body
        assert resp.headers["Retry-After"] == str(RETRY_UPLOAD)
    # p2api puts url, access_token and mode in the file part's headers; aiohttp cannot, so
    # the same as fields before the file (the face reads both).
    p2api_form = aiohttp.FormData()
    for key, value in {"mode": "upload_bkg_image", "url": "https://p2.invalid/obsBlocks/1"}.items():
        p2api_form.add_field(key, value)
    p2api_form.add_field(
        "bkg_image_fits_file",
        field(tmp_path, "carol-p2.fits").read_bytes(),
        filename="carol-p2.fits",
        content_type="application/fits",
    )
    async with http.post(f"{gw.url}/p2fc//", data=p2api_form) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 503 and body["code"] == "BUSY", body
        assert resp.content_type == "application/json" and body["error"]
        assert resp.headers["Retry-After"] == str(RETRY_UPLOAD)

    # One after the other (this suite validates one file at a time, with no queue).
    for user, task in ((alice, first), (bob, second)):
        releases[user].set()
        status, body = await task
        assert status == 201, body
    # Only the two accepted uploads changed anything.
    assert await gw.image_rows() == before[1] + 2
    assert await left_behind(gw) == ([], [])
    # Their places are free again.
    resp, body = await gw.upload(http, field(tmp_path, "alice-3.fits"), new_ob(), runs[alice], TARGET, alice)
    assert resp.status == 201, body


def gzipped_zeros(path: Path, side: int) -> Path:
    """A gzip FITS of zeros: small to send, slow to validate (the validator reads it all)."""
    head = streamed_tan_header(side)
    data = side * side * 4
    data += -data % 2880
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    block = bytes(16 << 20)
    with path.open("wb") as f:
        f.write(packer.compress(head))
        while data:
            f.write(packer.compress(block[: min(data, len(block))]))
            data -= min(data, len(block))
        f.write(packer.flush())
    return path


async def refused_while(
    busy: asyncio.Task[Any], attempt: Callable[[int], Awaitable[tuple[int, dict[str, str], Any]]]
) -> tuple[list[tuple[int, dict[str, str], Any]], int]:
    """Tries `attempt` again and again while `busy` runs; the answers, and how many were 201."""
    answers = []
    n = 0
    while not busy.done():
        answers.append(await attempt(n))
        n += 1
        if answers[-1][0] == 503:
            break
        await asyncio.sleep(0.2)
    return answers, sum(1 for a in answers if a[0] == 201)


async def test_a_full_validator_queue_answers_503_with_retry_after(
    bounded: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = bounded
    slow, quick = new_user(), new_user()
    slow_run, quick_run = gw.new_run(slow), gw.new_run(quick)
    before = await gw.image_rows()
    # 780 MB of zeros in 800 kB: seconds of validation; its target is outside, so it ends there.
    big = gzipped_zeros(tmp_path / "zeros.fits.gz", 14000)
    validating = asyncio.create_task(gw.upload(http, big, new_ob(), slow_run, (10.0, -60.0), slow))
    await asyncio.sleep(0.5)

    async def attempt(n: int) -> tuple[int, dict[str, str], Any]:
        resp, body = await gw.upload(http, field(tmp_path, f"q{n}.fits"), new_ob(), quick_run, TARGET, quick)
        return resp.status, dict(resp.headers), body

    answers, stored = await refused_while(validating, attempt)
    resp, body = await validating
    assert resp.status == 422 and body["code"] == "TARGET_OUTSIDE_FIELD", body
    status, headers, body = answers[-1]
    assert status == 503 and body["code"] == "BUSY", answers
    assert headers["Retry-After"] == str(RETRY_VALIDATOR)
    assert "validator" in body["detail"]
    assert await gw.image_rows() == before + stored
    assert await left_behind(gw) == ([], [])


async def test_a_full_processor_queue_answers_503_with_retry_after(
    bounded: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = bounded
    mosaic, quick = new_user(), new_user()
    mosaic_run, quick_run = gw.new_run(mosaic), gw.new_run(quick)
    before = await gw.image_rows()
    # A paw print needs SWarp, which takes SWARP_DELAY_S here: the processor's one job.
    processing = asyncio.create_task(
        gw.upload(http, paw_print(tmp_path), new_ob(), mosaic_run, (150.02, 2.0), mosaic)
    )
    await asyncio.sleep(1.0)

    async def attempt(n: int) -> tuple[int, dict[str, str], Any]:
        resp, body = await gw.upload(http, field(tmp_path, f"p{n}.fits"), new_ob(), quick_run, TARGET, quick)
        return resp.status, dict(resp.headers), body

    answers, stored = await refused_while(processing, attempt)
    resp, body = await processing
    assert resp.status == 201, body
    status, headers, body = answers[-1]
    assert status == 503 and body["code"] == "BUSY", answers
    assert headers["Retry-After"] == str(RETRY_PROCESSOR)
    assert "processor" in body["detail"]
    assert await gw.image_rows() == before + 1 + stored
    assert await left_behind(gw) == ([], [])
